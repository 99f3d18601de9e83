"""The edge's DICOM SCP: accept C-STORE from township modalities into the spool.

The protocol is ``relay.edge.acceptor`` (why not pynetdicom's server:
docs/design/edge-association-loop.md); this module is what the edge does with it. The
allow-list refuses a calling AE (or address) with A-ASSOCIATE-RJ "calling AE title
not recognised". ``handle_store`` checks the disk watermark (0xA700 before writing
anything), reads the routing UIDs, hands the bytes as received to ``Spool.store``
and answers with a DIMSE status;
the acceptor sends the C-STORE response only when the handler returns, so Success
goes out only after the spool has the instance on disk and journaled. The handler
never raises: a bug of ours is 0x0110 for that instance, and the association lives
on. A study's first instance also has its header decoded once (``study_info_from``:
modality for the STAT rules, patient name for the local page).
"""

from __future__ import annotations

import errno
import logging
import ssl
import time
from dataclasses import dataclass, field

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
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

from relay.config import EdgeSettings
from relay.dicom.header import InstanceIds, InvalidInstance, read_ids
from relay.dicom.keys import check_uid
from relay.dicom.status import StoreStatus
from relay.dicom.vocab import Priority
from relay.edge.acceptor import VERIFICATION, AcceptorPolicy, StoreRequest, StoreServer
from relay.edge.admission import Alarms, AllowList, DiskGuard
from relay.edge.completeness import StudyInfo, StudyPolicy, matching_rule, study_info_from
from relay.edge.spool import Spool

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
"""Seconds ``stop_scp`` lets running associations finish before aborting them, so
that a C-STORE in progress is answered rather than cut off (the sender retries
anything it got no Success for, so an abort loses nothing)."""

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@dataclass(slots=True)
class StoreContext:
    """What the C-STORE handler needs besides the request, bound in ``start_scp``."""

    spool: Spool
    guard: DiskGuard | None = None
    policy: StudyPolicy = field(default_factory=StudyPolicy)


def _invalid_status(exc: InvalidInstance) -> StoreStatus:
    """A parsable dataset lacking a routing UID does not match its SOP class (0xA900);
    bytes that are not a dataset at all cannot be understood (0xC000)."""
    if exc.attribute is not None:
        return StoreStatus.DATASET_MISMATCH
    return StoreStatus.CANNOT_UNDERSTAND


def _mismatch(request: StoreRequest, ids: InstanceIds) -> str | None:
    """Why the dataset disagrees with the C-STORE request, or None if it agrees."""
    if ids.sop_uid != request.sop_instance_uid:
        return "SOPInstanceUID differs from the request's AffectedSOPInstanceUID"
    if ids.sop_class_uid != request.sop_class_uid:
        return "SOPClassUID differs from the request's AffectedSOPClassUID"
    return None


def _is_uid(value: str) -> bool:
    try:
        check_uid(value)
    except ValueError:
        return False
    return True


def _refuse(request: StoreRequest, status: StoreStatus, reason: str) -> int:
    sop = request.sop_instance_uid
    log.warning(
        "refused C-STORE from %s peer=%s sop=%s status=0x%04X: %s",
        request.calling_ae, request.peer, sop if _is_uid(sop) else ascii(sop[:80]), status.value, reason,
    )  # a sender's non-UID is quoted and cut: no forged log lines, no terminal escapes
    return status.value


def handle_store(request: StoreRequest, ctx: StoreContext) -> int:
    """One C-STORE: spool the instance as received, then answer. Never raises."""
    started = time.perf_counter()
    try:
        return _store(request, ctx, started)
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            if ctx.guard is not None:
                ctx.guard.disk_full(str(exc))
            log.error("spool full, refusing C-STORE from %s: %s", request.calling_ae, exc)
            return StoreStatus.OUT_OF_RESOURCES.value
        log.exception("C-STORE from %s failed", request.calling_ae)
        return StoreStatus.PROCESSING_FAILURE.value
    except Exception:
        log.exception("C-STORE failed")
        return StoreStatus.PROCESSING_FAILURE.value


