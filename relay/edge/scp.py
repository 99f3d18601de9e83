"""The edge's DICOM SCP: accept C-STORE from township modalities into the spool.

Handlers are thin (STYLE.md habit 1): ``handle_requested`` checks the calling AE
against the allow-list (A-ASSOCIATE-RJ "calling AE title not recognised" otherwise);
``handle_store`` checks the disk watermark (0xA700 before writing anything), reads
the routing UIDs, hands the bytes as received to ``Spool.store`` and answers with a
DIMSE status. pynetdicom sends the C-STORE response when the handler returns, so
Success is returned only after the spool has the instance on disk and journaled
(pynetdicom#807). The handlers never raise: an exception would become pynetdicom's
generic 0xC211. A study's first instance also has its header decoded once
(``study_info_from``: modality for the STAT rules, patient name for the local page).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AE,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from relay.config import Settings
from relay.dicom.header import InstanceIds, InvalidInstance, read_ids
from relay.dicom.status import StoreStatus
from relay.dicom.vocab import Priority
from relay.edge.admission import Alarms, AllowList, DiskGuard
from relay.edge.completeness import StudyInfo, StudyPolicy, matching_rule, study_info_from
from relay.edge.spool import Spool

log = logging.getLogger(__name__)

REJECT_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
DIAG_CALLING_AE_NOT_RECOGNIZED = 0x03
"""A-ASSOCIATE-RJ fields (PS3.8 9.3.4): result, source, reason/diagnostic."""

SHUTDOWN_GRACE_S = 10.0
"""Seconds ``stop_scp`` lets running associations finish before aborting them, so
that a C-STORE in progress is answered rather than cut off (the sender retries
anything it got no Success for, so an abort loses nothing)."""

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _request(event: Event) -> C_STORE:
    return cast(C_STORE, event.request)


@dataclass(slots=True)
class StoreContext:
    """What the C-STORE handler needs besides the event, bound in ``start_scp``."""

    spool: Spool
    guard: DiskGuard | None = None
    policy: StudyPolicy = field(default_factory=StudyPolicy)


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.address}:{requestor.port}"


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _invalid_status(exc: InvalidInstance) -> StoreStatus:
    """A parsable dataset lacking a routing UID does not match its SOP class (0xA900);
    bytes that are not a dataset at all cannot be understood (0xC000)."""
    if exc.attribute is not None:
        return StoreStatus.DATASET_MISMATCH
    return StoreStatus.CANNOT_UNDERSTAND


def _mismatch(event: Event, ids: InstanceIds) -> str | None:
    """Why the dataset disagrees with the C-STORE request, or None if it agrees."""
    request = _request(event)
    if ids.sop_uid != str(request.AffectedSOPInstanceUID):
        return "SOPInstanceUID differs from the request's AffectedSOPInstanceUID"
    if ids.sop_class_uid != str(request.AffectedSOPClassUID):
        return "SOPClassUID differs from the request's AffectedSOPClassUID"
    return None


def _refuse(event: Event, status: StoreStatus, reason: str) -> int:
    log.warning(
        "refused C-STORE from %s peer=%s sop=%s status=0x%04X: %s",
        _calling_ae(event), _peer(event), _request(event).AffectedSOPInstanceUID,
        status.value, reason,
    )
    return status.value


def handle_requested(event: Event, allow: AllowList) -> None:
    """EVT_REQUESTED: reject a calling AE (or address) not in the allow-list with
    A-ASSOCIATE-RJ permanent, service user, "calling AE title not recognised"."""
    requestor = event.assoc.requestor
    primitive = requestor.primitive  # the A-ASSOCIATE-RQ; ae_title is set only after acceptance
    calling_ae = str(primitive.calling_ae_title).strip() if primitive is not None else ""
    reason = allow.refusal(calling_ae=calling_ae, address=str(requestor.address))
    if reason is None:
        return
    log.warning("rejected association from ae=%s peer=%s: %s", calling_ae, _peer(event), reason)
    event.assoc.acse.send_reject(REJECT_PERMANENT, SOURCE_SERVICE_USER,
                                 DIAG_CALLING_AE_NOT_RECOGNIZED)
    # As pynetdicom's own rejections do: kill() lets the DUL send the A-ASSOCIATE-RJ
    # before the connection is closed.
    evt.trigger(event.assoc, evt.EVT_REJECTED, {})
    event.assoc.kill()


def handle_store(event: Event, context: StoreContext | Spool) -> int:
    """EVT_C_STORE: spool the instance as received, then answer. Never raises."""
    started = time.perf_counter()
    ctx = context if isinstance(context, StoreContext) else StoreContext(spool=context)
    try:
        return _store(event, ctx, started)
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            if ctx.guard is not None:
                ctx.guard.disk_full(str(exc))
            log.error("spool full, refusing C-STORE from %s: %s", _calling_ae(event), exc)
            return StoreStatus.OUT_OF_RESOURCES.value
        log.exception("C-STORE from %s failed", _calling_ae(event))
        return StoreStatus.PROCESSING_FAILURE.value
    except Exception:
        log.exception("C-STORE failed")
        return StoreStatus.PROCESSING_FAILURE.value


def _priority(event: Event, ctx: StoreContext, *, calling_ae: str,
              info: StudyInfo | None) -> tuple[Priority, str | None]:
    """The instance's priority and, if STAT, why: C-STORE HIGH, then the rules."""
    if Priority.from_dimse(_request(event).Priority) is Priority.STAT:
        return Priority.STAT, "dimse-high"
    rule = matching_rule(ctx.policy.stat_rules, calling_ae=calling_ae,
                         modality=info.modality if info else "")
    return (Priority.STAT, rule) if rule else (Priority.ROUTINE, None)


