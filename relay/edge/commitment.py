"""DICOM Storage Commitment Push Model SCP (PS3.4 Annex J) at the township edge, so a
modality that deletes its local copy after commitment does so only when the relay
holds the instance: in this edge's spool (policy ``spool``) or at the county (``county``).

It runs on pynetdicom's AE (the edge's own C-STORE loop stays a storage acceptor):
``CommitmentService`` gives that AE its presentation contexts and its N-ACTION handler,
and runs one background thread that decides items from the spool's journal and
delivers each N-EVENT-REPORT, on the request's association while it is open, else on
a new association to the modality (``edge_commitment_peers``), retried with backoff.
Transactions live in ``commitment_store`` (recorded before N-ACTION Success), so a
restart still reports every one, and none twice. Interface: docs/interfaces/storage-commitment.md.
"""

from __future__ import annotations

import enum
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext, build_context, build_role
from pynetdicom.transport import ThreadedAssociationServer

from relay.config import EdgeSettings
from relay.dicom.status import CommitmentStatus
from relay.dicom.vocab import IngestOutcome
from relay.edge.clock import iso, now_utc
from relay.edge.commitment_store import CommitmentStore, Item, Transaction, TransactionState
from relay.edge.forward import retry_delay
from relay.edge.journal import Holding, SpoolState, read_holdings

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = UID("1.2.840.10008.1.20.1")
"""Storage Commitment Push Model SOP Class."""
WELL_KNOWN_INSTANCE = UID("1.2.840.10008.1.20.1.1")
"""Its well-known SOP Instance, the Requested/Affected SOP Instance of every message."""
TRANSFER_SYNTAXES: list[str | UID] = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
REQUEST_COMMITMENT = 1
"""N-ACTION Action Type ID: Request Storage Commitment."""
MAX_ITEMS = 100_000
"""Referenced SOP Sequence items taken in one request: a large CT study has a few
thousand; beyond this the request is answered 0x0213 (resource limitation)."""
SAME_ASSOCIATION = "same association"
KEEP_REPORTED_DAYS = 30
"""Days a reported transaction is kept: a repeated N-ACTION with its Transaction UID is
recognised (and not reported again) for this long, and the file stays small."""
PRUNE_EVERY_S = 3600.0
"""Seconds between sweeps of reported transactions."""


class EventType(enum.IntEnum):
    """N-EVENT-REPORT Event Type ID of a storage commitment result."""

    ALL_SUCCESS = 1
    """Storage Commitment Request Successful: every item is committed."""
    FAILURES_EXIST = 2
    """Storage Commitment Request Complete - Failures Exist."""


