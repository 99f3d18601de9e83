"""Storage Commitment at the edge with real parts: DCMTK storescu stores to the edge's
SCP, the forwarder uploads to the stand-in county over HTTP, and a pynetdicom modality
asks for commitment and takes the N-EVENT-REPORT, on its association or on its own
listening AE."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from relay.config import Settings
from relay.dicom.vocab import IngestOutcome
from relay.edge.commitment import (
    STORAGE_COMMITMENT, TRANSFER_SYNTAXES, WELL_KNOWN_INSTANCE, CommitmentService, CommitPolicy,
    Peer, judge, parse_peers, serve,
)
from relay.edge.commitment_store import TransactionState
from relay.edge.forward import start_forwarder
from relay.edge.journal import Holding, SpoolState
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.edge.factories import PATIENT_ID, PATIENT_NAME, ct_dataset, write_part10
from tests.edge.helpers import wait_until
from tests.edge.standin_county import StandInCounty

CT_AE = "CT01"
DEADLINE_S = 60.0
Dcmtk = Callable[..., Any]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Report:
    """One N-EVENT-REPORT as the modality received it."""

    transaction_uid: str
    event_type: int
    committed: list[str]
    failed: dict[str, int]
    where: str


@dataclass
class Modality:
    """A pynetdicom modality: Storage Commitment SCU that can also listen for reports."""

    ae_title: str = CT_AE
    port: int = field(default_factory=_free_port)
    reports: list[Report] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadedAssociationServer | None = None

    def _on_report(self, event: evt.Event, where: str) -> tuple[int, None]:
        info = event.event_information
        report = Report(
            transaction_uid=str(info.TransactionUID), event_type=int(event.request.EventTypeID),
            committed=[str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
            failed={str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
                    for i in info.get("FailedSOPSequence", [])}, where=where)
        with self.lock:
            self.reports.append(report)
        return 0x0000, None

    def listen(self) -> None:
        """Accept reports on a new association at ``port`` (the edge proposes the SCP role)."""
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES, scu_role=False, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_EVENT_REPORT, self._on_report, ["new association"])])

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def request(self, port: int, items: list[tuple[str, str]], *, transaction_uid: str,
                keep_open: bool = False, action_type: int = 1, info: Dataset | None = None,
                propose_roles: bool = False) -> tuple[int, Any]:
        """Send N-ACTION; returns (status, association: open if ``keep_open``).
        ``propose_roles``: offer SCU and SCP roles (SCP/SCU Role Selection), as some
        modalities do to say they take the report on this association."""
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_N_EVENT_REPORT, self._on_report, ["same association"])]
        roles = [build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=True)] if propose_roles else []
        assoc = ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE", ext_neg=roles,
                             evt_handlers=handlers if keep_open else [])
        assert assoc.is_established, "the edge's commitment AE did not accept the association"
        if info is None:
            info = Dataset()
            info.TransactionUID = transaction_uid
            info.ReferencedSOPSequence = [_item(cls, uid) for cls, uid in items]
        status, _ = assoc.send_n_action(info, action_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
        if not keep_open:
            assoc.release()
        return int(status.Status), assoc

    def reports_for(self, transaction_uid: str) -> list[Report]:
        with self.lock:
            return [r for r in self.reports if r.transaction_uid == transaction_uid]


def _item(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


class Edge:
    """SCP + spool + forwarder + commitment AE over one spool folder, restartable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running = False

    def start(self) -> "Edge":
        self.spool = Spool(self.settings.edge_spool_dir)
        self.scp = start_scp(self.settings, self.spool)
        self.scp_port = int(self.scp.server_address[1])
        self.forward_stop = threading.Event()
        self.forwarder = start_forwarder(spool=self.spool, settings=self.settings,
                                         stop=self.forward_stop)
        self.service = CommitmentService(self.settings)
        self.service.start()
        self.server = serve(self.service, settings=self.settings, host="127.0.0.1", port=0)
        self.port = int(self.server.server_address[1])
        self.running = True
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.server.shutdown()
        self.service.stop()
        self.forward_stop.set()
        self.spool.wake()
        self.forwarder.join(10)
        stop_scp(self.scp, grace_s=1.0)
        self.spool.close()

    def rounds_after(self, count: int) -> int:
        """Wait until the reporting thread finished ``count`` more rounds; the new total."""
        target = self.service.rounds + count
        assert wait_until(lambda: self.service.rounds >= target, timeout=DEADLINE_S)
        return self.service.rounds