def _store(event: Event, ctx: StoreContext, started: float) -> int:
    data = event.encoded_dataset()  # Part 10 bytes with file meta; pixels not decoded
    if ctx.guard is not None:
        full = ctx.guard.refusal(len(data))
        if full:
            return _refuse(event, StoreStatus.OUT_OF_RESOURCES, full)
    try:
        ids = read_ids(data)
    except InvalidInstance as exc:
        return _refuse(event, _invalid_status(exc), str(exc))
    mismatch = _mismatch(event, ids)
    if mismatch:
        return _refuse(event, StoreStatus.DATASET_MISMATCH, mismatch)
    calling_ae = _calling_ae(event)
    info = None if ctx.spool.knows_study(ids.study_uid) else study_info_from(data)
    priority, stat_reason = _priority(event, ctx, calling_ae=calling_ae, info=info)
    result = ctx.spool.store(data, ids=ids, priority=priority, calling_ae=calling_ae,
                             peer=_peer(event), study=info, stat_reason=stat_reason)
    log.info(
        "C-STORE %s from=%s peer=%s sop=%s bytes=%d sha256=%s priority=%s ms=%.1f",
        result.outcome.value, calling_ae, _peer(event), ids.sop_uid, result.size,
        result.sha256[:12], priority.value, (time.perf_counter() - started) * 1000,
    )
    return StoreStatus.SUCCESS.value


