"""Study <-> order matching at the county, through ingest and the real index task (Celery app,
in this process) on PostgreSQL + S3: a clean match shows the HIS's identity and leaves the
bytes alone; any contradiction is kept apart for the administrator; their decisions hold."""

from __future__ import annotations

import io
import json
from zoneinfo import ZoneInfo

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.audit.service import Action
from relay.county.context import County
from relay.county.db.models import AuditEvent, Instance, Order as OrderRow, Patient, Report, ReportDelivery, Study
from relay.county.jobs import DELIVER_TASK, INDEX_TASK
from relay.county.orders import reconcile
from relay.county.orders.service import cancel_order, upsert_order
from relay.county.worklist.service import worklist
from relay.dicom.orders import Order, OrderStatus
from relay.dicom.vocab import Role
from tests.county.test_delivery import run_task
from tests.county.test_index import ingest, reader
from tests.county.test_priors import token
from tests.county.test_reports import login
from tests.factories import encode, make_dataset, make_site, sha256

ZONE = ZoneInfo("Asia/Shanghai")
SITE = "township-a"
GB = "GB18030"


def order(**kw: object) -> Order:
    base: dict[str, object] = dict(
        placer_order_number="HIS-1001", placer_issuer="HIS.XZ", accession_number="A1001", site=SITE,
        patient_id="P-1", patient_id_issuer="HIS.XZ", patient_name="王^小明", patient_name_pinyin="Wang^Xiaoming",
        patient_sex="M", patient_birth_date="19600102", modality="DX", procedure_description="胸部正位",
        clinical_diagnosis="咳嗽待查", exam_purpose="排除肺炎", history_summary="咳嗽两周",
        ordering_department="内科", ordering_doctor="张医生", scheduled_at="2026-12-07T09:00:00+08:00")
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def place(county: County, o: Order) -> None:
    with county.sessions() as s:
        upsert_order(s, o, zone=ZONE)
        s.commit()


def study(county: County, site_id: int, **attrs: object) -> tuple[str, bytes]:
    """A DX instance (patient P-1, 王小明 in GB18030, as the MWL gave it) ingested and indexed
    by the index task; ``attrs`` override."""
    values: dict[str, object] = dict(SpecificCharacterSet=GB, PatientName="王^小明", PatientID="P-1",
                                     PatientSex="M", PatientBirthDate="19600102", AccessionNumber="A1001",
                                     Modality="DX", StudyDate="20261207")
    values.update(attrs)
    ds = make_dataset(**values)
    data = encode(ds)
    run_task(county, INDEX_TASK, ingest(county, data, site_id=site_id))
    return str(ds.StudyInstanceUID), data


def row(county: County, uid: str) -> tuple[Study, Patient]:
    with county.sessions() as s:
        found = s.execute(select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
                          .where(Study.study_uid == uid)).one()
        s.expunge_all()
        return found[0], found[1]


def the_order(county: County, number: str = "HIS-1001") -> OrderRow:
    with county.sessions() as s:
        found = s.execute(select(OrderRow).where(OrderRow.placer_order_number == number)).scalar_one()
        s.expunge_all()
        return found


def waiting(county: County) -> dict[str, list[str]]:
    with county.sessions() as s:
        return {i.study_instance_uid: i.fields for i in reconcile.waiting(s)}


