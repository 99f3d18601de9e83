"""A township's edge fetches its orders (ETag, 304, gzip) and uploads the orders its
registration page made: only its own site's, idempotent, audited under the technician."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.db.models import AuditEvent
from relay.county.db.models import Order as OrderRow
from relay.county.orders.service import upsert_order
from relay.dicom.orders import ORDERS_PATH, Order
from relay.dicom.vocab import Role
from tests.factories import make_site, make_user

ZONE = ZoneInfo("Asia/Shanghai")


def _soon() -> str:
    return (datetime.now(ZONE) + timedelta(hours=1)).isoformat(timespec="seconds")


def his_order(site: str, number: str, **kw: Any) -> Order:
    base: dict[str, Any] = dict(placer_order_number=number, placer_issuer="HIS.XZ", accession_number=f"A{number}",
                                site=site, patient_id=f"P{number}", patient_id_issuer="HIS.XZ",
                                patient_name="王^小明", patient_name_pinyin="Wang^Xiaoming", modality="DX",
                                procedure_description="胸部正位", scheduled_at=_soon())
    base.update(kw)
    return Order(**base)


def registered(site: str = "township-a", number: str = "R1", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(placer_order_number=f"{number}.ab12cd34", placer_issuer=f"site:{site}",
                                accession_number=number, site=site, patient_id="", patient_id_issuer="",
                                patient_name="李^娜", modality="CT", procedure_description="头颅平扫",
                                clinical_diagnosis="头痛待查", scheduled_at=_soon(), source="registration",
                                study_instance_uid="2.25.1234567", extra={"registered_by": "tech.a"})
    base.update(kw)
    return Order(**base).to_wire()


def _store(county, *orders: Order) -> None:
    with county.sessions() as s:
        for order in orders:
            upsert_order(s, order)
        s.commit()


def _two_sites(county) -> tuple[dict[str, str], dict[str, str]]:
    _, token_a = make_site(county, "township-a")
    _, token_b = make_site(county, "township-b")
    make_user(county, "tech.a", Role.TECHNICIAN, site="township-a")
    make_user(county, "tech.b", Role.TECHNICIAN, site="township-b")
    return {"Authorization": f"Bearer {token_a}"}, {"Authorization": f"Bearer {token_b}"}


def test_the_edge_gets_its_orders_with_an_etag_and_304_while_unchanged_and_gzip_when_asked(county) -> None:
    edge_a, _ = _two_sites(county)
    _store(county, *[his_order("township-a", f"10{i}", clinical_diagnosis="咳嗽待查" * 20) for i in range(5)])
    with TestClient(create_app(county)) as client:
        got = client.get(ORDERS_PATH, headers={**edge_a, "Accept-Encoding": "gzip"})
        assert got.status_code == 200 and got.headers["content-encoding"] == "gzip"
        body = got.json()
        assert body["etag"] == got.headers["etag"]
        assert sorted(o["accession_number"] for o in body["orders"]) == [f"A10{i}" for i in range(5)]
        assert body["orders"][0]["patient_name"] == "王^小明"
        again = client.get(ORDERS_PATH, headers={**edge_a, "If-None-Match": got.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        _store(county, his_order("township-a", "100", exam_purpose="排除肺炎"))  # a change: a new list
        changed = client.get(ORDERS_PATH, headers={**edge_a, "If-None-Match": got.headers["etag"]})
        assert changed.status_code == 200 and changed.headers["etag"] != got.headers["etag"]
        assert client.get(ORDERS_PATH).status_code == 401


def test_a_site_never_sees_another_sites_orders_nor_registers_for_it(county) -> None:
    edge_a, edge_b = _two_sites(county)
    _store(county, his_order("township-a", "201"), his_order("township-b", "202"))
    with TestClient(create_app(county)) as client:
        assert [o["accession_number"] for o in client.get(ORDERS_PATH, headers=edge_a).json()["orders"]] == ["A201"]
        assert [o["accession_number"] for o in client.get(ORDERS_PATH, headers=edge_b).json()["orders"]] == ["A202"]
        as_a = registered("township-a", extra={"registered_by": "tech.b"})
        assert client.post(ORDERS_PATH, json=as_a, headers=edge_b).status_code == 403  # site a's order from b
        issuer = registered("township-b", placer_issuer="site:township-a", extra={"registered_by": "tech.b"})
        assert client.post(ORDERS_PATH, json=issuer, headers=edge_b).status_code == 403
        foreign_tech = client.post(ORDERS_PATH, json=registered("township-b", extra={"registered_by": "tech.a"}),
                                   headers=edge_b)
        assert foreign_tech.status_code == 422 and foreign_tech.json()["field"] == "extra.registered_by"
        assert [o["accession_number"] for o in client.get(ORDERS_PATH, headers=edge_b).json()["orders"]] == ["A202"]


def test_a_registered_order_posted_twice_is_one_order_audited_once_under_the_technician(county) -> None:
    edge_a, _ = _two_sites(county)
    with TestClient(create_app(county)) as client:
        body = registered()
        first = client.post(ORDERS_PATH, json=body, headers=edge_a)
        assert first.status_code == 200 and first.json()["outcome"] == "created"
        second = client.post(ORDERS_PATH, json=body, headers=edge_a)
        assert second.status_code == 200 and second.json()["outcome"] == "unchanged"
        assert second.json()["order"]["patient_name"] == "李^娜"
        reused = client.post(ORDERS_PATH, json={**body, "study_instance_uid": "2.25.999"}, headers=edge_a)
        assert reused.status_code == 409  # the same numbers for another exam: never merged
        listed = client.get(ORDERS_PATH, headers=edge_a).json()["orders"]
        assert [(o["accession_number"], o["source"]) for o in listed] == [("R1", "registration")]
    with county.sessions() as s:
        rows = s.execute(select(OrderRow)).scalars().all()
        audited = s.execute(select(AuditEvent).where(AuditEvent.action.like("order.%"))).scalars().all()
    assert len(rows) == 1 and rows[0].patient_pk is None  # no patient ID: unidentified, no patient made
    assert [(a.action, a.actor, a.role, a.source) for a in audited] == [
        ("order.create", "tech.a", "technician", "site:township-a")]


def test_a_bad_registered_order_is_a_422_problem_naming_the_field(county) -> None:
    edge_a, _ = _two_sites(county)
    with TestClient(create_app(county)) as client:
        long_accession = client.post(ORDERS_PATH, json=registered(number="X" * 17), headers=edge_a)
        assert long_accession.status_code == 422
        assert long_accession.headers["content-type"].startswith("application/problem+json")
        assert long_accession.json()["field"] == "accession_number"
        hl7 = client.post(ORDERS_PATH, json=registered(source="hl7"), headers=edge_a)
        assert hl7.status_code == 422 and hl7.json()["field"] == "source"
        sex = client.post(ORDERS_PATH, json=registered(patient_sex="X"), headers=edge_a)
        assert sex.status_code == 422 and sex.json()["field"] == "patient_sex"
        when = client.post(ORDERS_PATH, json=registered(scheduled_at="tomorrow"), headers=edge_a)
        assert when.status_code == 422 and when.json()["field"] == "scheduled_at"
    with county.sessions() as s:
        assert s.execute(select(OrderRow)).scalars().all() == []