@pytest.fixture
def modality() -> Iterator[Modality]:
    m = Modality()
    yield m
    m.close()


def _settings(edge_settings: Settings, county: StandInCounty, modality: Modality,
              **extra: object) -> Settings:
    update: dict[str, object] = {
        "county_url": county.url, "edge_commitment_poll_s": 0.05,
        "edge_commitment_retry_min_s": 0.05, "edge_commitment_retry_max_s": 0.2,
        "edge_commitment_peers": f"{modality.ae_title}@127.0.0.1:{modality.port}",
        "edge_dimse_timeout_s": 5.0, "edge_acse_timeout_s": 5.0,
    }
    update.update(extra)
    return edge_settings.model_copy(update=update)


@pytest.fixture
def make_edge() -> Iterator[Callable[[Settings], Edge]]:
    edges: list[Edge] = []

    def make(settings: Settings) -> Edge:
        edges.append(Edge(settings).start())
        return edges[-1]

    yield make
    for edge in edges:
        edge.stop()


def _reported(edge: Edge, transaction_uid: str) -> bool:
    """Wait until the edge has recorded the report as delivered (the modality sees it a
    moment before the edge records its answer)."""
    def done() -> bool:
        stored = edge.service.store.get(transaction_uid)
        return stored is not None and stored.state is TransactionState.REPORTED
    return wait_until(done, timeout=DEADLINE_S)


def _store(dcmtk: Dcmtk, edge: Edge, tmp_path: Path, count: int) -> list[tuple[str, str]]:
    """Store ``count`` CT slices with DCMTK storescu as CT01; their (class, UID) items."""
    files, items = [], []
    for n in range(count):
        ds = ct_dataset(seed=n)
        files.append(str(write_part10(ds, tmp_path / f"ct{n}-{ds.SOPInstanceUID}.dcm")))
        items.append((CTImageStorage, str(ds.SOPInstanceUID)))
    done = dcmtk("storescu", "-aet", CT_AE, "-aec", "RELAY_EDGE", "127.0.0.1",
                 str(edge.scp_port), *files)
    assert done.returncode == 0, done.stderr
    return items


@pytest.mark.parametrize("propose_roles", [False, True], ids=["default-roles", "role-selection"])
def test_spool_policy_reports_all_success_on_the_same_association(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, propose_roles: bool,
) -> None:
    caplog.set_level(logging.INFO)
    edge = make_edge(_settings(edge_settings, standin_county, modality,
                               edge_commitment_peers=""))
    items = _store(dcmtk, edge, tmp_path, 3)
    transaction_uid = generate_uid()

    status, assoc = modality.request(edge.port, items, transaction_uid=transaction_uid,
                                     keep_open=True, propose_roles=propose_roles)
    assert status == 0x0000
    try:  # open until the edge has the modality's answer to its report, as a modality does
        assert _reported(edge, transaction_uid)
    finally:
        assoc.release()

    [report] = modality.reports_for(transaction_uid)
    assert report.where == "same association"
    assert report.event_type == 1
    assert sorted(report.committed) == sorted(uid for _, uid in items)
    assert report.failed == {}
    stored = edge.service.store.get(transaction_uid)
    assert stored is not None and stored.reported_via == "same association"
    assert transaction_uid in caplog.text and CT_AE in caplog.text
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text


