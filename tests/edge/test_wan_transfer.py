"""Bundle uploads over a bad link: cuts re-send at most one chunk, STAT preempts a
routine bundle between chunks, a restarted edge resumes the same bundle, the site's
rate cap accounts every stream. Real sockets through bench.linkemu where the link
matters. The stand-in county's hold (``CountyState.hold``) pins the moment a fault or
a STAT arrives to a chunk, so the tests assert order and outcome, never seconds; the
rates are measured by ``python -m bench.link_check`` and ``python -m bench.wan``."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bench.linkemu import LinkEmulator
from relay.config import Settings
from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.completeness import StudyPhase
from relay.edge.forward import Forwarder
from relay.edge.bundle_outbox import BundleOutbox, uploaded_bytes
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.helpers import wait_until
from tests.edge.standin_county import StandInCounty

CHUNK = 64 * 1024


def big_instance(seed: int, study_uid: str | None = None) -> bytes:
    """A 256x256 CT slice of noise (~128 KiB, incompressible), as Part 10 bytes."""
    ds = ct_dataset(seed=seed, study_uid=study_uid)
    ds.Rows = ds.Columns = 256
    ds.PixelData = np.random.default_rng(seed).integers(0, 4096, (256, 256)).astype(
        np.uint16).tobytes()
    return part10_bytes(ds)


def spool_big(spool: Spool, *, seed: int, priority: Priority = Priority.ROUTINE,
              study_uid: str | None = None) -> str:
    """Spool ``big_instance(seed)``; its SOP Instance UID."""
    data = big_instance(seed, study_uid)
    ids = read_ids(data)
    spool.store(data, ids=ids, priority=priority, calling_ae="CT1", peer="127.0.0.1:1")
    return ids.sop_uid


class Running:
    """A forwarder in a thread, stopped (and joined) by ``close``."""

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.stop = threading.Event()
        self.spool = spool
        self.forwarder = Forwarder(spool=spool, settings=settings, rng=random.Random(3))
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.spool.wake()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def wan_settings(edge_settings: Settings, standin_county: StandInCounty) -> Settings:
    return edge_settings.model_copy(update={
        "county_url": standin_county.url, "forward_encoding": "identity",
        "forward_chunk_bytes": CHUNK, "forward_streams": 1})


@pytest.fixture
def link(standin_county: StandInCounty) -> Iterator[LinkEmulator]:
    with LinkEmulator("127.0.0.1", standin_county.port, rate_bps=16e6, delay_s=0.005) as emu:
        yield emu


def _only_bundle_size(county: StandInCounty) -> int:
    (staged,) = county.state.bundles.values()
    return int(staged.meta["size"])


def test_each_cut_resends_at_most_one_chunk(
    spool: Spool, standin_county: StandInCounty, link: LinkEmulator, wan_settings: Settings
) -> None:
    uids = [spool_big(spool, seed=n) for n in range(16)]  # ~2 MiB: 33 chunks
    settings = wan_settings.model_copy(
        update={"county_url": f"http://127.0.0.1:{link.listen_port}"})
    county = standin_county.state
    county.hold(after=4)
    run = Running(spool, settings)
    try:
        cuts = 0
        for _ in range(3):  # every 4th chunk is cut while on the wire
            assert county.holding.wait(30)
            link.cut()
            cuts += 1
            if cuts < 3:
                county.hold(after=4)
            else:
                county.release()
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        county.release()
        run.close()
    size = _only_bundle_size(standin_county)
    assert sorted(county.sent_uids()) == sorted(uids)
    assert run.forwarder.bucket.taken <= size + cuts * CHUNK  # what the edge pushed
    assert county.patch_bytes() <= size + cuts * CHUNK


def test_link_down_for_a_while_then_everything_arrives(
    spool: Spool, standin_county: StandInCounty, link: LinkEmulator, wan_settings: Settings
) -> None:
    link.down()
    uids = [spool_big(spool, seed=n) for n in range(4)]
    settings = wan_settings.model_copy(
        update={"county_url": f"http://127.0.0.1:{link.listen_port}"})
    run = Running(spool, settings)
    try:
        assert wait_until(lambda: spool.counts().retrying == 4, timeout=60)
        assert spool.counts().pending == 4
        link.up()
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        run.close()
    assert sorted(standin_county.state.sent_uids()) == sorted(uids)


def test_stat_overtakes_a_routine_bundle_within_one_chunk(
    spool: Spool, standin_county: StandInCounty, wan_settings: Settings
) -> None:
    county = standin_county.state
    routine = [spool_big(spool, seed=n) for n in range(16)]
    county.hold(after=3)  # the routine bundle's third chunk waits at the county
    run = Running(spool, wan_settings)
    try:
        assert county.holding.wait(30)
        stat = spool_big(spool, seed=99, priority=Priority.STAT)
        stored_at = len(county.requests)  # requests the county answered before the STAT
        county.release()
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        county.release()
        run.close()
    requests = county.requests
    routine_id = next(r.bundle_id for r in requests if r.method == "PATCH")
    later = requests[stored_at:]
    stat_first = next(n for n, r in enumerate(later) if r.bundle_id not in (None, routine_id))
    late_routine = [r for r in later[:stat_first]
                    if r.method == "PATCH" and r.bundle_id == routine_id]
    assert len(late_routine) <= 1  # at most the chunk already on the wire
    assert county.sent_uids() == [stat, *routine]
    assert county.patch_bytes(routine_id) == int(
        county.bundles[str(routine_id)].meta["size"])  # resumed, not resent


def test_a_restarted_edge_resumes_the_same_bundle(
    edge_settings: Settings, standin_county: StandInCounty, wan_settings: Settings
) -> None:
    county = standin_county.state
    root: Path = edge_settings.edge_spool_dir
    spool = Spool(root)
    uids = [spool_big(spool, seed=n) for n in range(16)]
    county.hold(after=4)
    run = Running(spool, wan_settings)
    assert county.holding.wait(30)
    run.stop.set()  # the edge stops with its fourth chunk on the wire
    county.release()
    run.close()
    spool.close()
    outbox = BundleOutbox(root)
    (bundle,) = outbox.bundles()
    outbox.close()
    assert county.patch_bytes() < bundle.size  # stopped mid-bundle

    spool = Spool(root)  # the restarted edge
    run = Running(spool, wan_settings)
    try:
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        run.close()
        spool.close()
    assert list(county.bundles) == [bundle.bundle_id]  # the same bundle
    assert sorted(county.sent_uids()) == sorted(uids)
    assert county.patch_bytes() <= bundle.size + CHUNK


def test_the_rate_cap_holds_across_streams(
    spool: Spool, standin_county: StandInCounty, wan_settings: Settings
) -> None:
    for n in range(16):
        spool_big(spool, seed=n)
    settings = wan_settings.model_copy(update={
        "forward_rate_limit_bps": 8e6, "forward_streams": 2,
        "forward_bundle_max_bytes": 1024 * 1024})  # two bundles, both streams busy
    run = Running(spool, settings)
    try:
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        run.close()
    bucket = run.forwarder.bucket  # one bucket: every chunk of both streams went through it
    assert bucket.bytes_per_s == 1e6  # 8 Mbit/s; its pacing: test_forward, bench.link_check
    assert bucket.taken == standin_county.state.patch_bytes()
    assert len(standin_county.state.bundles) >= 2


def test_the_technician_sees_sending_percent_while_a_bundle_is_on_its_way(
    spool: Spool, standin_county: StandInCounty, wan_settings: Settings
) -> None:
    """One study in one bundle: before any instance is confirmed, the page's row says
    "sending" with the share of bytes the county already holds; 100 % only at the end."""
    county = standin_county.state
    study_uid = "1.2.826.0.1.3680043.8.498.77"
    for n in range(16):
        spool_big(spool, seed=n, study_uid=study_uid)  # ~2 MiB: 33 chunks of 64 KiB
    today = datetime.now(UTC) - timedelta(hours=1)

    def row() -> tuple[StudyPhase, int, int]:
        (study,) = spool.studies(since=today, uploading=uploaded_bytes(spool.root))
        return study.phase, study.percent_sent, study.sent

    seen: list[tuple[StudyPhase, int, int]] = [row()]
    county.hold(after=8)
    run = Running(spool, wan_settings)
    try:
        for _ in range(3):  # look at chunks 8, 16 and 24, each held at the county
            assert county.holding.wait(30)
            seen.append(row())
            county.hold(after=8)
        county.release()
        assert wait_until(lambda: spool.counts().pending == 0, timeout=60)
    finally:
        county.release()
        run.close()
    assert [(phase, sent) for phase, _, sent in seen[1:]] == [(StudyPhase.SENDING, 0)] * 3
    assert 20 <= seen[1][1] < seen[2][1] < seen[3][1] <= 90  # grows chunk by chunk
    assert row() == (StudyPhase.AT_COUNTY, 100, 16)
