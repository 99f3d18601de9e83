"""Cut the power under a real edge in the middle of a 300-instance C-STORE.

kill -9 (test_crash.py) keeps the page cache; a power cut does not. Here the edge
(`python -m relay edge`) keeps its data folder on the power-loss file system
(tests/powerfs.py): after ``cut_power`` the disk holds only what the edge fsynced,
file data by fsync of the file and names by fsync of their folder. DCMTK storescu
sends the series; its verbose log says which files got Success. The power is cut
after a random number of them (plus a random fraction of the next store), the spool
is reopened from the disk (its recovery runs) and checked: every acknowledged
instance has a journal row whose file holds exactly the acknowledged bytes, and no
row points at a missing or partial file.

Two cases: an edge that has run before (its spool folder is on the disk), and the very
first start, where the edge creates the spool folder itself. The second found a real
bug: the folder was made with mkdir(parents=True) and its parent never fsynced, so a
power cut could take the whole spool, journal included (now relay.edge.durable.make_dirs).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from bench.common import free_port, storescu_successes
from bench.ct_series import write_ct_series
from bench.edge_proc import EdgeProcess
from relay.edge.pdu_codec import file_meta_prefix
from relay.edge.slots import read_exactly
from relay.edge.spool import Spool
from tests.powerfs import PowerFS

COUNT = 300
SLOTS = {"relay_edge_spool_slots": "100", "relay_edge_spool_slot_kib": "64"}
"""A slot pool smaller than the series (64 KiB slots: the slices are ~8 KB), so a cut
can land under either way of writing: into a slot made ahead, or a new file."""
TRIALS = 3
SEED = 20261123
STORESCU_TIMEOUT_S = 120.0
MAX_EXTRA_DELAY_S = 0.003
"""After the chosen Success, the cut waits up to this long: it lands inside a store."""


@dataclass(frozen=True)
class Sent:
    """One file of the series as the edge must keep it once it answered Success."""

    sop_uid: str
    sha256: str
    """Of the Part 10 bytes the edge keeps: its file meta + the dataset as sent."""


def _dataset_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    (meta_length,) = struct.unpack("<I", raw[140:144])  # (0002,0000) after the preamble
    return raw[144 + meta_length:]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sent]:
    """300 small CT slices, always the same: file path -> what acknowledging it means."""
    folder = tmp_path_factory.mktemp("ct300")
    out = {}
    for path in write_ct_series(folder, count=COUNT, size=64, seed="power-loss"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kept = file_meta_prefix(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                                transfer_syntax=ds.file_meta.TransferSyntaxUID)
        out[str(path)] = Sent(str(ds.SOPInstanceUID),
                              hashlib.sha256(kept + _dataset_bytes(path)).hexdigest())
    return out


def mount_disk(tmp_path: Path, *folders: str) -> PowerFS:
    """A power-loss mount whose disk already holds ``folders`` (durably)."""
    disk = tmp_path / "disk"
    for folder in folders:
        (disk / folder).mkdir(parents=True)
    return PowerFS(mount=tmp_path / "mnt", backing=disk, scratch=tmp_path / "scratch")


@pytest.fixture
def powerfs(tmp_path: Path) -> Iterator[PowerFS]:
    """The data folder and the spool folder in it are on the disk: an edge ran before."""
    with mount_disk(tmp_path, "var/edge") as fs:
        yield fs


@pytest.fixture
def fresh_powerfs(tmp_path: Path) -> Iterator[PowerFS]:
    """Only the (installed) data folder is on the disk: the edge's first start."""
    with mount_disk(tmp_path, "var") as fs:
        yield fs


