"""From a claimed study to a signed report, an addendum, and a file that verifies offline."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.db.models import OutboxEvent, Study
from relay.dicom import signing
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.county.test_reading import queue_studies
from tests.factories import encode, make_dataset, make_site, make_user


def login(client, county, username, role, site=None) -> dict[str, str]:
    password = make_user(county, username, role, site=site)
    token = client.post("/api/auth/token", data={"username": username, "password": password}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_a_reader_writes_from_a_template_signs_and_the_file_verifies(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
        assert client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).status_code == 409  # not claimed
        client.post(f"/api/worklist/{uid}/claim", headers=dr)
        client.post(f"/api/worklist/{uid}/open", headers=dr)
        draft = client.post(f"/api/studies/{uid}/reports", json={"template": "head-ct-plain"}, headers=dr).json()
        assert draft["impression"] == "头颅CT平扫未见明显异常。" and draft["status"] == "draft"
        edited = client.patch(f"/api/reports/{draft['id']}", json={"impression": "左侧基底节区脑出血。",
                                                                   "critical": True}, headers=dr).json()
        assert edited["critical"] is True
        wrong = client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "nope-nope"}, headers=dr)
        assert wrong.status_code == 403
        signed = client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                             headers=dr).json()
        assert signed["status"] == "signed"
        again = client.patch(f"/api/reports/{draft['id']}", json={"impression": "正常"}, headers=dr)
        assert again.status_code == 409
        file = client.get(f"/api/reports/{draft['id']}/signed", headers=dr).text
        published = client.get("/api/signing-keys").json()
    report = signing.SignedReport.from_json(file)
    signing.verify(report, published)
    assert report.document["impression"] == "左侧基底节区脑出血。" and report.document["reader"] == "dr.wang"
    assert len(report.document["instances"]) == 1
    with county.sessions() as s:
        assert s.execute(select(Study.state)).scalar_one() == "signed"
        topics = [e.topic for e in s.execute(select(OutboxEvent).order_by(OutboxEvent.id)).scalars()]
    assert topics[-2:] == ["study.signed", "critical.result"]


def test_an_addendum_is_a_new_signed_revision_and_the_first_stays_as_signed(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
        client.post(f"/api/worklist/{uid}/claim", headers=dr)
        first = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=dr).json()
        client.post(f"/api/reports/{first['id']}/sign", json={"signing_password": "sign-me-please"}, headers=dr)
        add = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
        assert (add["kind"], add["revision"]) == ("addendum", 2)
        client.patch(f"/api/reports/{add['id']}", json={"impression": "补充：右肺上叶小结节，建议3个月后复查。"}, headers=dr)
        client.post(f"/api/reports/{add['id']}/sign", json={"signing_password": "sign-me-please"}, headers=dr)
        reports = client.get(f"/api/studies/{uid}/reports", headers=dr).json()
        published = client.get("/api/signing-keys").json()
        for r in reports:
            signing.verify(signing.SignedReport.from_json(
                client.get(f"/api/reports/{r['id']}/signed", headers=dr).text), published)
    assert [(r["kind"], r["status"]) for r in reports] == [("report", "signed"), ("addendum", "signed")]
    assert reports[0]["impression"] == "胸部正位片未见明显异常。"


def test_a_technician_sees_only_signed_reports_of_their_own_site(county):
    (uid,) = queue_studies(county, 1)
    make_site(county, "other-town")
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post(f"/api/worklist/{uid}/claim", headers=dr)
        client.post(f"/api/studies/{uid}/reports", json={}, headers=dr)
        own = login(client, county, "tech.a", Role.TECHNICIAN, site="township-a")
        other = login(client, county, "tech.b", Role.TECHNICIAN, site="other-town")
        assert client.get(f"/api/studies/{uid}/reports", headers=own).json() == []  # the draft is not shown
        assert client.get(f"/api/studies/{uid}/reports", headers=other).status_code == 404
        assert client.post(f"/api/studies/{uid}/reports", json={}, headers=own).status_code == 403


def test_templates_for_an_ecg_come_first_for_ecg(county):
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        names = [t["name"] for t in client.get("/api/report-templates", params={"modality": "ECG"}, headers=dr).json()]
    assert names[0] == "常规十二导联心电图"


def _study(county, site_id: int, modality: str, body_part: str | None) -> str:
    ds = make_dataset(Modality=modality, **({"BodyPartExamined": body_part} if body_part else {}))
    index(county, ingest(county, encode(ds), site_id=site_id))
    return str(ds.StudyInstanceUID)


def test_a_studys_templates_are_ranked_by_its_modality_and_body_part(county):
    site_id, _ = make_site(county, "township-a")
    chest_ct, head_ct = _study(county, site_id, "CT", "CHEST"), _study(county, site_id, "CT", "Brain")
    plain_ct, ecg = _study(county, site_id, "CT", None), _study(county, site_id, "ECG", None)
    make_site(county, "other-town")
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)

        def names(**params: str) -> list[str]:
            r = client.get("/api/report-templates", params=params, headers=dr)
            assert r.status_code == 200
            return [t["name"] for t in r.json()]

        assert names(study_uid=chest_ct)[0] == "胸部CT平扫"
        ranked_head = names(study_uid=head_ct)
        assert ranked_head[0] == "头颅CT平扫" and ranked_head.index("胸部CT平扫") < ranked_head.index("胸部正位片")
        assert names(study_uid=plain_ct)[0] in {"胸部CT平扫", "头颅CT平扫"}  # a CT template, whatever region
        assert names(study_uid=ecg)[0] == "常规十二导联心电图"
        assert names(modality="DX", body_part="lspine")[0] == "腰椎正侧位片"
        assert len(names(study_uid=chest_ct)) == len(names())  # ranked, never hidden
        first = client.get("/api/report-templates", params={"study_uid": chest_ct}, headers=dr).json()[0]
        assert first["regions"] == ["CHEST"] and first["advice"] and "双肺" in first["findings"]
        other = login(client, county, "tech.b", Role.TECHNICIAN, site="other-town")
        assert client.get("/api/report-templates", params={"study_uid": chest_ct}, headers=other).status_code == 404


def test_the_template_a_reader_chooses_is_recorded_on_the_draft(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        client.post(f"/api/worklist/{uid}/claim", headers=dr)
        draft = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
        assert draft["template"] == ""
        chosen = client.patch(f"/api/reports/{draft['id']}", json={"template": "chest-ct-plain",
                                                                   "findings": "双肺纹理清晰。"}, headers=dr)
        assert chosen.status_code == 200 and chosen.json()["template"] == "chest-ct-plain"
        assert client.patch(f"/api/reports/{draft['id']}", json={"template": "no-such"}, headers=dr).status_code == 400
        kept = client.patch(f"/api/reports/{draft['id']}", json={"impression": "未见异常。"}, headers=dr).json()
        assert kept["template"] == "chest-ct-plain"
        (stored,) = client.get(f"/api/studies/{uid}/reports", headers=dr).json()
    assert stored["template"] == "chest-ct-plain" and stored["findings"] == "双肺纹理清晰。"
