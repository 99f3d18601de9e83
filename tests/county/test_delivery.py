"""Signed reports on their way back to the township, seen from the county's API."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.db.models import Report, Site, Study, StudyTransition
from relay.county.jobs import DELIVER_TASK
from relay.county.worker import register_tasks
from relay.dicom import signing
from relay.dicom.vocab import Role
from tests.county.test_reading import queue_studies
from tests.county.test_reports import login
from tests.factories import make_site


def run_task(county, name: str, item_id: int) -> None:
    """Run one county task in this process through the real Celery app, as a worker would."""
    if name not in county.celery.tasks:
        register_tasks(county.celery, county)
    county.celery.tasks[name].apply(args=[item_id], throw=True)


def signed_study(client: TestClient, county, *, critical: bool = False, deliver: bool = True) -> str:
    """A queued study, claimed, reported and signed by dr.wang; with ``deliver``, its
    SR and PDF built as the ``deliver`` worker does after the signature."""
    (uid,) = queue_studies(county, 1)
    dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
    client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
    client.post(f"/api/worklist/{uid}/claim", headers=dr)
    draft = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=dr).json()
    client.patch(f"/api/reports/{draft['id']}", json={"critical": critical}, headers=dr)
    assert client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                       headers=dr).status_code == 200
    if deliver:
        run_task(county, DELIVER_TASK, draft["id"])
    return uid


SITE_TECHNICIAN = "技师李"
"""The technician ``site_token`` gives township-a: acknowledgements must name one."""


def site_token(county, name: str = "township-a") -> dict[str, str]:
    """A fresh credential for an existing site (the test's site was made without keeping it);
    township-a also gets its technician SITE_TECHNICIAN, who acknowledges reports."""
    import hashlib
    import secrets

    from relay.county.db.models import User
    from tests.factories import make_user

    token = "site_" + secrets.token_urlsafe(16)
    with county.sessions() as s:
        site = s.execute(select(Site).where(Site.name == name)).scalar_one()
        site.token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        s.commit()
        known = s.execute(select(User.id).where(User.username == SITE_TECHNICIAN)).scalar_one_or_none()
    if name == "township-a" and known is None:
        make_user(county, SITE_TECHNICIAN, Role.TECHNICIAN, site=name)
    return {"Authorization": f"Bearer {token}"}


def test_the_site_fetches_its_signed_report_which_verifies_then_delivers_and_acknowledges(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county)
        edge = site_token(county)
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        assert item["study_instance_uid"] == uid and "signed" in item["objects"]
        signed = client.get(f"/api/edges/reports/{item['delivery_id']}/objects/signed", headers=edge).text
        signing.verify(signing.SignedReport.from_json(signed), client.get("/api/signing-keys").json())
        for _ in range(2):  # idempotent
            assert client.post(f"/api/edges/reports/{item['delivery_id']}/delivered", json={"detail": "TOWNPACS"},
                               headers=edge).status_code == 204
        assert client.get("/api/edges/reports", headers=edge).json() == []
        assert client.post(f"/api/edges/reports/{item['delivery_id']}/acknowledged", json={"by": "技师李"},
                           headers=edge).status_code == 204
    with county.sessions() as s:
        assert s.execute(select(Study.state)).scalar_one() == "acknowledged"
        tail = [(t.state, t.actor) for t in s.execute(select(StudyTransition).order_by(StudyTransition.id)).scalars()][-3:]
    assert tail == [("signed", "dr.wang"), ("delivered", "site:township-a"), ("acknowledged", "技师李")]


def test_another_township_neither_sees_nor_fetches_the_report(county):
    with TestClient(create_app(county)) as client:
        signed_study(client, county)
        make_site(county, "township-b")
        other = site_token(county, "township-b")
        assert client.get("/api/edges/reports", headers=other).json() == []
        mine = client.get("/api/edges/reports", headers=site_token(county)).json()
        assert client.get(f"/api/edges/reports/{mine[0]['delivery_id']}/objects/signed", headers=other).status_code == 404


def test_signing_queues_the_renderings_and_the_edge_gets_them_once_the_deliver_task_ran(county, amqp_url):
    import pika

    from relay.county.jobs import queue_name

    with TestClient(create_app(county)) as client:
        signed_study(client, county, deliver=False)
        edge = site_token(county)
        assert client.get("/api/edges/reports", headers=edge).json() == []  # not ready: no SR/PDF yet
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            waiting = conn.channel().queue_declare(queue_name(county.settings, "deliver"), passive=True)
        finally:
            conn.close()
        assert waiting.method.message_count == 1  # the sign request left the work to a worker
        with county.sessions() as s:
            report_id = s.execute(select(Report.id)).scalar_one()
        run_task(county, DELIVER_TASK, report_id)
        (item,) = client.get("/api/edges/reports", headers=edge).json()
        assert item["objects"] == ["encapsulated_pdf", "pdf", "signed", "sr"]
        pdf = client.get(f"/api/edges/reports/{item['delivery_id']}/objects/pdf", headers=edge)
    assert pdf.content.startswith(b"%PDF")
