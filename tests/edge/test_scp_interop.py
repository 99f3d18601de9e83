"""The edge SCP against independent peers: DCMTK's echoscu/storescu, pynetdicom's SCU.

Every instance must be kept exactly as it travelled: same transfer syntax, same
dataset bytes (the file meta is the edge's own, written by pynetdicom).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    GeneralECGWaveformStorage,
    TwelveLeadECGWaveformStorage,
)

from relay.config import Settings
from relay.edge.scp import acceptor_policy, preferred_transfer_syntaxes
from tests.edge.conftest import RunningScp
from tests.edge.factories import (
    PATIENT_ID,
    PATIENT_NAME,
    ct_dataset,
    dataset_part,
    ecg_dataset,
    write_part10,
)
from tests.edge.helpers import journal_rows

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]


def test_echoscu_gets_success(scp: RunningScp, dcmtk: Dcmtk) -> None:
    done = dcmtk("echoscu", "-aec", "RELAY_EDGE", scp.host, str(scp.port))
    assert done.returncode == 0, done.stderr


def _storescu(dcmtk: Dcmtk, scp: RunningScp, *files: Path, options: tuple[str, ...] = ()) -> None:
    done = dcmtk("storescu", "-aet", "TOWNSHIP_CT", "-aec", "RELAY_EDGE", *options,
                 scp.host, str(scp.port), *map(str, files))
    assert done.returncode == 0, done.stderr


def test_storescu_instances_are_spooled_exactly_as_sent(
    scp: RunningScp, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    study = ct_dataset().StudyInstanceUID
    plain = [
        write_part10(ct_dataset(study_uid=study, seed=1), tmp_path / "ct-explicit.dcm"),
        write_part10(ct_dataset(study_uid=study, seed=2,
                                transfer_syntax=ImplicitVRLittleEndian), tmp_path / "ct-implicit.dcm"),
        write_part10(ecg_dataset(), tmp_path / "ecg.dcm"),
    ]
    rle = write_part10(ct_dataset(study_uid=study, transfer_syntax=RLELossless),
                       tmp_path / "ct-rle.dcm")
    _storescu(dcmtk, scp, *plain)
    _storescu(dcmtk, scp, rle, options=("-xr",))  # storescu proposes RLE only when asked

    rows = {row["sop_uid"]: row for row in journal_rows(scp.spool.root)}
    assert len(rows) == 4
    for sent in [*plain, rle]:
        sent_meta, _ = split_dataset(sent)
        row = rows[sent_meta.MediaStorageSOPInstanceUID]
        spooled = scp.spool.root / row["path"]
        spooled_meta, _ = split_dataset(spooled)
        assert spooled_meta.TransferSyntaxUID == sent_meta.TransferSyntaxUID, sent.name
        assert row["transfer_syntax_uid"] == sent_meta.TransferSyntaxUID
        assert dataset_part(spooled) == dataset_part(sent), sent.name
        assert row["sha256"] == hashlib.sha256(spooled.read_bytes()).hexdigest()
        assert row["size"] == spooled.stat().st_size
        assert (row["calling_ae"], row["priority"], row["state"]) == (
            "TOWNSHIP_CT", "routine", "spooled")
        assert dcmtk("dcmdump", "-q", str(spooled)).returncode == 0  # readable by DCMTK


def _pynetdicom_store(scp: RunningScp, priority: int) -> str:
    ae = AE(ae_title="PYNET_SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(scp.host, scp.port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    try:
        ds = ct_dataset()
        status = assoc.send_c_store(ds, priority=priority)
        assert status.Status == 0x0000
        return str(ds.SOPInstanceUID)
    finally:
        assoc.release()


@pytest.mark.parametrize(("dimse_priority", "expected"),
                         [(0x0001, "stat"), (0x0000, "routine"), (0x0002, "routine")])
def test_c_store_priority_is_kept(scp: RunningScp, dimse_priority: int, expected: str) -> None:
    sop_uid = _pynetdicom_store(scp, dimse_priority)

    (row,) = journal_rows(scp.spool.root)
    assert (row["sop_uid"], row["priority"], row["calling_ae"]) == (sop_uid, expected, "PYNET_SCU")


def test_store_log_lines_name_identifiers_never_the_patient(
    scp: RunningScp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="relay.edge"):
        sop_uid = _pynetdicom_store(scp, 0x0001)

    text = caplog.text
    assert sop_uid in text and "PYNET_SCU" in text and "sha256=" in text
    assert PATIENT_NAME not in text and PATIENT_ID not in text
    assert PATIENT_NAME.split("^")[0] not in text


def test_edge_accepts_every_storage_class_with_every_transfer_syntax(
    edge_settings: Settings,
) -> None:
    policy = acceptor_policy(edge_settings)

    assert sorted(preferred_transfer_syntaxes()) == sorted(ALL_TRANSFER_SYNTAXES)
    assert list(policy.transfer_syntaxes) == preferred_transfer_syntaxes()
    assert preferred_transfer_syntaxes()[0] == ExplicitVRLittleEndian
    for ecg in (TwelveLeadECGWaveformStorage, GeneralECGWaveformStorage):
        assert ecg in policy.abstract_syntaxes
    assert "1.2.840.10008.1.1" in policy.abstract_syntaxes  # Verification
    assert len(policy.abstract_syntaxes) > 150


def test_the_sample_set_arrives_intact_and_no_patient_data_is_logged(
    scp: RunningScp, dcmtk: Dcmtk, samples: list[dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rle = [s for s in samples if s["transfer_syntax_uid"] == RLELossless]
    plain = [s for s in samples if s not in rle]
    with caplog.at_level(logging.DEBUG, logger="relay"):
        _storescu(dcmtk, scp, *(Path(s["abspath"]) for s in plain))
        _storescu(dcmtk, scp, *(Path(s["abspath"]) for s in rle), options=("-xr",))

    rows = {row["sop_uid"]: row for row in journal_rows(scp.spool.root)}
    assert set(rows) == {s["sop_instance_uid"] for s in samples}
    for sample in samples:
        row = rows[sample["sop_instance_uid"]]
        assert row["study_uid"] == sample["study_instance_uid"]
        assert row["transfer_syntax_uid"] == sample["transfer_syntax_uid"]
        spooled = scp.spool.root / row["path"]
        assert dataset_part(spooled) == dataset_part(Path(sample["abspath"])), sample["path"]
    for sample in samples:
        for secret in (sample["patient_name"], sample["patient_id"]):
            assert secret not in caplog.text
