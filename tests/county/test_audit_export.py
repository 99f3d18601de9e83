"""The audit trail exported as DICOM audit messages (IHE ATNA, PS3.15 A.5.1), on real data."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.audit.service import Action, Entry, append, verify
from relay.county.db.models import AuditEvent
from relay.dicom.vocab import Role
from tests.county.test_reading import queue_studies
from tests.factories import make_user

ORDER = ["EventIdentification", "ActiveParticipant", "AuditSourceIdentification", "ParticipantObjectIdentification"]


def _login(client: TestClient, county, name: str, role: Role) -> dict[str, str]:
    password = make_user(county, name, role)
    token = client.post("/api/auth/token", data={"username": name, "password": password}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _real_trail(client: TestClient, county) -> tuple[dict[str, str], str]:
    """A failed and a good login, a claim and an open of a study: recorded by the real routes."""
    (uid,) = queue_studies(county, 1)
    password = make_user(county, "dr.wang", Role.RADIOLOGIST)
    client.post("/api/auth/token", data={"username": "dr.wang", "password": "not-it"})
    token = client.post("/api/auth/token", data={"username": "dr.wang", "password": password}).json()["access_token"]
    reader = {"Authorization": f"Bearer {token}"}
    assert client.post(f"/api/worklist/{uid}/claim", headers=reader).status_code == 200
    assert client.post(f"/api/worklist/{uid}/open", headers=reader).status_code == 200
    return _login(client, county, "boss", Role.ADMIN), uid


def _code(element: ET.Element, tag: str) -> tuple[str, str]:
    coded = element.find(tag)
    assert coded is not None, tag
    assert coded.get("originalText"), tag
    return coded.get("csd-code", ""), coded.get("codeSystemName", "")


def test_the_export_is_one_schema_shaped_audit_message_per_event(county):
    with TestClient(create_app(county)) as client:
        admin, uid = _real_trail(client, county)
        response = client.get("/api/audit/export.xml", headers=admin)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    messages = root.findall("AuditMessage")
    with county.sessions() as s:
        rows = s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
    assert rows[-1].action == "export"  # recorded before the stream, after its window's end
    rows = rows[:-1]
    assert len(messages) == len(rows) >= 5
    for message, row in zip(messages, rows, strict=True):
        tags = [child.tag for child in message]
        assert tags == sorted(tags, key=ORDER.index) and tags.count("EventIdentification") == 1
        ident = message.find("EventIdentification")
        assert ident is not None and ident.get("EventActionCode") in {"C", "R", "U", "D", "E"}
        assert datetime.fromisoformat(ident.get("EventDateTime", "")) == row.at
        assert ident.get("EventOutcomeIndicator") == ("0" if row.outcome == "success" else "4")
        assert _code(ident, "EventID")[1] == "DCM"
        person = message.find("ActiveParticipant")
        assert person is not None and person.get("UserID") == row.actor and person.get("UserIsRequestor") == "true"
        source = message.find("AuditSourceIdentification")
        assert source is not None and source.get("AuditSourceID") and _code(source, "AuditSourceTypeCode") == ("4", "DCM")
    by_action = {row.action: m for row, m in zip(rows, messages, strict=True)}
    login_failed = by_action["login.failed"].find("EventIdentification")
    assert login_failed is not None and login_failed.get("EventOutcomeIndicator") == "4"
    assert _code(login_failed, "EventID") == ("110114", "DCM") and _code(login_failed, "EventTypeCode") == ("110122", "DCM")
    opened = by_action["study.open"]
    assert _code(opened.find("EventIdentification"), "EventID") == ("110103", "DCM")  # type: ignore[arg-type]
    study = opened.find("ParticipantObjectIdentification")
    assert study is not None and study.get("ParticipantObjectID") == uid
    assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
    assert _code(study, "ParticipantObjectIDTypeCode") == ("110180", "DCM")
    assert opened.find("ActiveParticipant").get("NetworkAccessPointTypeCode") == "2"  # type: ignore[union-attr]


def test_the_export_is_itself_audited_as_an_export_and_the_chain_still_verifies(county):
    with TestClient(create_app(county)) as client:
        admin, _uid = _real_trail(client, county)
        client.get("/api/audit/export.xml", headers=admin)
        again = ET.fromstring(client.get("/api/audit/export.xml", headers=admin).content)
    export = [m for m in again.findall("AuditMessage")
              if _code(m.find("EventIdentification"), "EventID") == ("110106", "DCM")]  # type: ignore[arg-type]
    assert len(export) == 1  # the first export; this one is recorded just after its own window
    participants = export[0].findall("ActiveParticipant")
    assert [p.get("UserID") for p in participants][0] == "boss"
    assert {_code(p, "RoleIDCode")[0] for p in participants} == {"110152", "110153"}
    obj = export[0].find("ParticipantObjectIdentification")
    assert obj is not None and obj.get("ParticipantObjectID") == "audit"
    detail = [d for d in obj.findall("ParticipantObjectDetail") if d.get("type") == "detail"][0]
    assert base64.b64decode(detail.get("value", "")).decode().startswith("format=dicom-atna since=")
    with county.sessions() as s:
        assert verify(s).ok


def test_the_export_takes_a_time_range_and_filters(county):
    for i in range(3):
        append(county.sessions, Entry(actor=f"u{i}", role="radiologist", action=Action.STUDY_OPEN,
                                      object_type="study", object_id=f"1.2.{i}"))
    with county.sessions() as s:
        middle = s.execute(select(AuditEvent).order_by(AuditEvent.id).offset(1).limit(1)).scalar_one()
    with TestClient(create_app(county)) as client:
        admin = _login(client, county, "boss", Role.ADMIN)
        window = {"since": middle.at.isoformat(), "until": (middle.at + timedelta(microseconds=1)).isoformat()}
        root = ET.fromstring(client.get("/api/audit/export.xml", params=window, headers=admin).content)
        assert [m.find("ActiveParticipant").get("UserID") for m in root.findall("AuditMessage")] == ["u1"]  # type: ignore[union-attr]
        only_u2 = ET.fromstring(client.get("/api/audit/export.xml", params={"actor": "u2"}, headers=admin).content)
        assert len(only_u2.findall("AuditMessage")) == 1
        page = client.get("/api/audit", params={"object_type": "study", "limit": 2}, headers=admin).json()
        older = client.get("/api/audit", params={"object_type": "study", "before_id": page[-1]["id"]}, headers=admin).json()
        assert [e["object_id"] for e in page + older] == ["1.2.2", "1.2.1", "1.2.0"]


def test_a_large_range_streams_every_event_in_order(county):
    with psycopg.connect(county.settings.database_url.replace("+psycopg", "")) as conn:  # type: ignore[union-attr]
        # 2,500 rows written straight into the chain's shape (the export does not re-verify hashes).
        conn.execute("""INSERT INTO audit_events (at, actor, role, action, object_type, object_id, outcome, source,
                        detail, prev_hash, hash)
                        SELECT now() - make_interval(secs => 3000 - i), 'u' || i, 'radiologist', 'study.retrieve',
                               'study', '2.25.' || i, 'success', '10.0.0.1', '', md5(i::text) || md5((-i)::text),
                               md5((i + 1)::text) || md5((-i - 1)::text)
                        FROM generate_series(1, 2500) AS i""")
    with TestClient(create_app(county)) as client:
        admin = _login(client, county, "boss", Role.ADMIN)
        since = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
        with client.stream("GET", "/api/audit/export.xml", params={"since": since, "action": "study.retrieve"},
                           headers=admin) as response:
            chunks = list(response.iter_text())
    root = ET.fromstring("".join(chunks))
    ids = [m.find("ParticipantObjectIdentification").get("ParticipantObjectID") for m in root.findall("AuditMessage")]  # type: ignore[union-attr]
    assert ids == [f"2.25.{i}" for i in range(1, 2501)]


def test_the_export_is_for_administrators_only(county):
    with TestClient(create_app(county)) as client:
        reader = _login(client, county, "dr.li", Role.RADIOLOGIST)
        assert client.get("/api/audit/export.xml", headers=reader).status_code == 403


def test_postgresql_refuses_to_delete_audit_rows_even_old_ones(county):
    append(county.sessions, Entry(actor="u", role="admin", action=Action.LOGIN))
    with county.sessions() as s, pytest.raises(Exception, match="append-only"):
        s.execute(AuditEvent.__table__.delete().where(AuditEvent.at < datetime.now(UTC) + timedelta(days=1)))
        s.commit()


def test_every_action_the_relay_records_has_an_atna_event():
    from relay.county.audit.atna import event_kind

    for action in Action:
        kind = event_kind(action.value)
        assert kind.event_id.scheme == "DCM" and kind.action_code in {"C", "R", "U", "D", "E"}, action
    assert (event_kind("report.sign").event_id.code, event_kind("report.sign").action_code) == ("110110", "U")
    assert event_kind("report.addendum").action_code == "C"
    assert event_kind("export").event_id.code == "110106"



def test_report_drafts_signatures_addenda_and_user_changes_are_in_the_audit_trail(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        admin = _login(client, county, "boss", Role.ADMIN)
        dr = _login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
        client.post(f"/api/worklist/{uid}/claim", headers=dr)
        first = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=dr).json()
        client.patch(f"/api/reports/{first['id']}", json={"impression": "两肺未见异常。"}, headers=dr)
        client.post(f"/api/reports/{first['id']}/sign", json={"signing_password": "sign-me-please"}, headers=dr)
        add = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
        assert client.patch("/api/users/dr.wang", json={"competences": "CT,DX"},
                            headers=admin).status_code == 200
        trail = client.get("/api/audit", params={"limit": 100}, headers=admin).json()
    done = [(e["actor"], e["action"], e["object_type"], e["object_id"]) for e in trail]
    assert ("dr.wang", "report.draft", "study", uid) in done
    assert ("dr.wang", "report.draft", "report", str(first["id"])) in done
    assert ("dr.wang", "report.sign", "report", str(first["id"])) in done
    assert ("dr.wang", "report.addendum", "study", uid) in done
    assert ("boss", "user.update", "user", "dr.wang") in done
    assert not any("两肺" in e["detail"] for e in trail)  # report text stays out of the trail
    with TestClient(create_app(county)) as client:
        assert client.get("/api/audit/verify", headers=admin).json()["ok"] is True
    assert add["revision"] == 2