def _priority(request: StoreRequest, ctx: StoreContext, *,
              info: StudyInfo | None) -> tuple[Priority, str | None]:
    """The instance's priority and, if STAT, why: C-STORE HIGH, then the rules."""
    if Priority.from_dimse(request.priority) is Priority.STAT:
        return Priority.STAT, "dimse-high"
    rule = matching_rule(ctx.policy.stat_rules, calling_ae=request.calling_ae,
                         modality=info.modality if info else "")
    return (Priority.STAT, rule) if rule else (Priority.ROUTINE, None)


def _store(request: StoreRequest, ctx: StoreContext, started: float) -> int:
    data = request.data  # Part 10 bytes with file meta; pixels not decoded
    if ctx.guard is not None:
        full = ctx.guard.refusal(len(data))
        if full:
            return _refuse(request, StoreStatus.OUT_OF_RESOURCES, full)
    if not _is_uid(request.sop_instance_uid):  # it names the spool file: checked before any write
        return _refuse(request, StoreStatus.DATASET_MISMATCH, "AffectedSOPInstanceUID is not a valid UID")
    # The file is written and fsynced while the header is parsed and checked here.
    pending = ctx.spool.begin_store(data, sop_uid=request.sop_instance_uid, sha256=request.sha256)
    try:
        ids = read_ids(data)
        mismatch = _mismatch(request, ids)
        if mismatch:
            pending.discard()
            return _refuse(request, StoreStatus.DATASET_MISMATCH, mismatch)
        info = None if ctx.spool.knows_study(ids.study_uid) else study_info_from(data)
        priority, stat_reason = _priority(request, ctx, info=info)
    except InvalidInstance as exc:
        pending.discard()
        return _refuse(request, _invalid_status(exc), str(exc))
    except BaseException:
        pending.discard()
        raise
    result = pending.commit(ids=ids, priority=priority, calling_ae=request.calling_ae,
                            peer=request.peer, study=info, stat_reason=stat_reason)
    log.info(
        "C-STORE %s from=%s peer=%s sop=%s bytes=%d sha256=%s priority=%s ms=%.1f",
        result.outcome.value, request.calling_ae, request.peer, ids.sop_uid, result.size,
        result.sha256[:12], priority.value, (time.perf_counter() - started) * 1000,
    )
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


def acceptor_policy(settings: EdgeSettings) -> AcceptorPolicy:
    """Verification plus every storage SOP class pynetdicom knows (images, 12-lead and
    general ECG waveforms, SR, ...), each with every transfer syntax, so that
    compressed instances are accepted and kept exactly as sent."""
    storage = {str(context.abstract_syntax) for context in AllStoragePresentationContexts}
    return AcceptorPolicy(
        abstract_syntaxes=frozenset(storage | {VERIFICATION}),
        transfer_syntaxes=[str(ts) for ts in preferred_transfer_syntaxes()],
        max_pdu=settings.edge_max_pdu,
        acse_timeout_s=settings.edge_acse_timeout_s,
        network_timeout_s=settings.edge_network_timeout or settings.edge_dimse_timeout_s,
        dimse_timeout_s=settings.edge_dimse_timeout_s,
        max_associations=settings.edge_max_associations,
    )


def start_scp(settings: EdgeSettings, spool: Spool, *,
              alarms: Alarms | None = None) -> StoreServer:
    """Start listening at ``settings.edge_host:edge_port`` in background threads.

    Returns the server; ``server.server_address`` is the bound address (useful with
    port 0) and ``stop_scp(server)`` stops it. ``alarms`` collects the disk alarm.
    """
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
    return StoreServer(
        (settings.edge_host, settings.edge_port), policy=acceptor_policy(settings),
        handler=lambda request: handle_store(request, context),
        refusal=lambda calling_ae, address: allow.refusal(calling_ae=calling_ae, address=address),
        ssl_context=tls_context(settings),
    )


def tls_context(settings: EdgeSettings) -> ssl.SSLContext | None:
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


def stop_scp(server: StoreServer, *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Stop accepting associations, let running ones finish for up to ``grace_s``
    seconds, then abort the rest. Call before closing the spool."""
    server.shutdown()
    deadline = time.monotonic() + grace_s
    for assoc in server.active_associations:
        if assoc.is_established:
            assoc.join(max(0.0, deadline - time.monotonic()))
        if assoc.is_alive():
            log.warning("aborting association from ae=%s peer=%s at shutdown",
                        assoc.calling_ae or "?", assoc.peer)
            assoc.abort()
