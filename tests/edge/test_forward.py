"""The forwarder packs spooled instances into bundles, uploads them in chunks to a
(stand-in) county over real HTTP, marks them sent only on a 200 to complete with
their outcomes, and otherwise keeps, retries or repacks them."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from relay.config import Settings
from relay.dicom.bundle import decode_bundle
from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.forward import Forwarder, pack, retry_delay
from relay.edge.bundle_outbox import BundleOutbox
from relay.edge.ratelimit import RoutineWindow, TokenBucket
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.helpers import journal_rows, wait_until
from tests.edge.standin_county import StandInCounty


def spool_instance(spool: Spool, priority: Priority = Priority.ROUTINE, seed: int = 0) -> str:
    data = part10_bytes(ct_dataset(seed=seed))
    ids = read_ids(data)
    spool.store(data, ids=ids, priority=priority, calling_ae="TOWNSHIP_DR",
                peer="127.0.0.1:40000")
    return ids.sop_uid


@pytest.fixture
def forward_settings(edge_settings: Settings, standin_county: StandInCounty) -> Settings:
    return edge_settings.model_copy(update={"county_url": standin_county.url})


class ForwarderRun:
    """A forwarder thread the test starts once it has spooled what it wants."""

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.spool, self.settings = spool, settings
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.forwarder: Forwarder | None = None

    def start(self, **settings: object) -> Forwarder:
        self.forwarder = Forwarder(spool=self.spool,
                                   settings=self.settings.model_copy(update=settings),
                                   rng=random.Random(7))
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop,), daemon=True)
        self.thread.start()
        return self.forwarder

    def close(self) -> None:
        self.stop.set()
        self.spool.wake()
        if self.thread is not None:
            self.thread.join(10)
            assert not self.thread.is_alive()


@pytest.fixture
def forwarding(spool: Spool, forward_settings: Settings) -> Iterator[ForwarderRun]:
    run = ForwarderRun(spool, forward_settings)
    yield run
    run.close()


def _rows_by_uid(spool: Spool) -> dict[str, dict[str, object]]:
    return {str(r["sop_uid"]): r for r in journal_rows(spool.root)}


def test_instances_travel_in_one_bundle_bit_exact_and_are_marked_sent(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    uids = [spool_instance(spool, seed=n) for n in range(5)]
    forwarding.start()

    assert wait_until(lambda: spool.counts().pending == 0)
    rows = _rows_by_uid(spool)
    assert sorted(standin_county.state.sent_uids()) == sorted(uids)
    (staged,) = standin_county.state.bundles.values()
    assert staged.meta["encoding"] == "zstd" and staged.meta["priority"] == "routine"
    for header, data in decode_bundle(bytes(staged.data), encoding="zstd"):
        row = rows[header.sop_uid]
        assert data == (spool.root / str(row["path"])).read_bytes()
        assert (header.calling_ae, header.received_at) == ("TOWNSHIP_DR", row["received_at"])
    assert {(r["state"], r["county_outcome"]) for r in rows.values()} == {("sent", "stored")}
    assert wait_until(lambda: list((spool.root / "outbox").iterdir()) == [])


def test_identity_encoding_and_small_chunks_reassemble(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    for n in range(40):
        spool_instance(spool, seed=n)
    forwarding.start(forward_encoding="identity", forward_chunk_bytes=64 * 1024)

    assert wait_until(lambda: spool.counts().pending == 0)
    sizes = [int(b.meta["size"]) for b in standin_county.state.bundles.values()]
    patches = [r for r in standin_county.state.requests if r.method == "PATCH"]
    assert len(patches) == sum(-(-size // (64 * 1024)) for size in sizes)
    assert standin_county.state.patch_bytes() == sum(sizes)


def test_503_for_a_while_loses_nothing_and_drains_after(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    standin_county.state.always = 503
    uids = [spool_instance(spool, seed=n) for n in range(10)]
    forwarding.start()
    assert wait_until(lambda: len(standin_county.state.requests) >= 3)
    uids += [spool_instance(spool, seed=100 + n) for n in range(10)]  # the spool grows
    assert spool.counts().pending == 20 and spool.counts().sent == 0
    assert "HTTP 503" in str(spool.counts().last_error)

    standin_county.state.always = None
    assert wait_until(lambda: spool.counts().pending == 0)
    assert sorted(standin_county.state.sent_uids()) == sorted(uids)


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_refused_bundle_is_never_marked_sent(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun, status: int
) -> None:
    standin_county.state.always = status
    uid = spool_instance(spool)
    forwarding.start()

    assert wait_until(lambda: len(standin_county.state.requests) >= 3)
    row = _rows_by_uid(spool)[uid]
    assert row["state"] == "spooled" and row["sent_at"] is None
    assert str(row["last_error"]).startswith(f"HTTP {status}")


def test_422_at_complete_repacks_from_the_spool(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    standin_county.state.complete_scripted.append(422)
    uids = [spool_instance(spool, seed=n) for n in range(3)]
    forwarding.start()

    assert wait_until(lambda: spool.counts().pending == 0)
    completes = [r for r in standin_county.state.requests if r.path.endswith("/complete")]
    assert [r.status for r in completes] == [422, 200]
    assert completes[0].bundle_id != completes[1].bundle_id  # a new bundle, rebuilt
    assert sorted(standin_county.state.sent_uids()) == sorted(uids)
    assert wait_until(lambda: list((spool.root / "outbox").iterdir()) == [])


def test_stat_goes_before_routine(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    routine = [spool_instance(spool, seed=n) for n in range(3)]
    stat = spool_instance(spool, Priority.STAT, seed=9)
    forwarding.start(forward_streams=1)

    assert wait_until(lambda: spool.counts().pending == 0)
    assert standin_county.state.sent_uids() == [stat, *routine]


def test_an_unusable_spool_file_is_kept_pending_and_the_rest_goes(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    bad = spool_instance(spool, seed=1)
    good = spool_instance(spool, seed=2)
    path = spool.root / str(_rows_by_uid(spool)[bad]["path"])
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    forwarding.start()

    assert wait_until(lambda: standin_county.state.sent_uids() == [good])
    row = _rows_by_uid(spool)[bad]
    assert row["state"] == "spooled" and "unusable" in str(row["last_error"])


def test_outbox_drops_unrecorded_files_and_keeps_recorded_bundles(spool: Spool) -> None:
    spool_instance(spool)
    outbox = BundleOutbox(spool.root)
    bundle, unusable = outbox.build(spool.next_batch(5), priority=Priority.ROUTINE,
                                    encoding="zstd")
    outbox.close()
    assert bundle is not None and unusable == []
    (spool.root / "outbox" / "stray.bundle").write_bytes(b"x")  # built, never recorded
    (spool.root / "outbox" / "half.part").write_bytes(b"x")

    reopened = BundleOutbox(spool.root)
    assert [b.bundle_id for b in reopened.bundles()] == [bundle.bundle_id]
    assert reopened.bundles()[0].sha256 == bundle.sha256
    assert sorted(p.name for p in (spool.root / "outbox").iterdir()) == [
        f"{bundle.bundle_id}.bundle"]
    reopened.close()


def test_pack_keeps_one_priority_and_the_caps(spool: Spool) -> None:
    for n in range(4):
        spool_instance(spool, seed=n)
    spool_instance(spool, Priority.STAT, seed=5)
    entries = spool.next_batch(10)
    assert [e.priority for e in pack(entries, max_bytes=10**9, max_count=10)] == [Priority.STAT]
    routine = entries[1:]
    assert len(pack(routine, max_bytes=10**9, max_count=2)) == 2
    assert len(pack(routine, max_bytes=routine[0].size + 1, max_count=10)) == 1
    assert len(pack(routine, max_bytes=1, max_count=10)) == 1  # a big one travels alone


def test_routine_waits_for_its_window_while_stat_goes(
    spool: Spool, forward_settings: Settings
) -> None:
    now = datetime.now(UTC).astimezone(RoutineWindow.parse("00:00-01:00", zone="UTC").zone)
    opens = (now + timedelta(hours=2)).strftime("%H:%M")
    closes = (now + timedelta(hours=3)).strftime("%H:%M")
    settings = forward_settings.model_copy(
        update={"forward_routine_window": f"{opens}-{closes}", "timezone": "UTC"})
    spool_instance(spool)
    forwarder = Forwarder(spool=spool, settings=settings)
    assert forwarder.claim_next() is None
    spool_instance(spool, Priority.STAT, seed=3)
    bundle = forwarder.claim_next()
    assert bundle is not None and bundle.priority == Priority.STAT
    forwarder.outbox.close()


def test_routine_window_wraps_midnight() -> None:
    window = RoutineWindow.parse("22:00-06:00", zone="Asia/Shanghai")
    assert window is not None
    at = lambda h: datetime(2026, 1, 1, h, 30, tzinfo=window.zone)  # noqa: E731
    assert [window.is_open(at(h)) for h in (21, 22, 23, 0, 5, 6, 12)] == [
        False, True, True, True, True, False, False]


def test_token_bucket_accounts_and_paces_without_real_sleeping() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    bucket = TokenBucket(8e6, clock=lambda: clock[0], sleep=sleep)  # 1 MB/s
    for _ in range(100):
        bucket.take(64 * 1024)
    assert bucket.taken == 100 * 64 * 1024
    expected = (bucket.taken - bucket.capacity) / 1e6
    assert expected * 0.99 <= clock[0] <= expected * 1.01


def test_retry_delay_doubles_with_jitter_within_bounds() -> None:
    rng = random.Random(1)
    delays = [retry_delay(attempts=n, lo=1.0, hi=60.0, rng=rng) for n in range(1, 12)]

    assert all(1.0 <= d <= 60.0 for d in delays)
    assert delays[0] == 1.0
    assert 4.0 <= delays[3] <= 8.0  # fourth failure: between half and all of 8 s
    assert all(d >= 30.0 for d in delays[7:])  # capped: 60 s with jitter
