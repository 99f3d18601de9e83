"""WAN faults against a real edge process: `python -m relay edge` receives a 40-slice
CT from DCMTK storescu and forwards it through bench.linkemu (8 Mbit/s) to the
stand-in county. The edge is killed with SIGKILL in the middle of a bundle upload and
restarted; or the link flaps under the upload. Either way every acknowledged instance
reaches the county once, byte for byte, and each interruption re-sends at most one
chunk (the stand-in counts every chunk byte that reached it, also of chunks cut short).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_dataset, read_preamble

from bench.common import free_port
from bench.ct_series import write_ct_series
from bench.edge_proc import EdgeProcess
from bench.linkemu import LinkEmulator
from relay.edge.journal import SpoolState
from tests.edge.factories import dataset_part
from tests.edge.helpers import journal_rows, wait_until
from tests.edge.standin_county import TOKEN, StandInCounty

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]

COUNT = 40
SLICE = 320
"""320 x 320 16-bit pixels: ~205 KB per instance, ~8 MB the study (~6.5 MB in zstd)."""
CHUNK = 256 * 1024
RATE_BPS = 8e6
"""8 Mbit/s: ~1 MB/s, so the study takes ~6-7 s on the link and a fault lands mid-bundle."""
HALF_A_CHUNK_S = CHUNK * 8 / RATE_BPS / 2
ARRIVAL_TIMEOUT_S = 40.0


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 40 slices, always the same; SOP Instance UID -> file."""
    paths = write_ct_series(tmp_path_factory.mktemp("ct40"), count=COUNT, size=SLICE,
                            seed="wan-faults")
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}


@pytest.fixture
def standin(standin_county: StandInCounty) -> StandInCounty:
    """The stand-in county (named apart from the root conftest's ``county``, the real app)."""
    return standin_county


@pytest.fixture
def link(standin: StandInCounty) -> Iterator[LinkEmulator]:
    with LinkEmulator("127.0.0.1", standin.port, rate_bps=RATE_BPS,
                      delay_s=0.01) as emu:
        yield emu


class EdgeRun:
    """The edge of one test (data under tmp_path, one port), restartable, always stopped."""

    def __init__(self, tmp_path: Path, link: LinkEmulator) -> None:
        self.data_dir, self.log_path = tmp_path / "var", tmp_path / "edge.log"
        self.port, self.link = free_port(), link
        self.procs: list[EdgeProcess] = []

    @property
    def spool_root(self) -> Path:
        return self.data_dir / "edge"

    def start(self) -> EdgeProcess:
        edge = EdgeProcess(
            data_dir=self.data_dir, port=self.port, log_path=self.log_path,
            relay_county_url=f"http://127.0.0.1:{self.link.listen_port}",
            relay_edge_site_token=TOKEN, relay_edge_study_quiet_s="0.5",
            relay_forward_chunk_bytes=str(CHUNK), relay_forward_retry_min="0.05",
            relay_forward_retry_max="0.5", relay_forward_timeout="5",
            relay_edge_min_free_bytes="0", relay_log_level="INFO")
        self.procs.append(edge)
        edge.wait_ready()
        return edge

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        for edge in self.procs:
            edge.stop(timeout=10)


@pytest.fixture
def edge(tmp_path: Path, link: LinkEmulator) -> Iterator[EdgeRun]:
    run = EdgeRun(tmp_path, link)
    try:
        yield run
    finally:
        run.close()


def send_study(dcmtk: Dcmtk, edge: EdgeRun, series: dict[str, Path]) -> None:
    """storescu the whole series; every instance must be acknowledged (Success)."""
    done = dcmtk("storescu", "-v", "-aet", "WAN_CT", "-aec", "RELAY_EDGE", "127.0.0.1",
                 str(edge.port), *map(str, series.values()))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    assert output.count("Received Store Response (Success)") == COUNT, output[-2000:]


def bundle_sizes(county: StandInCounty) -> dict[str, int]:
    with county.state.lock:
        return {bid: int(staged.meta["size"]) for bid, staged in county.state.bundles.items()}


def resent_bytes(county: StandInCounty) -> dict[str, int]:
    """Chunk bytes that reached the county beyond each bundle's size (re-sent bytes)."""
    return {bid: county.state.patch_bytes(bid) - size
            for bid, size in bundle_sizes(county).items()}


def cut_short(county: StandInCounty) -> list[int]:
    """Byte counts of the chunks that reached the county only in part."""
    with county.state.lock:
        return [r.nbytes for r in county.state.requests
                if r.method == "PATCH" and r.status in (0, 400)]