def send_and_cut(edge: EdgeProcess, fs: PowerFS, series: dict[str, Sent], *,
                 cut_after: int, delay_s: float) -> list[Sent]:
    """storescu -v the series; cut the power ``delay_s`` after the ``cut_after``-th
    Success. Returns the instances storescu got Success for (before or after the cut:
    a Success is a promise whenever it arrives)."""
    acknowledged: list[Sent] = []
    for path in storescu_successes(edge.port, series, calling_ae="POWER_CT",
                                   timeout_s=STORESCU_TIMEOUT_S):
        acknowledged.append(series[path])
        if len(acknowledged) == cut_after:
            time.sleep(delay_s)
            fs.cut_power()
            edge.kill9()  # the machine is off: the process goes with it
    return acknowledged


def journal_after_reboot(spool_root: Path) -> list[tuple[str, str, str]]:
    """Open the spool as the edge does after reboot (recovery runs); its rows."""
    with Spool(spool_root):
        pass
    conn = sqlite3.connect(f"file:{spool_root / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT sop_uid, sha256, path, size FROM instances").fetchall()
    finally:
        conn.close()


def problems_after_reboot(spool_root: Path, acknowledged: list[Sent]) -> tuple[int, list[str]]:
    """(journal rows, everything that breaks the promise behind a Success)."""
    if not (spool_root / "journal.sqlite3").is_file():
        return 0, [f"no journal on the disk after the cut ({len(acknowledged)} acknowledged)"]
    rows = journal_after_reboot(spool_root)
    journaled = {(uid, sha) for uid, sha, _, _ in rows}
    problems = [f"acknowledged, not journaled with its bytes: {sent.sop_uid}"
                for sent in acknowledged if (sent.sop_uid, sent.sha256) not in journaled]
    for _, sha256, rel, size in rows:
        path = spool_root / rel
        if not path.is_file():
            problems.append(f"journaled file missing: {rel}")
        elif hashlib.sha256(read_exactly(path, size)).hexdigest() != sha256:
            problems.append(f"journaled file partial or different: {rel}")
    return len(rows), problems


def trial_plan(trial: int) -> tuple[int, float]:
    rng = random.Random(f"{SEED}-{trial}")
    return rng.randint(1, COUNT - 20), rng.uniform(0.0, MAX_EXTRA_DELAY_S)


def power_cut_trial(series: dict[str, Sent], fs: PowerFS, log: Path, trial: int) -> list[str]:
    """One edge, one storescu, one cut; the problems found on the disk after it."""
    cut_after, delay_s = trial_plan(trial)
    edge = EdgeProcess(data_dir=fs.mount / "var", port=free_port(), log_path=log, **SLOTS)
    try:
        edge.wait_ready()
        acknowledged = send_and_cut(edge, fs, series, cut_after=cut_after, delay_s=delay_s)
    finally:
        if edge.proc.poll() is None:
            edge.kill9()
    rows, problems = problems_after_reboot(fs.backing / "var" / "edge", acknowledged)
    print(f"trial {trial}: cut {delay_s * 1000:.1f} ms after Success {cut_after}; "
          f"{len(acknowledged)} acknowledged, {rows} journaled after reboot; "
          f"{len(problems)} problems {problems[:3]}")
    assert cut_after <= len(acknowledged) < COUNT  # the cut came mid-transfer
    in_slots = sum(rel.startswith("slots/") for _, _, rel, _ in
                   journal_after_reboot(fs.backing / "var" / "edge"))
    print(f"trial {trial}: {in_slots} journaled instances were written into slots")
    assert in_slots > 0  # the ahead-of-time files were under the cut too
    return problems


@pytest.mark.parametrize("trial", range(TRIALS))
def test_every_acknowledged_instance_survives_power_cut(
    series: dict[str, Sent], powerfs: PowerFS, tmp_path: Path, trial: int,
    dcmtk: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    problems = power_cut_trial(series, powerfs, tmp_path / "edge.log", trial)

    assert problems == []


def test_acknowledged_instances_survive_power_cut_on_first_start(
    series: dict[str, Sent], fresh_powerfs: PowerFS, tmp_path: Path,
    dcmtk: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    problems = power_cut_trial(series, fresh_powerfs, tmp_path / "edge.log", trial=0)

    assert problems == []
