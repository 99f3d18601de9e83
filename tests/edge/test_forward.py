"""The forwarder sends spooled instances to a (stand-in) county over real HTTP, marks
them sent only on a 200 with an outcome, and otherwise keeps and retries them."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from relay.config import Settings
from relay.dicom import wire
from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.forward import Forwarder, retry_delay, start_forwarder
from relay.edge.spool import Spool, utc_now
from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.helpers import journal_rows, wait_until
from tests.edge.standin_county import TOKEN, StandInCounty


def _spool_instance(spool: Spool, priority: Priority = Priority.ROUTINE) -> str:
    data = part10_bytes(ct_dataset())
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

    def start(self) -> None:
        self.thread = start_forwarder(spool=self.spool, settings=self.settings,
                                      stop=self.stop, rng=random.Random(7))

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


def test_instances_are_sent_with_the_wire_headers_and_marked_sent(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    uids = [_spool_instance(spool), _spool_instance(spool, Priority.STAT)]
    forwarding.start()

    assert wait_until(lambda: spool.counts().pending == 0)
    rows = _rows_by_uid(spool)
    assert sorted(standin_county.state.sent_uids()) == sorted(uids)
    for request in standin_county.state.requests:
        row = rows[str(request.sop_uid)]
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["content-type"] == wire.DICOM_MEDIA_TYPE
        assert headers[wire.HEADER_SHA256.lower()] == row["sha256"]
        assert headers[wire.HEADER_PRIORITY.lower()] == row["priority"]
        assert headers[wire.HEADER_CALLING_AE.lower()] == "TOWNSHIP_DR"
        assert headers[wire.HEADER_RECEIVED_AT.lower()] == row["received_at"]
        assert request.body == (spool.root / str(row["path"])).read_bytes()
    assert {(r["state"], r["county_outcome"], r["attempts"]) for r in rows.values()} == {
        ("sent", "stored", 1)}
    assert all((spool.root / str(r["path"])).is_file() for r in rows.values())  # kept


def test_503_is_retried_until_the_county_takes_the_instance(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    standin_county.state.scripted.extend([503, 503])
    uid = _spool_instance(spool)
    forwarding.start()

    assert wait_until(lambda: spool.counts().pending == 0)
    row = _rows_by_uid(spool)[uid]
    assert [r.status for r in standin_county.state.requests] == [503, 503, 200]
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", 3, None)


@pytest.mark.parametrize("status", [401, 403, 413, 422, 500])
def test_a_refused_instance_is_never_marked_sent(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun, status: int
) -> None:
    standin_county.state.always = status
    uid = _spool_instance(spool)
    forwarding.start()

    assert wait_until(lambda: len(standin_county.state.requests) >= 3)
    row = _rows_by_uid(spool)[uid]
    assert row["state"] == "spooled" and row["sent_at"] is None
    assert int(str(row["attempts"])) >= 2
    assert str(row["last_error"]).startswith(f"HTTP {status}")
    assert spool.counts().pending == 1


def test_a_200_without_an_outcome_is_not_taken_as_delivery(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    standin_county.state.raw_200_body = b"<html>proxy login</html>"
    uid = _spool_instance(spool)
    forwarding.start()

    assert wait_until(lambda: len(standin_county.state.requests) >= 2)
    assert _rows_by_uid(spool)[uid]["state"] == "spooled"


def test_no_county_at_all_keeps_the_instance_and_retries(
    spool: Spool, edge_settings: Settings
) -> None:
    uid = _spool_instance(spool)
    forwarder = Forwarder(spool=spool, settings=edge_settings)  # county_url: closed port
    try:
        for _ in range(3):
            result = forwarder.forward_entry(spool.next_batch(1, now=_far_future())[0])
            assert result.outcome is None and result.link_down
    finally:
        forwarder.client.close()
    row = _rows_by_uid(spool)[uid]
    assert (row["state"], row["attempts"]) == ("spooled", 3)
    assert "ConnectError" in str(row["last_error"])


def _far_future() -> datetime:
    return utc_now() + timedelta(days=1)


def test_stat_instances_are_sent_before_routine_ones(
    spool: Spool, standin_county: StandInCounty, forwarding: ForwarderRun
) -> None:
    routine = [_spool_instance(spool) for _ in range(3)]
    stat = _spool_instance(spool, Priority.STAT)
    forwarding.start()

    assert wait_until(lambda: spool.counts().pending == 0)
    assert standin_county.state.sent_uids() == [stat, *routine]


def test_retry_delay_doubles_with_jitter_within_bounds() -> None:
    rng = random.Random(1)
    delays = [retry_delay(attempts=n, lo=1.0, hi=60.0, rng=rng) for n in range(1, 12)]

    assert all(1.0 <= d <= 60.0 for d in delays)
    assert delays[0] == 1.0
    assert 4.0 <= delays[3] <= 8.0  # fourth failure: between half and all of 8 s
    assert all(d >= 30.0 for d in delays[7:])  # capped: 60 s with jitter
