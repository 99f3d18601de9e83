"""Report pickup at the edge: per report, per destination, persisted, each with its own
backoff. The county is a stand-in for its report routes (tests/edge/standin_reports.py);
the township PACS are real DCMTK storescp processes, one file per reception (``+uf``),
so a report stored twice shows as two files."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import Settings
from relay.edge.http import county_client
from relay.edge.report_state import ReportState
from relay.edge.report_pickup import deliver_round, local_reports, parse_destinations, start_pickup
from tests.edge.helpers import wait_until
from tests.edge.standin_reports import StandInReports
from tests.processes import base_env
from tests.servers import free_port


class Pacs:
    """DCMTK storescp as a township PACS on ``port``, writing every reception to ``folder``."""

    def __init__(self, folder: Path, ae_title: str, port: int | None = None) -> None:
        self.folder, self.ae_title, self.port = folder, ae_title, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> Pacs:
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["storescp", "+uf", "+xa", "-aet", self.ae_title, "-od",
                                      str(self.folder), str(self.port)], env=base_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        assert wait_until(listening, timeout=30), f"storescp {self.ae_title} did not start"
        return self

    def received(self) -> int:
        """Instances received so far (one file each, also for a repeat)."""
        return len([p for p in self.folder.iterdir() if p.is_file()]) if self.folder.exists() else 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def reports() -> Iterator[StandInReports]:
    standin = StandInReports()
    yield standin
    standin.close()


@pytest.fixture
def pacs_list() -> Iterator[list[Pacs]]:
    started: list[Pacs] = []
    yield started
    for pacs in started:
        pacs.stop()


def _settings(edge_settings: Settings, reports: StandInReports, *pacs: Pacs) -> Settings:
    return edge_settings.model_copy(update={
        "county_url": reports.url, "edge_report_poll_s": 0.05, "edge_report_retry_max_s": 0.2,
        "edge_report_destinations": ",".join(p.destination for p in pacs)})


def _rounds(settings: Settings, n: int) -> None:
    destinations = parse_destinations(settings.edge_report_destinations)
    with county_client(settings) as client:
        for _ in range(n):
            deliver_round(client, settings, destinations)
            time.sleep(0.05)


def test_a_report_whose_fetch_fails_does_not_hold_up_the_critical_one_behind_it(
    edge_settings: Settings, reports: StandInReports, pacs_list: list[Pacs], tmp_path: Path
) -> None:
    reports.state.offer(1, critical=True)
    reports.state.offer(2, critical=True)
    reports.state.failing.add(1)
    pacs = Pacs(tmp_path / "pacs", "TOWNPACS").start()
    pacs_list.append(pacs)
    settings = _settings(edge_settings, reports, pacs)
    destinations = parse_destinations(settings.edge_report_destinations)
    with county_client(settings) as client:
        assert deliver_round(client, settings, destinations) == 1
    assert reports.state.delivered == [2]
    assert pacs.received() == 2
    assert [item["delivery_id"] for item in local_reports(settings)] == [2]

    reports.state.failing.clear()  # the county serves the first one again
    assert wait_until(lambda: (_rounds(settings, 1), 1 in reports.state.delivered)[1], timeout=30)
    assert sorted(reports.state.delivered) == [1, 2] and pacs.received() == 4


def test_with_one_destination_down_the_other_gets_each_report_once_and_the_down_one_later(
    edge_settings: Settings, reports: StandInReports, pacs_list: list[Pacs], tmp_path: Path
) -> None:
    for delivery_id in (1, 2, 3):
        reports.state.offer(delivery_id, critical=delivery_id == 3)
    up = Pacs(tmp_path / "up", "PACS_UP").start()
    down = Pacs(tmp_path / "down", "PACS_DOWN")  # not started: nothing listens there
    pacs_list.extend([up, down])
    settings = _settings(edge_settings, reports, up, down)

    _rounds(settings, 5)
    assert up.received() == 6  # 3 reports x (SR + PDF), once each across 5 polls
    assert reports.state.delivered == []  # not confirmed while a destination lacks them

    down.start()
    assert wait_until(lambda: (_rounds(settings, 1), len(reports.state.delivered) == 3)[1],
                      timeout=30)
    _rounds(settings, 3)
    assert down.received() == 6 and up.received() == 6
    assert sorted(reports.state.delivered) == [1, 2, 3]


def test_delivery_state_survives_an_edge_restart(
    edge_settings: Settings, reports: StandInReports, pacs_list: list[Pacs], tmp_path: Path
) -> None:
    """The edge's pickup loop stored a report at the PACS that is up, then the edge
    restarts: the restarted edge does not store it there again, and confirms it once
    the other PACS has it too."""
    reports.state.offer(1, critical=True)
    up = Pacs(tmp_path / "up", "PACS_UP").start()
    down = Pacs(tmp_path / "down", "PACS_DOWN")
    pacs_list.extend([up, down])
    settings = _settings(edge_settings, reports, up, down)

    stop = threading.Event()
    thread = start_pickup(settings, stop)
    assert wait_until(lambda: up.received() == 2, timeout=30)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    with ReportState(settings.edge_spool_dir) as state:  # what the restarted edge reads
        assert [item["delivery_id"] for item in state.open_deliveries()] == [1]

    down.start()
    stop = threading.Event()
    thread = start_pickup(settings, stop)
    try:
        assert wait_until(lambda: reports.state.delivered == [1], timeout=30)
        time.sleep(0.3)  # a few more polls
    finally:
        stop.set()
        thread.join(30)
    assert up.received() == 2 and down.received() == 2
    assert reports.state.delivered == [1]


def test_a_report_the_county_lists_again_is_confirmed_again_but_not_stored_again(
    edge_settings: Settings, reports: StandInReports, pacs_list: list[Pacs], tmp_path: Path
) -> None:
    """The county lost the confirmation (a restore, say) and lists the report again:
    the edge confirms it again; the PACS that holds it is not sent it a second time."""
    reports.state.offer(1)
    pacs = Pacs(tmp_path / "pacs", "TOWNPACS").start()
    pacs_list.append(pacs)
    settings = _settings(edge_settings, reports, pacs)
    _rounds(settings, 2)
    assert reports.state.delivered == [1] and pacs.received() == 2
    reports.state.delivered.clear()
    _rounds(settings, 3)
    assert reports.state.delivered == [1] and pacs.received() == 2
