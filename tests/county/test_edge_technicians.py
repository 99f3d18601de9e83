"""A township's edge fetches its technicians for its offline login cache, and delivers the
technicians' acknowledgements: only the site's own technicians, audited, idempotent."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.db.models import AuditEvent, ReportDelivery, StudyTransition
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study, site_token
from tests.factories import make_site, make_user


def _audit(county, action: str) -> list[AuditEvent]:
    with county.sessions() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def test_the_edge_gets_only_its_own_technicians_with_their_hashes_and_the_fetch_is_audited(county):
    make_site(county, "township-a")
    make_site(county, "township-b")
    password = make_user(county, "tech.li", Role.TECHNICIAN, site="township-a")
    make_user(county, "tech.other", Role.TECHNICIAN, site="township-b")
    make_user(county, "dr.zhao", Role.RADIOLOGIST)
    with TestClient(create_app(county)) as client:
        edge = site_token(county, "township-a")
        got = client.get("/api/edges/technicians", headers=edge)
        assert got.status_code == 200
        listed = {t["username"]: t for t in got.json()}
        assert "tech.other" not in listed and "dr.zhao" not in listed
        assert listed["tech.li"]["active"] is True
        assert PasswordHasher().verify(listed["tech.li"]["password_hash"], password)
        again = client.get("/api/edges/technicians", headers={**edge, "If-None-Match": got.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/api/edges/technicians").status_code == 401
    [audited] = _audit(county, "site.technicians")
    assert (audited.actor, audited.object_id) == ("site:township-a", "township-a")


def test_a_disabled_technician_is_sent_without_a_hash(county):
    make_site(county, "township-a")
    make_user(county, "tech.gone", Role.TECHNICIAN, site="township-a")
    from relay.county.db.models import User
    with county.sessions() as s:
        s.execute(select(User).where(User.username == "tech.gone")).scalar_one().disabled_at = datetime.now(UTC)
        s.commit()
    with TestClient(create_app(county)) as client:
        listed = client.get("/api/edges/technicians", headers=site_token(county, "township-a")).json()
    [gone] = [t for t in listed if t["username"] == "tech.gone"]
    assert (gone["username"], gone["active"], gone["password_hash"]) == ("tech.gone", False, "")


def test_an_acknowledgement_names_the_technician_keeps_their_time_and_is_audited_once(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, critical=True)
        make_user(county, "tech.zhang", Role.TECHNICIAN, site="township-a")
        edge = site_token(county)
        [item] = client.get("/api/edges/reports", headers=edge).json()
        when = datetime.now(UTC)  # acknowledged while the WAN was down, delivered later:
        time.sleep(1.0)
        url = f"/api/edges/reports/{item['delivery_id']}/acknowledged"
        for _ in range(3):  # the edge delivers at least once
            assert client.post(url, json={"by": "tech.zhang", "at": when.isoformat()}, headers=edge).status_code == 204
    with county.sessions() as s:
        delivery = s.execute(select(ReportDelivery)).scalar_one()
        acks = s.execute(select(StudyTransition).where(StudyTransition.state == "acknowledged")).scalars().all()
    assert delivery.acknowledged_by == "tech.zhang"
    assert delivery.acknowledged_at == when  # the technician's time, not the delivery's
    assert [(t.actor, t.at) for t in acks] == [("tech.zhang", when)]
    [audited] = _audit(county, "report.acknowledge")
    assert (audited.actor, audited.role, audited.object_id, audited.source) == (
        "tech.zhang", "technician", uid, "site:township-a")
    assert "critical=True" in audited.detail


def test_an_acknowledgement_by_someone_who_is_not_a_technician_of_the_site_is_refused(county):
    with TestClient(create_app(county)) as client:
        signed_study(client, county, critical=True)
        make_site(county, "township-b")
        make_user(county, "tech.b", Role.TECHNICIAN, site="township-b")
        edge = site_token(county)
        [item] = client.get("/api/edges/reports", headers=edge).json()
        url = f"/api/edges/reports/{item['delivery_id']}/acknowledged"
        for name in ("tech.b", "dr.wang", "someone typed"):
            refused = client.post(url, json={"by": name}, headers=edge)
            assert refused.status_code == 422, (name, refused.text)
    with county.sessions() as s:
        assert s.execute(select(ReportDelivery.acknowledged_at)).scalar_one() is None
    assert _audit(county, "report.acknowledge") == []


def test_a_time_in_the_future_is_taken_as_now(county):
    with TestClient(create_app(county)) as client:
        signed_study(client, county)
        make_user(county, "tech.zhang", Role.TECHNICIAN, site="township-a")
        edge = site_token(county)
        [item] = client.get("/api/edges/reports", headers=edge).json()
        future = datetime.now(UTC) + timedelta(days=2)
        client.post(f"/api/edges/reports/{item['delivery_id']}/acknowledged",
                    json={"by": "tech.zhang", "at": future.isoformat()}, headers=edge)
    with county.sessions() as s:
        assert s.execute(select(ReportDelivery.acknowledged_at)).scalar_one() <= datetime.now(UTC)
