"""A full spool disk: C-STORE answers 0xA700 (out of resources), leaves no partial
file, keeps what it already acknowledged, and the edge keeps answering C-ECHO.

Two ways to get there: the free-space watermark (refused before anything is
written, alarm raised) and a real ENOSPC in the middle of a write, on a 2 MiB tmpfs
mounted as the spool (the tests run as root; unmounted in teardown).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from bench.ct_series import write_ct_series
from relay.config import Settings
from relay.dicom.status import StoreStatus
from relay.edge.admission import ALARM_DISK, Alarms
from relay.edge.agent import edge_status
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import OBJECTS_DIR, TMP_DIR, Spool
from tests.edge.factories import ct_dataset
from tests.edge.helpers import journal_rows

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]
TMPFS_SIZE = "2m"


@pytest.fixture
def tmpfs_spool(edge_settings: Settings) -> Iterator[Path]:
    """The spool folder is a 2 MiB tmpfs (needs root; fails, never skips, without)."""
    root = edge_settings.edge_spool_dir
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(root)],
                   check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def _assert_no_partial_files(root: Path) -> None:
    rows = journal_rows(root)
    assert list((root / TMP_DIR).iterdir()) == []
    on_disk = {p.relative_to(root).as_posix() for p in (root / OBJECTS_DIR).rglob("*")
               if p.is_file()}
    assert on_disk == {row["path"] for row in rows}
    for row in rows:
        assert hashlib.sha256((root / row["path"]).read_bytes()).hexdigest() == row["sha256"]


def _store_statuses(output: str) -> list[str]:
    return [line.split("(", 1)[1].rstrip(")\n") for line in output.splitlines()
            if line.startswith("I: Received Store Response")]


def test_enospc_mid_write_answers_a700_and_leaves_no_partial_file(
    edge_settings: Settings, tmpfs_spool: Path, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    settings = edge_settings.model_copy(update={"edge_min_free_bytes": 0})
    files = write_ct_series(tmp_path / "ct", count=30, size=256, seed="disk-full")  # ~4 MiB
    with Spool(tmpfs_spool) as spool:
        server = start_scp(settings, spool)
        port = str(server.server_address[1])
        try:
            done = dcmtk("storescu", "-v", "-aec", "RELAY_EDGE", "127.0.0.1", port,
                         *map(str, files))
            statuses = _store_statuses(done.stdout + done.stderr)
            assert "Success" in statuses[0]
            assert any("outofresources" in s.lower().replace(" ", "") for s in statuses), statuses
            assert dcmtk("echoscu", "127.0.0.1", port).returncode == 0
        finally:
            stop_scp(server, grace_s=1.0)
    acknowledged = sum(s == "Success" for s in statuses)
    assert len(journal_rows(tmpfs_spool)) == acknowledged
    _assert_no_partial_files(tmpfs_spool)


def _c_store(host: str, port: int, dataset: object) -> int:
    ae = AE(ae_title="WM_TEST")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(host, port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)  # type: ignore[arg-type]
    finally:
        assoc.release()


def test_below_watermark_refuses_before_writing_and_raises_an_alarm(
    edge_settings: Settings, spool: Spool
) -> None:
    settings = edge_settings.model_copy(update={"edge_min_free_bytes": 2**62})
    alarms = Alarms()
    server = start_scp(settings, spool, alarms=alarms)
    try:
        status = _c_store("127.0.0.1", server.server_address[1], ct_dataset())
    finally:
        stop_scp(server, grace_s=1.0)

    assert status == StoreStatus.OUT_OF_RESOURCES
    assert journal_rows(spool.root) == []
    _assert_no_partial_files(spool.root)
    assert "watermark" in alarms.active()[ALARM_DISK][0]
    assert edge_status(settings)["disk_alarm"] is not None


def test_alarm_clears_when_there_is_room_again(edge_settings: Settings, spool: Spool) -> None:
    alarms = Alarms()
    alarms.raise_alarm(ALARM_DISK, "spool disk full: test")
    server = start_scp(edge_settings, spool, alarms=alarms)
    try:
        status = _c_store("127.0.0.1", server.server_address[1], ct_dataset())
    finally:
        stop_scp(server, grace_s=1.0)

    assert status == StoreStatus.SUCCESS
    assert alarms.active() == {}