class CommitPolicy(enum.StrEnum):
    """When an item counts as committed."""

    SPOOL = "spool"
    """Durably in this edge's spool (journaled with its file, or already at the county)."""
    COUNTY = "county"
    """The county confirmed it holds the bytes (journal state ``sent``, not quarantined)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a modality takes reports on a new association."""

    ae_title: str
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class RequestError(ValueError):
    """A Request Storage Commitment the edge does not take; ``status`` is the answer."""

    def __init__(self, status: CommitmentStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_peers(text: str) -> dict[str, Peer]:
    """``[CALLING=]AE@host:port, ...`` -> peers by calling AE title (the AE that sends
    the N-ACTION; by default the same as the one taking the report); a malformed entry
    is a ValueError naming it."""
    peers = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        calling, _, target = entry.rpartition("=")
        ae, at, address = target.partition("@")
        host, colon, port = address.rpartition(":")
        if not (ae and at and host and colon and port.isdigit()):
            raise ValueError(f"edge_commitment_peers: {entry!r} is not [CALLING=]AE@host:port")
        peers[calling.strip() or ae] = Peer(ae, host, int(port))
    return peers


def parse_policies(text: str) -> dict[str, CommitPolicy]:
    """``AE=policy, ...`` -> policy by AE title; a malformed entry is a ValueError."""
    policies = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        ae, _, name = entry.partition("=")
        if not ae or name.strip() not in CommitPolicy.__members__.values():
            raise ValueError(f"edge_commitment_policy_by_ae: {entry!r} is not AE=spool|county")
        policies[ae.strip()] = CommitPolicy(name.strip())
    return policies


def parse_request(info: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """Transaction UID and (SOP Class UID, SOP Instance UID) items of an N-ACTION's
    Action Information; RequestError naming the attribute if malformed."""
    invalid = CommitmentStatus.INVALID_ARGUMENT_VALUE
    if info is None:
        raise RequestError(invalid, "no Action Information")
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not UID(transaction_uid).is_valid:
        raise RequestError(invalid, "Transaction UID (0008,1195) missing or not a UID")
    sequence = info.get("ReferencedSOPSequence")
    if not sequence:
        raise RequestError(invalid, "Referenced SOP Sequence (0008,1199) missing or empty")
    if len(sequence) > MAX_ITEMS:
        raise RequestError(CommitmentStatus.RESOURCE_LIMITATION,
                           f"{len(sequence)} items in (0008,1199), at most {MAX_ITEMS}")
    items = []
    for n, entry in enumerate(sequence, start=1):
        sop_class = str(entry.get("ReferencedSOPClassUID", "") or "")
        sop_uid = str(entry.get("ReferencedSOPInstanceUID", "") or "")
        if not (UID(sop_class).is_valid and UID(sop_uid).is_valid):
            raise RequestError(invalid, f"(0008,1199) item {n}: Referenced SOP Class UID "
                               "(0008,1150) or Instance UID (0008,1155) missing or not a UID")
        items.append((sop_class, sop_uid))
    return transaction_uid, items


def judge(sop_class_uid: str, versions: Sequence[Holding], *, policy: CommitPolicy,
          spool_root: Path) -> int | None:
    """The outcome of one item from its journaled versions: 0 committed, a Failure
    Reason, or None (not yet: ``county`` policy, still on its way)."""
    if not versions:
        return CommitmentStatus.NO_SUCH_OBJECT_INSTANCE
    if all(v.sop_class_uid != sop_class_uid for v in versions):
        return CommitmentStatus.CLASS_INSTANCE_CONFLICT
    if len(versions) > 1:
        # Two different objects under one UID: which one the modality still holds is
        # unknown, so it keeps its copy (the county quarantines the conflict).
        return CommitmentStatus.PROCESSING_FAILURE
    held = versions[0]
    if held.county_outcome is IngestOutcome.QUARANTINED:
        return CommitmentStatus.PROCESSING_FAILURE
    if held.state is SpoolState.SENT:
        return CommitmentStatus.SUCCESS
    if not (spool_root / held.path).is_file():  # journaled, file lost: it will never travel
        return CommitmentStatus.PROCESSING_FAILURE
    return CommitmentStatus.SUCCESS if policy is CommitPolicy.SPOOL else None


def event_report(transaction: Transaction) -> tuple[Dataset, EventType]:
    """The N-EVENT-REPORT Event Information of a fully decided transaction."""
    report = Dataset()
    report.TransactionUID = transaction.transaction_uid
    committed = [i for i in transaction.items if i.outcome == CommitmentStatus.SUCCESS]
    failed = [i for i in transaction.items if i.outcome != CommitmentStatus.SUCCESS]
    if committed:
        report.ReferencedSOPSequence = [_reference(i) for i in committed]
    if failed:
        report.FailedSOPSequence = [_reference(i, failure=True) for i in failed]
    return report, EventType.FAILURES_EXIST if failed else EventType.ALL_SUCCESS


def _reference(item: Item, *, failure: bool = False) -> Dataset:
    entry = Dataset()
    entry.ReferencedSOPClassUID = item.sop_class_uid
    entry.ReferencedSOPInstanceUID = item.sop_uid
    if failure:
        entry.FailureReason = int(item.outcome if item.outcome is not None
                                  else CommitmentStatus.PROCESSING_FAILURE)
    return entry


Handler = EventHandlerType


class CommitmentService:
    """Storage Commitment SCP for one edge, plugged into a pynetdicom AE with
    ``contexts()`` and ``handlers()``; ``start()``/``stop()`` its reporting thread.
    ``spool_root``: the spool folder whose journal is judged and where
    ``commitments.sqlite3`` is kept (default ``settings.edge_spool_dir``)."""

    def __init__(self, settings: EdgeSettings, *, spool_root: Path | None = None,
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self._root = (spool_root or settings.edge_spool_dir).resolve()
        self._default_policy = CommitPolicy(settings.edge_commitment_policy)
        self._policies = parse_policies(settings.edge_commitment_policy_by_ae)
        self._peers = parse_peers(settings.edge_commitment_peers)
        self.store = CommitmentStore(self._root)
        self._rng = rng or random.Random()
        self._live: dict[str, Association] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        """Rounds the reporting thread has finished (tests wait on it, never on time)."""
        self._next_prune = 0.0

    # --- what the AE needs -------------------------------------------------------------
    def contexts(self) -> list[PresentationContext]:
        """Supported contexts: the Push Model SOP Class, roles as the modality proposes
        them (a modality may offer both SCU and SCP; the edge is the SCP either way)."""
        context = build_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES)
        context.scu_role, context.scp_role = True, True
        return [context]

    def handlers(self) -> list[Handler]:
        return [(evt.EVT_N_ACTION, self.handle_action)]

    def policy_for(self, calling_ae: str) -> CommitPolicy:
        return self._policies.get(calling_ae, self._default_policy)

    # --- N-ACTION ------------------------------------------------------------------------
    def handle_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """Record a Request Storage Commitment durably, then answer Success; the
        result follows as N-EVENT-REPORT. Never raises: a DIMSE status instead."""
        assoc = event.assoc
        calling_ae = str(assoc.requestor.ae_title).strip()
        try:
            return self._take_request(event, assoc, calling_ae), None
        except RequestError as exc:
            log.warning("storage commitment request refused: calling_ae=%s status=0x%04X: %s",
                        calling_ae, exc.status, exc)
            return int(exc.status), None
        except (OSError, sqlite3.Error) as exc:
            log.error("storage commitment request not recorded: calling_ae=%s: %s", calling_ae, exc)
            return int(CommitmentStatus.PROCESSING_FAILURE), None
        except Exception:
            log.exception("storage commitment request failed: calling_ae=%s", calling_ae)
            return int(CommitmentStatus.PROCESSING_FAILURE), None

    def _take_request(self, event: evt.Event, assoc: Association, calling_ae: str) -> int:
        request = event.request
        if not isinstance(request, N_ACTION):
            raise RequestError(CommitmentStatus.NO_SUCH_ACTION, "not an N-ACTION")
        if request.RequestedSOPClassUID != STORAGE_COMMITMENT:
            raise RequestError(CommitmentStatus.NO_SUCH_SOP_CLASS,
                               f"Requested SOP Class {request.RequestedSOPClassUID}")
        if request.ActionTypeID != REQUEST_COMMITMENT:
            raise RequestError(CommitmentStatus.NO_SUCH_ACTION,
                               f"Action Type ID {request.ActionTypeID} is not 1")
        if request.RequestedSOPInstanceUID != WELL_KNOWN_INSTANCE:
            raise RequestError(CommitmentStatus.INVALID_OBJECT_INSTANCE,
                               f"Requested SOP Instance {request.RequestedSOPInstanceUID}")
        try:
            info = event.action_information
        except Exception as exc:  # undecodable dataset
            raise RequestError(CommitmentStatus.INVALID_ARGUMENT_VALUE,
                               f"Action Information not decodable: {exc}") from exc
        transaction_uid, items = parse_request(info)
        policy = self.policy_for(calling_ae)
        now = now_utc()
        wait = self._settings.edge_commitment_wait_s if policy is CommitPolicy.COUNTY else 0.0
        new = self.store.record(
            transaction_uid=transaction_uid, calling_ae=calling_ae,
            peer=f"{assoc.requestor.address}:{assoc.requestor.port}", policy=policy,
            items=items, at=now, decide_by=now + timedelta(seconds=wait))
        known = None if new else self.store.get(transaction_uid)
        if known is None or known.state is not TransactionState.REPORTED:
            with self._lock:  # the modality may wait for the report on this association
                self._live[transaction_uid] = assoc
        log.info("storage commitment request transaction=%s calling_ae=%s called_ae=%s items=%d"
                 " policy=%s%s", transaction_uid, calling_ae, str(assoc.acceptor.ae_title).strip(),
                 len(items), policy, "" if new else " (repeat: transaction known, not recorded again)")
        self._wake.set()
        return int(CommitmentStatus.SUCCESS)

    # --- the reporting thread --------------------------------------------------------
    def start(self) -> None:
        """Start the thread that decides and reports (pending ones from before, too)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relay-commitment", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; a report in progress finishes or times out (it stays due)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("storage commitment thread still busy after %.0fs", timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_round()
            except Exception:  # the next round tries again; nothing is lost on disk
                log.exception("storage commitment round failed")
            self.rounds += 1
            self._wake.wait(self._settings.edge_commitment_poll_s)

    def run_round(self, *, now: datetime | None = None) -> None:
        """Decide what can be decided and deliver every report that is due; now and
        then forget transactions reported long ago."""
        if time.monotonic() >= self._next_prune:
            self._prune(now or now_utc())
        for transaction in self.store.open_transactions(due_at=now or now_utc()):
            if self._stop.is_set():
                return
            moment = now or now_utc()
            if transaction.state is TransactionState.WAITING:
                decided = self._decide(transaction, moment)
                if decided is None:
                    continue
                transaction = decided
            if transaction.next_attempt_at <= iso(moment):
                self._deliver(transaction, moment)

    def _prune(self, now: datetime) -> None:
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        removed = self.store.prune_reported(before=now - timedelta(days=KEEP_REPORTED_DAYS))
        if removed:
            log.info("storage commitment: forgot %d transactions reported over %d days ago",
                     removed, KEEP_REPORTED_DAYS)

    def _decide(self, transaction: Transaction, now: datetime) -> Transaction | None:
        """Judge the undecided items; the transaction if now fully decided, else None."""
        undecided = [i for i in transaction.items if i.outcome is None]
        versions = read_holdings(self._root, [i.sop_uid for i in undecided])
        policy = CommitPolicy(transaction.policy)
        outcomes: dict[int, int] = {}
        for item in undecided:
            outcome = judge(item.sop_class_uid, versions.get(item.sop_uid, []), policy=policy,
                            spool_root=self._root)
            if outcome is None and iso(now) >= transaction.decide_by:
                outcome = CommitmentStatus.PROCESSING_FAILURE  # waited long enough: keep your copy
            if outcome is not None:
                outcomes[item.seq] = int(outcome)
        complete = len(outcomes) == len(undecided)
        if outcomes:
            self.store.decide(transaction.transaction_uid, outcomes, complete=complete)
        if not complete:
            return None
        decided = self.store.get(transaction.transaction_uid)
        if decided is not None:
            failed = sum(i.outcome != CommitmentStatus.SUCCESS for i in decided.items)
            log.info("storage commitment decided transaction=%s calling_ae=%s policy=%s"
                     " committed=%d failed=%d", decided.transaction_uid, decided.calling_ae,
                     decided.policy, len(decided.items) - failed, failed)
        return decided

    def _deliver(self, transaction: Transaction, now: datetime) -> None:
        report, event_type = event_report(transaction)
        uid = transaction.transaction_uid
        errors: list[str] = []
        via = None
        with self._lock:
            assoc = self._live.pop(uid, None)
        if assoc is not None and same_association_usable(assoc):
            error = send_report(assoc, report, event_type)
            via = SAME_ASSOCIATION if error is None else None
            errors += [] if error is None else [f"same association: {error}"]
        if via is None:
            peer = self._peers.get(transaction.calling_ae)
            error = (self._report_to(peer, report, event_type) if peer is not None
                     else "no address for this AE in edge_commitment_peers")
            via = peer.label if error is None and peer is not None else None
            errors += [] if error is None else [error]
        if via is not None:
            self.store.mark_reported(uid, via=via, at=now_utc())
            log.info("storage commitment reported transaction=%s calling_ae=%s event_type=%d"
                     " via=%s attempts=%d%s", uid, transaction.calling_ae, event_type, via,
                     transaction.attempts + 1, "".join(f" (before: {e})" for e in errors))
            return
        delay = retry_delay(attempts=transaction.attempts + 1,
                            lo=self._settings.edge_commitment_retry_min_s,
                            hi=self._settings.edge_commitment_retry_max_s, rng=self._rng)
        detail = "; ".join(errors)
        self.store.mark_failed(uid, error=detail, next_attempt_at=now + timedelta(seconds=delay))
        log.warning("storage commitment report not delivered transaction=%s calling_ae=%s"
                    " attempts=%d retry_in=%.0fs: %s", uid, transaction.calling_ae,
                    transaction.attempts + 1, delay, detail)

    def _report_to(self, peer: Peer, report: Dataset, event_type: EventType) -> str | None:
        """Deliver on a new association, the edge proposing the SCP role (PS3.4 J.3.3);
        None on success, else what went wrong."""
        ae = requestor_ae(self._settings)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                             ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)])
        if not assoc.is_established:
            outcome = "rejected" if assoc.is_rejected else "not reachable or aborted"
            return f"association to {peer.label} {outcome}"
        try:
            error = send_report(assoc, report, event_type)
            return None if error is None else f"{peer.label}: {error}"
        finally:
            if assoc.is_established:
                assoc.release()

    def wake(self) -> None:
        """Run a round now (tests; after a configuration change)."""
        self._wake.set()


def same_association_usable(assoc: Association) -> bool:
    """True if the report may go on the request's association: still established, the
    edge the SCP of Storage Commitment on it (the default roles, or the modality's role
    proposal accepted), and no request of the modality waiting to be served (pynetdicom
    would take it for the report's answer)."""
    if not assoc.is_established:
        return False
    if not any(cx.abstract_syntax == STORAGE_COMMITMENT and cx.as_scp
               for cx in assoc.accepted_contexts):
        return False
    return assoc.dimse.peek_msg()[1] is None


def send_report(assoc: Association, report: Dataset, event_type: EventType) -> str | None:
    """Send one N-EVENT-REPORT on ``assoc``; None if answered Success, else why not."""
    try:
        status, _ = assoc.send_n_event_report(report, int(event_type), STORAGE_COMMITMENT,
                                              WELL_KNOWN_INSTANCE)
    except (RuntimeError, ValueError, OSError) as exc:
        return f"not sent: {exc}"
    code = getattr(status, "Status", None)
    if code is None:
        return "no answer"
    return None if code == CommitmentStatus.SUCCESS else f"answered 0x{int(code):04X}"


def requestor_ae(settings: EdgeSettings) -> AE:
    """The edge's AE for a report on a new association, with the edge's timeouts."""
    ae = AE(ae_title=settings.edge_ae_title)
    _timeouts(ae, settings)
    ae.connection_timeout = settings.edge_acse_timeout_s
    ae.add_requested_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES)
    return ae


def _timeouts(ae: AE, settings: EdgeSettings) -> None:
    ae.acse_timeout = settings.edge_acse_timeout_s
    ae.dimse_timeout = settings.edge_dimse_timeout_s
    ae.network_timeout = settings.edge_network_timeout


def serve(service: CommitmentService, *, settings: EdgeSettings, host: str,
          port: int) -> ThreadedAssociationServer:
    """A pynetdicom AE serving only ``service`` at ``host:port`` (tests, and the shape
    of what ``dimse_services`` assembles); ``server.shutdown()`` stops it."""
    ae = AE(ae_title=settings.edge_ae_title)
    _timeouts(ae, settings)
    for context in service.contexts():
        ae.add_supported_context(str(context.abstract_syntax), context.transfer_syntax,
                                 scu_role=context.scu_role, scp_role=context.scp_role)
    server = ae.start_server((host, port), block=False, evt_handlers=service.handlers())
    assert server is not None  # block=False always returns the server
    return server
