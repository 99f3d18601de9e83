"""The reading queue: STAT first, one holder per study, safe with many processes claiming."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import select, update

from relay.config import Settings
from relay.county.auth.service import Principal
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.db.models import StudyTransition, User
from relay.county.errors import Conflict, Forbidden
from relay.county.reading import service
from relay.dicom.vocab import Priority, Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site, make_user


def principal(county: County, username: str, role: Role = Role.RADIOLOGIST) -> Principal:
    make_user(county, username, role)
    with county.sessions() as s:
        user = s.execute(select(User).where(User.username == username)).scalar_one()
        return Principal(user.id, user.username, Role(user.role), user.site_id)


def queue_studies(county: County, n: int, priority: Priority = Priority.ROUTINE) -> list[str]:
    site_id = getattr(county, "_test_site", None) or make_site(county)[0]
    county._test_site = site_id  # type: ignore[attr-defined]
    uids = []
    for _ in range(n):
        ds = make_dataset()
        index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
        uids.append(ds.StudyInstanceUID)
    return uids


def test_claim_next_gives_stat_first_then_the_oldest(county):
    routine = queue_studies(county, 2)
    (stat,) = queue_studies(county, 1, Priority.STAT)
    reader = principal(county, "dr.wang")
    with session_scope(county.sessions) as s:
        order = [service.claim_next(session=s, principal=reader).study_uid for _ in range(3)]
        assert service.claim_next(session=s, principal=reader) is None
    assert order == [stat, *routine]


def test_claim_next_skips_studies_the_reader_is_not_competent_for(county):
    site_id, _ = make_site(county)
    uids = {}
    for name, modality, part, priority in [("head", "CT", "HEAD", Priority.STAT), ("ecg", "ECG", None, Priority.STAT),
                                           ("chest", "CT", "Chest", Priority.ROUTINE),
                                           ("unnamed", "CT", None, Priority.ROUTINE)]:
        ds = make_dataset(Modality=modality, **({"BodyPartExamined": part} if part else {}))
        index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
        uids[name] = ds.StudyInstanceUID
    chest, neuro = principal(county, "dr.chest"), principal(county, "dr.neuro")
    with county.sessions() as s:
        s.execute(update(User).where(User.id == chest.user_id).values(competences="CT", body_regions="CHEST"))
        s.execute(update(User).where(User.id == neuro.user_id).values(competences="CT,MR", body_regions="HEAD"))
        s.commit()
    with session_scope(county.sessions) as s:
        taken = [service.claim_next(session=s, principal=chest).study_uid for _ in range(2)]
        assert service.claim_next(session=s, principal=chest) is None  # the head CT and the ECG are not theirs
        assert service.claim_next(session=s, principal=neuro).study_uid == uids["head"]
        assert service.claim_next(session=s, principal=neuro) is None
    assert taken == [uids["chest"], uids["unnamed"]]


def test_a_held_study_cannot_be_claimed_by_another_reader(county):
    (uid,) = queue_studies(county, 1)
    wang, li = principal(county, "dr.wang"), principal(county, "dr.li")
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=wang, study_uid=uid)
        with pytest.raises(Conflict):
            service.claim(session=s, principal=li, study_uid=uid)
        with pytest.raises(Forbidden):
            service.release(session=s, principal=li, study_uid=uid)


def test_release_open_and_every_hand_over_is_a_transition_with_its_actor(county):
    (uid,) = queue_studies(county, 1)
    wang, admin = principal(county, "dr.wang"), principal(county, "boss", Role.ADMIN)
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=wang, study_uid=uid)
        service.release(session=s, principal=admin, study_uid=uid)
        service.claim(session=s, principal=wang, study_uid=uid)
        assert service.open_study(session=s, principal=wang, study_uid=uid).state == "reading"
        assert service.open_study(session=s, principal=wang, study_uid=uid).state == "reading"
        rows = s.execute(select(StudyTransition.state, StudyTransition.actor)
                         .order_by(StudyTransition.id)).all()
    assert [tuple(r) for r in rows] == [("arrived", ""), ("queued", ""), ("assigned", "dr.wang"),
                                        ("queued", "boss"), ("assigned", "dr.wang"), ("reading", "dr.wang")]


def test_a_technician_cannot_take_studies_from_the_reading_queue(county):
    queue_studies(county, 1)
    make_site(county, "township-x")
    tech = Principal(99, "tech", Role.TECHNICIAN, None)
    with session_scope(county.sessions) as s, pytest.raises(Forbidden):
        service.claim_next(session=s, principal=tech)


def _claim_all(settings: Settings, reader: Principal, out: mp.Queue) -> None:
    county = County(settings)
    got = []
    with session_scope(county.sessions) as s:
        while (claimed := service.claim_next(session=s, principal=reader)) is not None:
            got.append(claimed.study_uid)
    county.close()
    out.put(got)


def test_four_processes_claiming_at_once_never_share_a_study(county, settings):
    uids = queue_studies(county, 40)
    readers = [principal(county, f"dr.{i}") for i in range(4)]
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(settings, r, out)) for r in readers]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    flat = [uid for got in claimed for uid in got]
    assert sorted(flat) == sorted(uids)  # every study once, none twice


def test_the_worklist_shows_who_holds_a_study(county):
    from relay.county.worklist.service import worklist

    (uid,) = queue_studies(county, 1)
    wang = principal(county, "dr.wang")
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=wang, study_uid=uid)
        (item,) = worklist(session=s, principal=wang)
    assert (item.state, item.assigned_to) == ("assigned", "dr.wang")


def test_each_study_carries_its_sla_deadline_by_priority(county):
    from datetime import timedelta

    from relay.county.sla import SlaPolicy
    from relay.county.worklist.service import worklist

    queue_studies(county, 1)
    queue_studies(county, 1, Priority.STAT)
    reader = principal(county, "dr.wang")
    with county.sessions() as s:
        items = worklist(session=s, principal=reader, sla=SlaPolicy(stat=30, routine=1440))
        later = worklist(session=s, principal=reader, sla=SlaPolicy(stat=30, routine=1440),
                         now=items[0].arrived_at + timedelta(minutes=45))
    stat, routine = items
    assert stat.sla_due_at - stat.arrived_at == timedelta(minutes=30)
    assert routine.sla_due_at - routine.arrived_at == timedelta(hours=24)
    assert later[0].sla_remaining_s < 0 < later[1].sla_remaining_s  # STAT breached, routine not
