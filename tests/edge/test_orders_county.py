"""The edge's orders with the real county (uvicorn on PostgreSQL): the edge keeps its own
site's orders (304 while unchanged) and drops a cancelled one from the worklist; an order
registered at the township with the WAN down is on the worklist at once, waits as 待上传,
and reaches the county exactly once when the WAN is back, audited under the technician."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from relay.config import Settings
from relay.county.db.models import AuditEvent
from relay.county.db.models import Order as OrderRow
from relay.county.orders.service import cancel_order, upsert_order
from relay.edge.admission import Alarms
from relay.edge.http import county_client
from relay.edge.orders import OrderCache, Origin, UploadState, start_sync, sync_once, upload_due
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from relay.edge.technicians import TechnicianCache
from relay.edge.technicians import sync_once as sync_technicians
from tests.county.test_delivery import SITE_TECHNICIAN, site_token
from tests.county.test_dicomweb import server  # noqa: F401 - the county under uvicorn
from tests.county.test_edge_orders import his_order
from tests.edge.helpers import wait_until
from tests.edge.mwl import findscu, mwl_query, pynetdicom_find, running_worklist
from tests.edge.techpage import PASSWORD, form_token, logged_in
from tests.edge.test_registration_page import FORM
from tests.factories import make_site

UNREACHABLE = "http://127.0.0.1:9"


def _edge(edge_settings: Settings, server: str, county) -> tuple[Settings, Settings]:  # noqa: F811
    token = site_token(county)["Authorization"].removeprefix("Bearer ")
    up = edge_settings.model_copy(update={"county_url": server, "edge_site_token": token, "edge_site": "township-a",
                                          "edge_site_code": "XZA", "timezone": "Asia/Shanghai",
                                          "edge_order_sync_s": 0.2})
    return up, up.model_copy(update={"county_url": UNREACHABLE})


def _accessions(port: int, **query: str) -> list[str]:
    answers = pynetdicom_find(port, mwl_query(charset="ISO_IR 192", **query))
    return sorted(str(ds.AccessionNumber) for _, ds in answers if ds is not None)


def test_the_edge_keeps_its_sites_orders_and_a_cancel_leaves_the_worklist(
    server: str, county, edge_settings: Settings, spool: Spool,  # noqa: F811
) -> None:
    make_site(county, "township-a")
    make_site(county, "township-b")
    with county.sessions() as s:
        for order in (his_order("township-a", "301"), his_order("township-a", "302"), his_order("township-b", "303")):
            upsert_order(s, order)
        s.commit()
    up, down = _edge(edge_settings, server, county)
    cache = OrderCache(spool.root)
    with county_client(up) as client:
        assert sync_once(client, cache, site="township-a") is True
        assert sync_once(client, cache, site="township-a") is False  # a 304
    assert sorted(c.order.accession_number for c in cache.orders()) == ["A301", "A302"]
    with county.sessions() as s:
        cancel_order(s, placer_order_number="302", placer_issuer="HIS.XZ")
        s.commit()
    with county_client(up) as client:
        assert sync_once(client, cache, site="township-a") is True
    with county_client(down) as client, pytest.raises(httpx.ConnectError):
        sync_once(client, cache, site="township-a")
    with running_worklist(down, cache) as services:
        assert _accessions(services.port) == ["A301"]


def test_a_registration_with_the_wan_down_reaches_the_county_once_when_it_is_back(
    server: str, county, edge_settings: Settings, spool: Spool, dcmtk, tmp_path: Path,  # noqa: F811
) -> None:
    make_site(county, "township-a")
    up, down = _edge(edge_settings, server, county)
    technicians = TechnicianCache(spool.root)
    with county_client(up) as client:
        sync_technicians(client, technicians)  # the technician's county login, cached at the edge
    cache = OrderCache(spool.root)
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=down, technicians=technicians, orders=cache)
    page.start()
    try:  # the WAN is cut: the technician registers an exam
        with logged_in(f"http://127.0.0.1:{page.port}", SITE_TECHNICIAN, PASSWORD) as client:
            answer = client.post("/register", data={**FORM, "csrf": form_token(client.get("/register").text)})
            assert answer.status_code == 303
            assert "待上传" in client.get("/register").text
        with county_client(down) as http, pytest.raises(httpx.ConnectError):
            upload_due(http, cache, rng=random.Random(1), first_delay_s=0.2)
        with running_worklist(down, cache) as services:  # the modality sees it at once
            found = findscu(dcmtk, services.port, mwl_query(charset="GB18030", PatientName="王*"), tmp_path / "q")
        [registered] = [c.order for c in cache.orders()]
        assert [str(d.AccessionNumber) for d in found.datasets()] == [registered.accession_number]

        # The WAN is back: the agent's loop uploads it and the next snapshot holds it.
        stop = threading.Event()
        loop = start_sync(up, cache, stop)
        try:
            assert wait_until(lambda: [c.upload for c in cache.orders()] == [UploadState.CONFIRMED], timeout=60)
            assert wait_until(lambda: [c.origin for c in cache.orders()] == [Origin.COUNTY], timeout=60)
        finally:
            stop.set()
            loop.join(30)
        with logged_in(f"http://127.0.0.1:{page.port}", SITE_TECHNICIAN, PASSWORD) as client:
            listed = client.get("/register").text
            assert "已上传" in listed and "待上传" not in listed
    finally:
        page.stop()
    with county_client(up) as http:
        assert upload_due(http, cache, rng=random.Random(1), first_delay_s=0.2) == 0
        r = http.post("/api/edges/orders", json=registered.to_wire())  # a late duplicate: still one order
        assert r.status_code == 200 and r.json()["outcome"] == "unchanged"
    with county.sessions() as s:
        rows = s.execute(select(OrderRow)).scalars().all()
        audited = s.execute(select(AuditEvent).where(AuditEvent.action == "order.create")).scalars().all()
    assert [(r.accession_number, r.patient_name, r.source, r.patient_pk) for r in rows] == [
        (registered.accession_number, "王^小明", "registration", None)]
    assert [(a.actor, a.role) for a in audited] == [(SITE_TECHNICIAN, "technician")]
