"""The whole edge agent: a modality (DCMTK storescu) sends, the agent spools and
forwards to a (stand-in) county, `edge status` reports it, and it stops cleanly."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from relay.config import Settings
from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.agent import edge_status, run_edge
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, ecg_dataset, part10_bytes, write_part10
from tests.edge.helpers import wait_until
from tests.edge.standin_county import TOKEN, StandInCounty

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_agent_receives_spools_forwards_and_stops(
    edge_settings: Settings, standin_county: StandInCounty, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    settings = edge_settings.model_copy(
        update={"county_url": standin_county.url, "edge_port": _free_port()})
    stop = threading.Event()
    agent = threading.Thread(target=run_edge, args=(settings,), kwargs={"stop": stop})
    agent.start()
    try:
        assert wait_until(
            lambda: dcmtk("echoscu", "127.0.0.1", str(settings.edge_port)).returncode == 0)
        files = [write_part10(ct_dataset(), tmp_path / "ct.dcm"),
                 write_part10(ecg_dataset(), tmp_path / "ecg.dcm")]
        sent = dcmtk("storescu", "127.0.0.1", str(settings.edge_port), *map(str, files))
        assert sent.returncode == 0, sent.stderr

        assert wait_until(lambda: len(standin_county.state.sent_uids()) == 2)
        assert wait_until(lambda: edge_status(settings)["sent"] == 2)
        status = edge_status(settings)
        assert (status["pending"], status["journal"]) == (0, "ok")
        assert status["oldest_pending_age_s"] is None
    finally:
        stop.set()
        agent.join(15)
    assert not agent.is_alive()
    with Spool(settings.edge_spool_dir):  # the folder lock was released
        pass


def test_edge_status_before_the_agent_ever_ran(edge_settings: Settings) -> None:
    status = edge_status(edge_settings)

    assert (status["journal"], status["pending"], status["sent"]) == ("missing", 0, 0)
    assert TOKEN not in str(status)  # never the credential


def test_edge_status_reports_pending_instances_while_the_spool_is_open(
    edge_settings: Settings, spool: Spool
) -> None:
    data = part10_bytes(ct_dataset())
    spool.store(data, ids=read_ids(data), priority=Priority.STAT, calling_ae="X", peer="p")
    status = edge_status(edge_settings)

    assert (status["pending"], status["pending_bytes"]) == (1, len(data))
    assert status["oldest_pending_age_s"] >= 0


def test_agent_serves_the_worklist_on_its_services_port_with_the_county_unreachable(
    edge_settings: Settings, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    from relay.edge.orders import OrderCache
    from tests.edge.mwl import SITE, findscu, mwl_query, sample_orders

    settings = edge_settings.model_copy(update={
        "edge_port": _free_port(), "edge_services_port": _free_port(), "edge_site": SITE,
        "timezone": "Asia/Shanghai", "county_url": "http://127.0.0.1:9"})
    OrderCache(settings.edge_spool_dir).replace_from_county(sample_orders(), etag='"v1"')  # synced before
    stop = threading.Event()
    agent = threading.Thread(target=run_edge, args=(settings,), kwargs={"stop": stop})
    agent.start()
    try:
        port = str(settings.edge_services_port)
        assert wait_until(lambda: dcmtk("echoscu", "-aec", "RELAY_EDGE", "127.0.0.1", port).returncode == 0,
                          timeout=30)
        found = findscu(dcmtk, settings.edge_services_port, mwl_query(charset="GB18030", PatientName="王*"),
                        tmp_path / "mwl")
        assert found.completed.returncode == 0, found.completed.stderr
        assert [str(d.AccessionNumber) for d in found.datasets()] == ["A001"]
    finally:
        stop.set()
        agent.join(15)
    assert not agent.is_alive()