def test_an_accession_match_shows_the_his_name_while_the_stored_bytes_stay_as_received(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, data = study(county, site_id, SpecificCharacterSet="ISO_IR 192", PatientName="Wang^Xiaoming=王^小明")
    st, patient = row(county, uid)
    o = the_order(county)
    assert (st.order_pk, st.order_match, st.order_conflict) == (o.id, "accession", "")
    assert (st.patient_pk, patient.patient_id, patient.issuer) == (o.patient_pk, "P-1", "HIS.XZ")
    assert st.patient_name == "王^小明"
    assert (o.status, o.revision) == (OrderStatus.COMPLETED, 2)
    with county.sessions() as s:
        inst = s.execute(select(Instance).where(Instance.study_uid == uid)).scalar_one()
        item = next(i for i in worklist(session=s, principal=reader()) if i.study_instance_uid == uid)
    assert sha256(county.store.get(inst.object_key)) == sha256(data) == inst.sha256
    assert (item.patient_name, item.name_differs, item.requested_procedure, item.identity_flags) == \
        ("王^小明", False, "胸部正位", [])


def test_a_pinyin_only_dicom_name_matches_the_pinyin_of_the_order(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, SpecificCharacterSet="ISO_IR 100", PatientName="WANG^XIAOMING")
    st, _ = row(county, uid)
    assert (st.order_match, st.patient_name, st.order_conflict) == ("accession", "王^小明", "")


def test_a_pinyin_only_name_against_an_order_without_pinyin_links_on_the_id_with_a_note(county):
    site_id, _ = make_site(county, SITE)
    place(county, order(patient_name_pinyin=""))
    uid, _ = study(county, site_id, SpecificCharacterSet="ISO_IR 100", PatientName="WANG^XIAOMING")
    st, _ = row(county, uid)
    assert (st.order_match, json.loads(st.order_conflict)) == ("accession", ["name_unverified"])
    assert waiting(county) == {uid: ["name_unverified"]}


@pytest.mark.parametrize("attrs, field", [({"PatientName": "王^小民"}, "name"), ({"PatientSex": "F"}, "sex"),
                                          ({"PatientID": "P-2"}, "patient_id"),
                                          ({"PatientBirthDate": "19610102"}, "birth_date")])
def test_a_contradiction_is_kept_apart_for_the_administrator_and_never_merged(county, attrs, field):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, **attrs)
    st, patient = row(county, uid)
    o = the_order(county)
    assert (st.order_pk, st.order_match, json.loads(st.order_conflict)) == (o.id, "conflict", [field])
    assert st.patient_pk != o.patient_pk and patient.issuer == "site:township-a"
    assert st.patient_name == attrs.get("PatientName", "王^小明")
    assert o.status == OrderStatus.SCHEDULED  # still on the township's worklist
    assert waiting(county) == {uid: [field]}
    with county.sessions() as s:
        item = next(i for i in worklist(session=s, principal=reader()) if i.study_instance_uid == uid)
    assert item.identity_flags == [field] and item.identity_conflict and item.requested_procedure == ""


def test_a_study_without_an_order_stays_readable_and_unmatched(county):
    site_id, _ = make_site(county, SITE)
    uid, _ = study(county, site_id, AccessionNumber="", PatientID="", PatientName="急诊^患者")
    st, _ = row(county, uid)
    assert (st.order_pk, st.order_match) == (None, "")
    with county.sessions() as s:
        assert uid in {i.study_instance_uid for i in worklist(session=s, principal=reader())}
    assert waiting(county) == {}


def test_an_order_arriving_after_its_study_links_it(county):
    site_id, _ = make_site(county, SITE)
    by_accession, _ = study(county, site_id)
    by_patient, _ = study(county, site_id, AccessionNumber="", PatientID="P-7", PatientName="李^娜",
                          PatientSex="F", PatientBirthDate="19900101", Modality="CT")
    assert row(county, by_accession)[0].order_match == row(county, by_patient)[0].order_match == ""
    place(county, order())
    place(county, order(placer_order_number="HIS-2002", accession_number="A2002", patient_id="P-7",
                        patient_name="李^娜", patient_name_pinyin="Li^Na", patient_sex="F",
                        patient_birth_date="19900101", modality="CT"))
    first, second = row(county, by_accession)[0], row(county, by_patient)[0]
    assert (first.order_match, first.patient_name) == ("accession", "王^小明")
    assert (second.order_match, second.order_pk) == ("demographics", the_order(county, "HIS-2002").id)
    assert the_order(county, "HIS-2002").status == OrderStatus.COMPLETED