def handle_conn_open(event: Event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY on the accepted socket, so that a C-STORE response
    (a small PDU) is never held back by Nagle's algorithm while the modality waits."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_echo(event: Event) -> int:
    """EVT_C_ECHO: the modality's connectivity test."""
    log.info("C-ECHO from=%s peer=%s", _calling_ae(event), _peer(event))
    return StoreStatus.SUCCESS.value


_LOSSLESS_COMPRESSED = [
    RLELossless, JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEG2000Lossless,
    JPEG2000MCLossless, HTJ2KLossless, HTJ2KLosslessRPCL, DeflatedExplicitVRLittleEndian,
]


def preferred_transfer_syntaxes() -> list[UID]:
    """Every transfer syntax pynetdicom knows, in the edge's order of preference.

    pynetdicom's acceptor takes, of the syntaxes a sender proposes in one context,
    the first in *this* list (not the sender's order). So: explicit VR little endian
    first (keeps private attributes' VRs), then lossless compression (smaller over
    the township link, pixels intact), then the other uncompressed ones, and lossy or
    video syntaxes last, so the edge never asks a modality to compress lossily an
    image it could send intact.
    """
    head = [ExplicitVRLittleEndian, *_LOSSLESS_COMPRESSED,
            ImplicitVRLittleEndian, ExplicitVRBigEndian]
    known = [UID(ts) for ts in ALL_TRANSFER_SYNTAXES]
    return [ts for ts in head if ts in known] + [ts for ts in known if ts not in head]


def build_ae(settings: Settings) -> AE:
    """The edge AE: Verification plus every storage SOP class pynetdicom knows
    (images, 12-lead and general ECG waveforms, SR, ...), each with every transfer
    syntax, so that compressed instances are accepted and kept exactly as sent."""
    ae = AE(ae_title=settings.edge_ae_title)
    ae.maximum_pdu_size = settings.edge_max_pdu
    ae.network_timeout = settings.edge_network_timeout
    ae.acse_timeout = settings.edge_acse_timeout_s
    ae.dimse_timeout = settings.edge_dimse_timeout_s
    ae.maximum_associations = settings.edge_max_associations
    syntaxes = preferred_transfer_syntaxes()
    ae.add_supported_context(Verification, syntaxes)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, context.abstract_syntax), syntaxes)
    return ae


def start_scp(settings: Settings, spool: Spool, *,
              alarms: Alarms | None = None) -> ThreadedAssociationServer:
    """Start listening at ``settings.edge_host:edge_port`` in background threads.

    Returns the server; ``server.server_address`` is the bound address (useful with
    port 0) and ``server.shutdown()`` stops it. ``alarms`` collects the disk alarm.
    """
    ae = build_ae(settings)
    allow = AllowList.parse(settings.edge_allowed_aes)
    if allow.accepts_any:
        log.warning("SECURITY: edge_allowed_aes is empty: ANY calling AE from ANY address "
                    "may store to this edge; set RELAY_EDGE_ALLOWED_AES in production")
    else:
        log.info("association allow-list: %s", ", ".join(
            f"{e.ae_title}@{e.address or '*'}" for e in allow.entries))
    guard = DiskGuard(root=spool.root, min_free_bytes=settings.edge_min_free_bytes,
                      min_free_percent=settings.edge_min_free_percent,
                      alarms=alarms or Alarms())
    context = StoreContext(spool=spool, guard=guard, policy=spool.policy)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_REQUESTED, handle_requested, [allow]),
        (evt.EVT_C_STORE, handle_store, [context]),
        (evt.EVT_C_ECHO, handle_echo),
    ]
    server = ae.start_server(
        (settings.edge_host, settings.edge_port), block=False, evt_handlers=handlers,
        ssl_context=tls_context(settings),
    )
    assert server is not None  # block=False always returns the server
    return server


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context for DICOM TLS, or None for plain DICOM (the default)."""
    if settings.edge_tls_cert is None:
        return None
    if settings.edge_tls_key is None:
        raise ValueError("edge_tls_cert is set without edge_tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.edge_tls_cert), str(settings.edge_tls_key))
    if settings.edge_tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(settings.edge_tls_client_ca))
    log.info("DICOM TLS on; client certificates %s",
             "required" if settings.edge_tls_client_ca else "not required")
    return context


def stop_scp(server: ThreadedAssociationServer, *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Stop accepting associations, let running ones finish for up to ``grace_s``
    seconds, then abort the rest. Call before closing the spool."""
    server.shutdown()
    deadline = time.monotonic() + grace_s
    for assoc in server.active_associations:
        if not assoc.is_established:
            # No association yet (e.g. a port probe): nothing to finish. Not aborted:
            # pynetdicom's abort() waits for the DUL to reach Sta1, which a connection
            # still awaiting its A-ASSOCIATE-RQ only does at the ARTIM timeout (30 s).
            continue
        assoc.join(max(0.0, deadline - time.monotonic()))
        if assoc.is_alive():
            log.warning("aborting association from %s at shutdown", assoc.requestor.ae_title)
            assoc.abort()
