"""The edge's DICOM SCP: accept C-STORE from township modalities into the spool.

Handlers are thin (STYLE.md habit 1): ``handle_store`` reads the routing UIDs, hands
the bytes as received to ``Spool.store`` and answers with a DIMSE status. pynetdicom
sends the C-STORE response when the handler returns, so Success is returned only
after the spool has the instance on disk and journaled (pynetdicom#807). The
handlers never raise: an exception would become pynetdicom's generic 0xC211.
"""

from __future__ import annotations

import errno
import logging
import time
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
from relay.edge.spool import Spool

log = logging.getLogger(__name__)

ACSE_TIMEOUT_S = 30.0
"""Seconds pynetdicom waits for association messages (request, release) and its
ARTIM timer: a connection that sent garbage holds an association slot this long
(pynetdicom default 30). A module constant until Settings has a field for it."""
DIMSE_TIMEOUT_S = 60.0
"""Seconds pynetdicom waits for a DIMSE message it expects (pynetdicom default 30),
doubled for slow township links and large instances. A module constant until
Settings has a field for it; idle associations are bounded by
``Settings.edge_network_timeout``."""

SHUTDOWN_GRACE_S = 10.0
"""Seconds ``stop_scp`` lets running associations finish before aborting them, so
that a C-STORE in progress is answered rather than cut off (the sender retries
anything it got no Success for, so an abort loses nothing)."""

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _request(event: Event) -> C_STORE:
    return cast(C_STORE, event.request)


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


def handle_store(event: Event, spool: Spool) -> int:
    """EVT_C_STORE: spool the instance as received, then answer. Never raises."""
    started = time.perf_counter()
    try:
        return _store(event, spool, started)
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            log.error("spool full, refusing C-STORE from %s: %s", _calling_ae(event), exc)
            return StoreStatus.OUT_OF_RESOURCES.value
        log.exception("C-STORE from %s failed", _calling_ae(event))
        return StoreStatus.PROCESSING_FAILURE.value
    except Exception:
        log.exception("C-STORE failed")
        return StoreStatus.PROCESSING_FAILURE.value


def _store(event: Event, spool: Spool, started: float) -> int:
    data = event.encoded_dataset()  # Part 10 bytes with file meta; pixels not decoded
    try:
        ids = read_ids(data)
    except InvalidInstance as exc:
        return _refuse(event, _invalid_status(exc), str(exc))
    mismatch = _mismatch(event, ids)
    if mismatch:
        return _refuse(event, StoreStatus.DATASET_MISMATCH, mismatch)
    result = spool.store(
        data, ids=ids, priority=Priority.from_dimse(_request(event).Priority),
        calling_ae=_calling_ae(event), peer=_peer(event),
    )
    log.info(
        "C-STORE %s from=%s peer=%s sop=%s bytes=%d sha256=%s ms=%.1f",
        result.outcome.value, _calling_ae(event), _peer(event), ids.sop_uid,
        result.size, result.sha256[:12], (time.perf_counter() - started) * 1000,
    )
    return StoreStatus.SUCCESS.value


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
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    syntaxes = preferred_transfer_syntaxes()
    ae.add_supported_context(Verification, syntaxes)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, context.abstract_syntax), syntaxes)
    return ae


def start_scp(settings: Settings, spool: Spool) -> ThreadedAssociationServer:
    """Start listening at ``settings.edge_host:edge_port`` in background threads.

    Returns the server; ``server.server_address`` is the bound address (useful with
    port 0) and ``server.shutdown()`` stops it.
    """
    ae = build_ae(settings)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [spool]),
        (evt.EVT_C_ECHO, handle_echo),
    ]
    server = ae.start_server(
        (settings.edge_host, settings.edge_port), block=False, evt_handlers=handlers
    )
    assert server is not None  # block=False always returns the server
    return server


def stop_scp(server: ThreadedAssociationServer, *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Stop accepting associations, let running ones finish for up to ``grace_s``
    seconds, then abort the rest. Call before closing the spool."""
    server.shutdown()
    deadline = time.monotonic() + grace_s
    for assoc in server.active_associations:
        assoc.join(max(0.0, deadline - time.monotonic()))
        if assoc.is_alive():
            log.warning("aborting association from %s at shutdown", assoc.requestor.ae_title)
            assoc.abort()
