"""Automatic assignment: on duty, competent, least loaded, STAT first; reassignment when unopened."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from relay.config import Settings
from relay.county.app import create_app
from relay.county.clock import now_utc
from relay.county.db.engine import session_scope
from relay.county.db.models import Study, StudyTransition, User
from relay.county.reading import service as reading
from relay.county.reading.assign import assign_round, assign_study
from relay.county.worklist.service import worklist
from relay.dicom.vocab import Priority, Role
from tests.county.test_index import index, ingest
from tests.county.test_reading import principal
from tests.county.test_reports import login
from tests.factories import encode, make_dataset, make_site

SETTINGS = Settings(reassign_stat_minutes=5, reassign_minutes=30)


def reader(county, name: str, *, competences: str = "", regions: str = "", on_duty: bool = True):
    p = principal(county, name)
    with county.sessions() as s:
        s.execute(update(User).where(User.id == p.user_id).values(competences=competences, body_regions=regions,
                                                                  on_duty=on_duty))
        s.commit()
    return p


def study(county, site_id: int, modality: str, priority: Priority = Priority.ROUTINE,
          body_part: str | None = None) -> str:
    ds = make_dataset(Modality=modality, **({"BodyPartExamined": body_part} if body_part else {}))
    index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
    return str(ds.StudyInstanceUID)


def holders(county) -> dict[str, str | None]:
    admin = principal(county, "boss")
    with county.sessions() as s:
        return {i.study_instance_uid: i.assigned_to for i in worklist(session=s, principal=admin)}


def test_each_study_goes_to_an_on_duty_reader_who_reads_that_modality(county):
    site, _ = make_site(county)
    reader(county, "dr.ct", competences="CT")
    reader(county, "dr.ecg", competences="ECG")
    reader(county, "dr.off", on_duty=False)
    ct, ecg = study(county, site, "CT"), study(county, site, "ECG")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS) == (2, 0)
    assert holders(county) == {ct: "dr.ct", ecg: "dr.ecg"}


def test_a_head_ct_goes_to_the_neuro_reader_and_a_chest_ct_to_the_chest_reader(county):
    site, _ = make_site(county)
    reader(county, "dr.chest", competences="CT,DX", regions="CHEST")
    reader(county, "dr.neuro", competences="CT", regions="HEAD,NECK")
    head = study(county, site, "CT", body_part="head")  # case as some scanners write it
    brain = study(county, site, "CT", body_part="BRAIN")  # a synonym of HEAD
    chest = study(county, site, "CT", body_part="CHEST")
    chest_dx = study(county, site, "DX", body_part="CHEST")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS) == (4, 0)
    assert holders(county) == {head: "dr.neuro", brain: "dr.neuro", chest: "dr.chest", chest_dx: "dr.chest"}


def test_the_assign_task_for_one_study_obeys_body_regions_too(county):
    site, _ = make_site(county)
    reader(county, "dr.chest", competences="CT", regions="CHEST")  # least loaded: holds nothing
    neuro = reader(county, "dr.neuro", competences="CT", regions="HEAD")
    head = study(county, site, "CT", body_part="HEAD")
    with county.sessions() as s:
        pk = s.execute(select(Study.id).where(Study.study_uid == head)).scalar_one()
        assert assign_study(session=s, settings=SETTINGS, study_id=pk) == neuro.username
    assert holders(county) == {head: "dr.neuro"}


def test_a_study_of_a_region_nobody_on_duty_reads_waits_and_one_without_a_body_part_goes_by_modality(county):
    site, _ = make_site(county)
    reader(county, "dr.chest", competences="CT", regions="CHEST")
    reader(county, "dr.ecg", competences="ECG", regions="CHEST")
    knee = study(county, site, "CT", body_part="KNEE")
    unnamed = study(county, site, "CT")
    ecg = study(county, site, "ECG")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS) == (2, 0)
    assert holders(county) == {knee: None, unnamed: "dr.chest", ecg: "dr.ecg"}


def test_an_unopened_head_ct_is_not_moved_to_a_reader_who_does_not_read_heads(county):
    site, _ = make_site(county)
    neuro = reader(county, "dr.neuro", regions="HEAD")
    head = study(county, site, "CT", Priority.STAT, body_part="HEAD")
    with session_scope(county.sessions) as s:
        reading.claim(session=s, principal=neuro, study_uid=head)
    reader(county, "dr.chest", regions="CHEST")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS, now=now_utc() + timedelta(minutes=6)) == (0, 0)
    reader(county, "dr.neuro2", regions="HEAD")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS, now=now_utc() + timedelta(minutes=6)) == (0, 1)
    assert holders(county) == {head: "dr.neuro2"}


def test_the_least_loaded_reader_gets_the_next_study_and_stat_goes_first(county):
    site, _ = make_site(county)
    reader(county, "dr.a")
    reader(county, "dr.b")
    routine = [study(county, site, "DX") for _ in range(3)]
    stat = study(county, site, "DX", Priority.STAT)
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS) == (4, 0)
        first = s.execute(select(StudyTransition.detail).where(StudyTransition.state == "assigned")
                          .order_by(StudyTransition.id).limit(1)).scalar_one()
    got = holders(county)
    assert sorted(got.values()) == ["dr.a", "dr.a", "dr.b", "dr.b"]  # 2 each: balanced
    assert first == f"to {got[stat]}" and set(got) == {stat, *routine}


def test_a_study_not_opened_in_time_goes_to_another_reader_and_an_opened_one_stays(county):
    site, _ = make_site(county)
    a = reader(county, "dr.a")
    unopened, opened = study(county, site, "DX", Priority.STAT), study(county, site, "DX", Priority.STAT)
    with session_scope(county.sessions) as s:
        reading.claim(session=s, principal=a, study_uid=unopened)
        reading.claim(session=s, principal=a, study_uid=opened)
        reading.open_study(session=s, principal=a, study_uid=opened)
    reader(county, "dr.b")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS, now=now_utc() + timedelta(minutes=6)) == (0, 1)
        last = s.execute(select(StudyTransition.detail).order_by(StudyTransition.id.desc()).limit(1)).scalar_one()
    assert holders(county) == {unopened: "dr.b", opened: "dr.a"}
    assert last.startswith("reassigned")


def test_no_one_on_duty_means_nothing_is_assigned(county):
    site, _ = make_site(county)
    reader(county, "dr.off", on_duty=False)
    study(county, site, "CT")
    with county.sessions() as s:
        assert assign_round(session=s, settings=SETTINGS) == (0, 0)


def test_an_administrator_puts_a_reader_on_duty_with_competences(county):
    principal(county, "dr.new")
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss2", Role.ADMIN)
        r = client.patch("/api/users/dr.new", json={"on_duty": True, "competences": "ct, dx",
                                                     "body_regions": "chest, Brain"}, headers=admin)
        assert r.status_code == 200 and r.json() == {"username": "dr.new", "role": "radiologist",
                                                      "on_duty": True, "competences": "CT,DX",
                                                      "body_regions": "CHEST,HEAD"}
        r = client.patch("/api/users/dr.new", json={"body_regions": ""}, headers=admin)
        assert r.json()["body_regions"] == "" and r.json()["competences"] == "CT,DX"  # back to any region
        reader_auth = login(client, county, "dr.x", Role.RADIOLOGIST)
        assert client.patch("/api/users/dr.new", json={"on_duty": False}, headers=reader_auth).status_code == 403


def test_a_study_going_onto_the_queue_is_sent_to_the_assign_queue_once(county, amqp_url):
    import pika

    from relay.county.jobs import INDEX_TASK, queue_name
    from tests.county.test_delivery import run_task

    site, _ = make_site(county)
    first = make_dataset(Modality="DX")
    second = make_dataset(Modality="DX", StudyInstanceUID=first.StudyInstanceUID)
    for ds in (first, second):  # the second instance adds a series: the study is already queued
        run_task(county, INDEX_TASK, ingest(county, encode(ds), site_id=site))
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        method, _, body = ch.basic_get(queue_name(county.settings, "assign"), auto_ack=True)
        rest = ch.queue_declare(queue_name(county.settings, "assign"), passive=True).method.message_count
    finally:
        conn.close()
    with county.sessions() as s:
        study_id = s.execute(select(Study.id)).scalar_one()
    assert method is not None and rest == 0
    assert json.loads(body)[0] == [study_id]  # the study's id, nothing else