def test_report_goes_to_the_modalitys_own_ae_after_it_released(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    modality.listen()
    edge = make_edge(_settings(edge_settings, standin_county, modality))
    items = _store(dcmtk, edge, tmp_path, 2)
    transaction_uid = generate_uid()

    status, assoc = modality.request(edge.port, items, transaction_uid=transaction_uid)
    assert status == 0x0000 and not assoc.is_established

    assert wait_until(lambda: bool(modality.reports_for(transaction_uid)), timeout=DEADLINE_S)
    [report] = modality.reports_for(transaction_uid)
    assert report.where == "new association"
    assert report.event_type == 1
    assert sorted(report.committed) == sorted(uid for _, uid in items)
    assert _reported(edge, transaction_uid)
    stored = edge.service.store.get(transaction_uid)
    assert stored is not None and stored.reported_via == f"{CT_AE}@127.0.0.1:{modality.port}"


def test_unknown_instance_and_wrong_class_fail_the_others_are_committed(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    modality.listen()
    edge = make_edge(_settings(edge_settings, standin_county, modality))
    items = _store(dcmtk, edge, tmp_path, 3)
    unknown = str(generate_uid())
    wrong_class = items[2][1]
    request = [items[0], items[1], (CTImageStorage, unknown), (MRImageStorage, wrong_class)]
    transaction_uid = generate_uid()

    status, _ = modality.request(edge.port, request, transaction_uid=transaction_uid)
    assert status == 0x0000

    assert wait_until(lambda: bool(modality.reports_for(transaction_uid)), timeout=DEADLINE_S)
    [report] = modality.reports_for(transaction_uid)
    assert report.event_type == 2
    assert sorted(report.committed) == sorted([items[0][1], items[1][1]])
    assert report.failed == {unknown: 0x0112, wrong_class: 0x0119}


def test_county_policy_reports_only_once_the_instances_are_at_the_county(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    modality.listen()
    standin_county.state.always = 503  # the WAN (or the county) is down
    edge = make_edge(_settings(edge_settings, standin_county, modality,
                               edge_commitment_policy_by_ae=f"{CT_AE}=county,DR02=spool"))
    items = _store(dcmtk, edge, tmp_path, 2)
    transaction_uid = generate_uid()
    status, _ = modality.request(edge.port, items, transaction_uid=transaction_uid)
    assert status == 0x0000

    edge.rounds_after(3)
    assert wait_until(lambda: len(standin_county.state.requests) >= 2, timeout=DEADLINE_S)
    stored = edge.service.store.get(transaction_uid)
    assert stored is not None and stored.state is TransactionState.WAITING
    assert modality.reports_for(transaction_uid) == []

    standin_county.state.always = None
    assert wait_until(lambda: bool(modality.reports_for(transaction_uid)), timeout=DEADLINE_S)
    [report] = modality.reports_for(transaction_uid)
    assert report.event_type == 1
    assert sorted(report.committed) == sorted(uid for _, uid in items)
    assert set(standin_county.state.sent_uids()) == {uid for _, uid in items}


def test_report_is_retried_until_the_modality_is_back(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    edge = make_edge(_settings(edge_settings, standin_county, modality))  # modality not listening
    items = _store(dcmtk, edge, tmp_path, 2)
    transaction_uid = generate_uid()
    status, _ = modality.request(edge.port, items, transaction_uid=transaction_uid)
    assert status == 0x0000

    def failed_twice() -> bool:
        stored = edge.service.store.get(transaction_uid)
        return stored is not None and stored.attempts >= 2
    assert wait_until(failed_twice, timeout=DEADLINE_S)
    stored = edge.service.store.get(transaction_uid)
    assert stored is not None and stored.state is TransactionState.DUE
    assert stored.last_error and "not reachable" in stored.last_error

    modality.listen()
    assert wait_until(lambda: bool(modality.reports_for(transaction_uid)), timeout=DEADLINE_S)
    assert _reported(edge, transaction_uid)
    [report] = modality.reports_for(transaction_uid)
    assert report.event_type == 1 and sorted(report.committed) == sorted(u for _, u in items)


def test_a_restart_between_request_and_report_still_reports_once(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    modality.listen()
    standin_county.state.always = 503
    settings = _settings(edge_settings, standin_county, modality, edge_commitment_policy="county")
    first = make_edge(settings)
    items = _store(dcmtk, first, tmp_path, 2)
    transaction_uid = generate_uid()
    status, _ = modality.request(first.port, items, transaction_uid=transaction_uid)
    assert status == 0x0000
    first.rounds_after(2)
    first.stop()
    assert modality.reports_for(transaction_uid) == []

    standin_county.state.always = None
    second = make_edge(settings)
    assert _reported(second, transaction_uid)
    assert len(modality.reports_for(transaction_uid)) == 1

    # The modality asks again with the same Transaction UID: no second transaction, no second report.
    status, _ = modality.request(second.port, items, transaction_uid=transaction_uid)
    assert status == 0x0000
    second.rounds_after(3)
    assert len(modality.reports_for(transaction_uid)) == 1
    [report] = modality.reports_for(transaction_uid)
    assert report.event_type == 1 and sorted(report.committed) == sorted(u for _, u in items)


def test_malformed_requests_are_refused_with_their_status(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge],
) -> None:
    edge = make_edge(_settings(edge_settings, standin_county, modality))
    no_transaction = Dataset()
    no_transaction.ReferencedSOPSequence = [_item(CTImageStorage, str(generate_uid()))]
    status, _ = modality.request(edge.port, [], transaction_uid="", info=no_transaction)
    assert status == 0x0115
    empty = Dataset()
    empty.TransactionUID = generate_uid()
    status, _ = modality.request(edge.port, [], transaction_uid="", info=empty)
    assert status == 0x0115
    status, _ = modality.request(edge.port, [(CTImageStorage, str(generate_uid()))],
                                 transaction_uid=generate_uid(), action_type=2)
    assert status == 0x0123
    assert edge.service.store.open_transactions() == []


def test_two_different_objects_under_one_uid_are_not_committed(
    edge_settings: Settings, standin_county: StandInCounty, modality: Modality,
    make_edge: Callable[[Settings], Edge], dcmtk: Dcmtk, tmp_path: Path,
) -> None:
    modality.listen()
    edge = make_edge(_settings(edge_settings, standin_county, modality))
    first = ct_dataset(seed=1)
    second = ct_dataset(seed=2)  # other pixels ...
    second.SOPInstanceUID = first.SOPInstanceUID  # ... under the same UID
    second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    for n, ds in enumerate((first, second)):
        done = dcmtk("storescu", "-aet", CT_AE, "-aec", "RELAY_EDGE", "127.0.0.1",
                     str(edge.scp_port), str(write_part10(ds, tmp_path / f"v{n}.dcm")))
        assert done.returncode == 0, done.stderr
    [good] = _store(dcmtk, edge, tmp_path, 1)
    transaction_uid = generate_uid()
    status, _ = modality.request(edge.port, [(CTImageStorage, str(first.SOPInstanceUID)), good],
                                 transaction_uid=transaction_uid)
    assert status == 0x0000

    assert wait_until(lambda: bool(modality.reports_for(transaction_uid)), timeout=DEADLINE_S)
    [report] = modality.reports_for(transaction_uid)
    assert report.event_type == 2
    assert report.committed == [good[1]]
    assert report.failed == {str(first.SOPInstanceUID): 0x0110}


def _holding(**changes: Any) -> Holding:
    values: dict[str, Any] = dict(sop_uid="1.2.3", sop_class_uid=CTImageStorage, sha256="ab",
                                  state=SpoolState.SENT, county_outcome=IngestOutcome.STORED,
                                  path="")
    values.update(changes)
    return Holding(**values)


def test_judge_follows_the_policy(tmp_path: Path) -> None:
    spooled = _holding(state=SpoolState.SPOOLED, county_outcome=None, path="objects/x.dcm")
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects/x.dcm").write_bytes(b"DICM")
    for policy, expected in ((CommitPolicy.SPOOL, 0x0000), (CommitPolicy.COUNTY, None)):
        assert judge(CTImageStorage, [spooled], policy=policy, spool_root=tmp_path) == expected
    lost = _holding(state=SpoolState.SPOOLED, county_outcome=None, path="objects/gone.dcm")
    assert judge(CTImageStorage, [lost], policy=CommitPolicy.SPOOL, spool_root=tmp_path) == 0x0110
    for policy in CommitPolicy:
        assert judge(CTImageStorage, [_holding()], policy=policy, spool_root=tmp_path) == 0x0000
        quarantined = _holding(county_outcome=IngestOutcome.QUARANTINED)
        assert judge(CTImageStorage, [quarantined], policy=policy, spool_root=tmp_path) == 0x0110
        assert judge(CTImageStorage, [], policy=policy, spool_root=tmp_path) == 0x0112
        assert judge(MRImageStorage, [_holding()], policy=policy, spool_root=tmp_path) == 0x0119


def test_settings_are_checked_when_the_service_is_made(edge_settings: Settings) -> None:
    assert parse_peers("CT01@10.0.0.5:104, DR02=DR02_SC@10.0.0.6:4100") == {
        "CT01": Peer("CT01", "10.0.0.5", 104), "DR02": Peer("DR02_SC", "10.0.0.6", 4100)}
    with pytest.raises(ValueError, match="edge_commitment_peers"):
        CommitmentService(edge_settings.model_copy(update={"edge_commitment_peers": "CT01:104"}))
    with pytest.raises(ValueError, match="edge_commitment_policy_by_ae"):
        CommitmentService(edge_settings.model_copy(
            update={"edge_commitment_policy_by_ae": "CT01=later"}))
