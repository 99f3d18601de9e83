"""Bad input is refused with a DIMSE status or at negotiation, the SCP keeps running,
and nothing already accepted changes."""

from __future__ import annotations

import errno
import hashlib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
)

from relay.dicom.status import StoreStatus
from relay.config import Settings
from relay.edge import durable
from tests.edge.conftest import RunningScp
from tests.edge.factories import ct_dataset, write_part10
from tests.edge.helpers import journal_rows, wait_until

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]
Snapshot = list[tuple[str, str, str]]


def _snapshot(scp: RunningScp) -> Snapshot:
    """Every journal row with the digest of its file as it is on disk now."""
    rows = journal_rows(scp.spool.root)
    return [(r["sop_uid"], r["state"],
             hashlib.sha256((scp.spool.root / r["path"]).read_bytes()).hexdigest())
            for r in rows]


def _send(scp: RunningScp, dataset_or_path: object) -> int:
    ae = AE(ae_title="BAD_SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(scp.host, scp.port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset_or_path)  # type: ignore[arg-type]
        return int(status.Status)
    finally:
        assoc.release()


@pytest.fixture(autouse=True)
def short_artim(edge_settings: Settings) -> None:
    """pynetdicom holds a garbage connection until the ARTIM (ACSE) timer expires;
    one second instead of thirty keeps these tests fast."""
    edge_settings.edge_acse_timeout_s = 1.0


@pytest.fixture
def accepted(scp: RunningScp) -> Iterator[Snapshot]:
    """One good instance already accepted; the test checks it is untouched afterwards."""
    assert _send(scp, ct_dataset()) == StoreStatus.SUCCESS
    before = _snapshot(scp)
    yield before
    assert _snapshot(scp) == before


@pytest.fixture
def send_file_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pynetdicom's SCU send a file's dataset bytes unparsed, with the UIDs of its
    file meta in the request: the only way to put a broken dataset on the wire."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_dataset_without_sop_instance_uid_is_refused(
    scp: RunningScp, accepted: Snapshot, send_file_as_is: None, tmp_path: Path
) -> None:
    ds = ct_dataset()
    del ds.SOPInstanceUID  # the file meta still names one, so the request carries it
    status = _send(scp, write_part10(ds, tmp_path / "no-uid.dcm"))

    assert status in (StoreStatus.DATASET_MISMATCH, StoreStatus.CANNOT_UNDERSTAND)


def test_dataset_whose_uid_differs_from_the_request_is_refused(
    scp: RunningScp, accepted: Snapshot, send_file_as_is: None, tmp_path: Path
) -> None:
    ds = ct_dataset()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.preamble = b"\0" * 128
    path = tmp_path / "other-uid.dcm"
    ds.save_as(path, enforce_file_format=False)  # True would fix the meta UID up
    status = _send(scp, path)

    assert status == StoreStatus.DATASET_MISMATCH


def test_dataset_whose_sop_class_differs_from_the_request_is_refused(
    scp: RunningScp, accepted: Snapshot, send_file_as_is: None, tmp_path: Path
) -> None:
    ds = ct_dataset()  # the request says CT (file meta), the dataset says MR
    ds.SOPClassUID = MRImageStorage
    ds.preamble = b"\0" * 128
    path = tmp_path / "other-class.dcm"
    ds.save_as(path, enforce_file_format=False)
    status = _send(scp, path)

    assert status == StoreStatus.DATASET_MISMATCH


def test_bytes_that_are_not_a_dataset_cannot_be_understood(
    scp: RunningScp, accepted: Snapshot, send_file_as_is: None, tmp_path: Path
) -> None:
    path = write_part10(ct_dataset(), tmp_path / "garbage.dcm")
    _, offset = split_dataset(path)
    truncated_sequence = b"\x08\x00\x05\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00"
    path.write_bytes(path.read_bytes()[:offset] + truncated_sequence + b"\x00\x00ab")
    status = _send(scp, path)

    assert status == StoreStatus.CANNOT_UNDERSTAND


def test_non_dicom_bytes_on_the_port_do_not_stop_the_scp(
    scp: RunningScp, accepted: Snapshot, dcmtk: Dcmtk
) -> None:
    with socket.create_connection((scp.host, scp.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n" + bytes(range(256)) * 8)
        answer = sock.recv(4096)
    assert answer[:1] == b"\x07"  # A-ABORT PDU
    assert wait_until(lambda: not scp.server.active_associations, timeout=5)

    done = dcmtk("echoscu", "-aec", "RELAY_EDGE", scp.host, str(scp.port))
    assert done.returncode == 0, done.stderr
    assert _send(scp, ct_dataset()) == StoreStatus.SUCCESS
    accepted.append(_snapshot(scp)[-1])  # the new one is expected in the final check


def test_non_storage_sop_class_is_refused_at_negotiation(
    scp: RunningScp, accepted: Snapshot
) -> None:
    ae = AE(ae_title="FIND_SCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(scp.host, scp.port, ae_title="RELAY_EDGE")
    try:
        assert not assoc.accepted_contexts
        assert assoc.is_rejected or assoc.is_aborted or not assoc.is_established or (
            [cx.abstract_syntax for cx in assoc.rejected_contexts]
            == [PatientRootQueryRetrieveInformationModelFind])
    finally:
        if assoc.is_established:
            assoc.release()


def test_full_disk_answers_out_of_resources(
    scp: RunningScp, accepted: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "write_durably", disk_full)
    assert _send(scp, ct_dataset()) == StoreStatus.OUT_OF_RESOURCES


def test_unexpected_failure_answers_processing_failure_and_scp_lives_on(
    scp: RunningScp, accepted: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug of our own")

    with monkeypatch.context() as patch:
        patch.setattr(durable, "write_durably", broken)
        assert _send(scp, ct_dataset()) == StoreStatus.PROCESSING_FAILURE
    assert _send(scp, ct_dataset()) == StoreStatus.SUCCESS
    accepted.append(_snapshot(scp)[-1])