def _dataset_bytes(part10: bytes) -> bytes:
    """The bytes after the file meta group (what storescu sent, unchanged)."""
    fp = io.BytesIO(part10)
    read_preamble(fp, False)
    read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                 stop_when=lambda tag, vr, length: tag.group != 2)
    return part10[fp.tell():]


def assert_all_at_county_once(county: StandInCounty, edge: EdgeRun,
                              series: dict[str, Path]) -> None:
    """Every acknowledged instance is at the county once, with the bytes the edge
    journaled and the dataset bytes storescu sent; the edge's journal says 'stored'
    (never 'duplicate': nothing was packed or ingested twice)."""
    arrivals = county.state.sent_uids()
    assert sorted(arrivals) == sorted(series)  # each UID stored exactly once
    assert wait_until(lambda: all(r["state"] == SpoolState.SENT
                                  for r in journal_rows(edge.spool_root)), timeout=10)
    rows = {r["sop_uid"]: r for r in journal_rows(edge.spool_root)}
    assert sorted(rows) == sorted(series)
    with county.state.lock:
        stored = dict(county.state.stored)
    assert len(stored) == COUNT
    for uid, path in series.items():
        row = rows[uid]
        data = stored[(uid, row["sha256"])]
        assert hashlib.sha256(data).hexdigest() == row["sha256"], uid
        assert _dataset_bytes(data) == dataset_part(path), uid
        assert row["county_outcome"] == "stored", uid
    assert all(staged.results is not None for staged in county.state.bundles.values())


@pytest.mark.parametrize("power_cut", [False, True], ids=["process-killed", "power-cut"])
def test_kill_9_mid_upload_resumes_and_resends_at_most_one_chunk_per_bundle(
    standin: StandInCounty, link: LinkEmulator, edge: EdgeRun, series: dict[str, Path],
    dcmtk: Dcmtk, power_cut: bool
) -> None:
    """SIGKILL alone leaves the edge's kernel to deliver what the edge had written (a
    chunk already in the socket buffers still arrives whole); with ``power_cut`` the
    edge's connections die with it, as when the PC loses power, and the county is
    left holding part of a chunk."""
    first = edge.start()
    send_study(dcmtk, edge, series)
    assert wait_until(lambda: standin.state.patch_bytes() >= 3 * CHUNK,
                      timeout=20), edge.log()
    time.sleep(HALF_A_CHUNK_S)  # a chunk was just held: the next one is half on its way
    first.kill9()
    if power_cut:
        link.cut()
    assert standin.state.sent_uids() == []  # killed mid-bundle: nothing completed
    announced = set(bundle_sizes(standin))
    assert 0 < standin.state.patch_bytes() < sum(bundle_sizes(standin).values())

    edge.start()
    assert wait_until(lambda: len(standin.state.sent_uids()) == COUNT,
                      timeout=ARRIVAL_TIMEOUT_S), edge.log()

    assert_all_at_county_once(standin, edge, series)
    assert all(standin.state.bundles[b].results for b in announced)  # resumed, not rebuilt
    if power_cut:
        assert cut_short(standin), "the power cut did not land in the middle of a chunk"
    resent = resent_bytes(standin)
    assert all(0 <= extra <= CHUNK for extra in resent.values()), resent  # one kill each


def test_a_flapping_link_loses_nothing_and_resends_at_most_one_chunk_per_cut(
    standin: StandInCounty, link: LinkEmulator, edge: EdgeRun,
    series: dict[str, Path], dcmtk: Dcmtk
) -> None:
    edge.start()
    send_study(dcmtk, edge, series)
    assert wait_until(lambda: standin.state.patch_bytes() >= CHUNK,
                      timeout=20), edge.log()
    assert standin.state.sent_uids() == []  # the flaps start mid-upload
    link.flap(period_s=1.5, down_s=0.4, count=4).result(timeout=15)
    cuts = link.stats().cuts
    assert wait_until(lambda: len(standin.state.sent_uids()) == COUNT,
                      timeout=ARRIVAL_TIMEOUT_S), edge.log()

    assert_all_at_county_once(standin, edge, series)
    assert cuts >= 4  # every flap cut at least one open connection
    resent = resent_bytes(standin)
    assert all(extra >= 0 for extra in resent.values()), resent
    assert sum(resent.values()) <= cuts * CHUNK, (resent, cuts)