def test_two_orders_that_fit_the_patient_modality_and_date_link_neither(county):
    site_id, _ = make_site(county, SITE)
    for n in ("HIS-1", "HIS-2"):
        place(county, order(placer_order_number=n, accession_number=n))
    uid, _ = study(county, site_id, AccessionNumber="")
    assert row(county, uid)[0].order_match == ""


def test_a_cancelled_order_stays_linked_and_is_flagged(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id)
    with county.sessions() as s:
        cancel_order(s, placer_order_number="HIS-1001", placer_issuer="HIS.XZ")
        s.commit()
    st, _ = row(county, uid)
    assert (st.order_match, json.loads(st.order_conflict), st.patient_name) == \
        ("accession", ["order_cancelled"], "王^小明")
    assert waiting(county) == {uid: ["order_cancelled"]}


def admin_client(county: County) -> tuple[TestClient, dict[str, str]]:
    client = TestClient(create_app(county))
    return client, {"Authorization": f"Bearer {token(client, county, 'admin1', Role.ADMIN)}"}


def qido(client: TestClient, headers: dict[str, str], uid: str) -> tuple[str, str]:
    (found,) = client.get(f"/dicomweb/studies?StudyInstanceUID={uid}", headers=headers).json()
    return found["00100010"]["Value"][0]["Alphabetic"], found["00100020"]["Value"][0]


def test_qido_shows_the_identity_an_administrator_chose_and_the_trail_records_it(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, PatientName="王^小民", PatientID="QS-9")  # a typo and the township's own ID
    client, admin = admin_client(county)
    dr = {"Authorization": f"Bearer {token(client, county, 'dr.li', Role.RADIOLOGIST)}"}
    assert [i["study_instance_uid"] for i in client.get("/api/reconcile", headers=admin).json()] == [uid]
    assert qido(client, dr, uid) == ("王^小民", "QS-9")
    r = client.post(f"/api/reconcile/studies/{uid}/correct", headers=admin)
    assert r.status_code == 200 and r.json()["order_match"] == "manual"
    assert qido(client, dr, uid) == ("王^小明", "P-1")
    assert client.get("/api/reconcile", headers=admin).json() == []
    with county.sessions() as s:
        (event,) = s.execute(select(AuditEvent).where(AuditEvent.action == Action.STUDY_RECONCILE.value)).scalars()
    assert (event.actor, event.object_id) == ("admin1", uid)
    detail = json.loads(event.detail.split(" ", 1)[1])
    assert (detail["before"]["order_match"], detail["after"]["order_match"]) == ("conflict", "manual")
    assert not any(secret in event.detail for secret in ("王", "QS-9", "P-1", "19600102"))


def test_a_split_study_keeps_its_dicom_identity_and_is_never_matched_again(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, PatientName="王^小民")
    client, admin = admin_client(county)
    assert client.post(f"/api/reconcile/studies/{uid}/split", headers=admin).json()["order_match"] == "split"
    place(county, order(patient_name="王^小民", patient_name_pinyin=""))  # the HIS "corrects" the order to fit
    st, patient = row(county, uid)
    assert (st.order_pk, st.order_match, st.patient_name, patient.issuer) == (None, "split", "王^小民",
                                                                              "site:township-a")
    assert the_order(county).status == OrderStatus.SCHEDULED
    with county.sessions() as s:
        assert s.execute(select(AuditEvent.detail).where(
            AuditEvent.action == Action.STUDY_RECONCILE.value)).scalar_one().startswith("split ")


def test_a_linked_study_split_off_gets_its_own_identity_back_and_the_order_reopens(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id, PatientName="Wang^Xiaoming")
    assert row(county, uid)[0].order_match == "accession"
    client, admin = admin_client(county)
    client.post(f"/api/reconcile/studies/{uid}/split", headers=admin)
    st, patient = row(county, uid)
    assert (st.patient_name, patient.issuer, st.order_match) == ("Wang^Xiaoming", "site:township-a", "split")
    assert (the_order(county).status, the_order(county).revision) == (OrderStatus.SCHEDULED, 3)


def test_the_reconciliation_api_is_for_administrators_only(county):
    make_site(county, SITE)
    client = TestClient(create_app(county))
    headers = {"Authorization": f"Bearer {token(client, county, 'dr', Role.RADIOLOGIST)}"}
    assert client.get("/api/reconcile", headers=headers).status_code == 403
    assert client.post("/api/reconcile/studies/1.2.3/split", headers=headers).status_code == 403


def test_a_report_on_a_matched_study_signs_the_order_and_its_sr_names_it(county):
    site_id, _ = make_site(county, SITE)
    place(county, order(requested_procedure_id="RP1"))
    uid, _ = study(county, site_id)
    client = TestClient(create_app(county))
    dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
    assert client.get(f"/api/studies/{uid}/order", headers=dr).json()["order"]["exam_purpose"] == "排除肺炎"
    client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
    client.post(f"/api/worklist/{uid}/claim", headers=dr)
    draft = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
    client.patch(f"/api/reports/{draft['id']}", json={"impression": "两肺未见异常。"}, headers=dr)
    assert client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                       headers=dr).status_code == 200
    run_task(county, DELIVER_TASK, draft["id"])
    with county.sessions() as s:
        document = json.loads(s.get(Report, draft["id"]).document_json)
        keys = json.loads(s.execute(select(ReportDelivery.object_keys_json)).scalar_one())
    assert (document["order"]["placer_order_number"], document["order"]["requested_procedure_id"]) == ("HIS-1001", "RP1")
    sr = pydicom.dcmread(io.BytesIO(county.store.get(keys["sr"])))
    assert (sr.PatientName, sr.PatientID) == ("王^小明", "P-1")
    assert sr.ReferencedRequestSequence[0].PlacerOrderNumberImagingServiceRequest == "HIS-1001"


def test_a_study_made_with_the_uid_the_order_assigned_is_linked_by_it(county):
    site_id, _ = make_site(county, SITE)
    uid = "1.2.826.0.1.3680043.10.543.20261207.1"
    place(county, order(study_instance_uid=uid, modality="CT"))  # another modality: the UID decides
    study(county, site_id, StudyInstanceUID=uid, AccessionNumber="")
    assert row(county, uid)[0].order_match == "uid"


def test_a_study_of_an_order_cancelled_before_it_arrived_is_linked_and_flagged(county):
    site_id, _ = make_site(county, SITE)
    place(county, order(status="cancelled"))
    uid, _ = study(county, site_id)
    st, _ = row(county, uid)
    assert (st.order_match, json.loads(st.order_conflict)) == ("accession", ["order_cancelled"])
    assert the_order(county).status == OrderStatus.CANCELLED
    assert waiting(county) == {uid: ["order_cancelled"]}


def test_a_conflict_resolves_when_the_his_corrects_its_order(county):
    site_id, _ = make_site(county, SITE)
    place(county, order(patient_birth_date="19610102"))  # the HIS mistyped the birth date
    uid, _ = study(county, site_id)
    assert row(county, uid)[0].order_match == "conflict"
    place(county, order())
    st, _ = row(county, uid)
    assert (st.order_match, st.order_conflict, st.patient_name) == ("accession", "", "王^小明")
    assert waiting(county) == {}


def test_an_order_changed_to_another_patient_after_linking_puts_the_study_back_in_conflict(county):
    site_id, _ = make_site(county, SITE)
    place(county, order())
    uid, _ = study(county, site_id)
    place(county, order(patient_id="P-8", patient_name="赵^四", patient_name_pinyin=""))
    st, patient = row(county, uid)
    assert (st.order_match, set(json.loads(st.order_conflict))) == ("conflict", {"patient_id", "name"})
    assert (st.patient_name, patient.issuer) == ("王^小明", "site:township-a")  # its own identity back
    assert the_order(county).status == OrderStatus.SCHEDULED
