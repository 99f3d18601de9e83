"""The reading queue under load from several real API replicas and assignment workers.

Two `relay county` processes serve six readers over HTTP (claim-next, targeted claims and
opens, at once) while two other processes run assignment rounds, with reassignment after
about a second unopened. At the end every study has exactly one holder who reads it, every
change of hands is a transition the rules allow, and every loser got a 409.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import threading
import time
from datetime import timedelta
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from relay.config import Settings
from relay.county.clock import now_utc
from relay.county.context import County
from relay.county.db.models import OutboxEvent, ReadingItem, Study, StudyTransition, User
from relay.county.reading.assign import assign_round
from relay.county.reading.competence import Competence
from relay.county.studies.repository import study_regions
from relay.dicom.vocab import Priority
from tests.county.test_assign import reader
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site
from tests.processes import RelayProcess, base_env, wait_for
from tests.test_end_to_end import free_port, token

READERS = {  # username: (modalities, body regions); empty means any
    "dr.chest": ("CT", "CHEST"), "dr.neuro": ("CT", "HEAD"), "dr.ctdx": ("CT,DX", ""),
    "dr.film": ("DX", "CHEST"), "dr.ecg": ("ECG", ""), "dr.all": ("", "")}
KINDS = [("CT", "CHEST"), ("CT", "HEAD"), ("DX", "CHEST"), ("ECG", None), ("CT", None)]
STUDIES = 40
OPS_PER_READER = 40
"""HTTP calls each reader makes (bounded, not timed)."""
ROUNDS = 40
"""Assignment rounds each worker process runs."""
REASSIGN_MIN = 0.02
"""Minutes an assigned study may stay unopened in this test (1.2 s), so rounds reassign during the race."""


@dataclass
class Seen:
    """What the readers were told, per reader."""

    claims: list[tuple[str, str, str]] = field(default_factory=list)  # (reader, study, how) answered 200
    opens: list[tuple[str, str]] = field(default_factory=list)  # (reader, study) answered 200
    statuses: list[tuple[str, int, str]] = field(default_factory=list)  # (path, status, body) of every call
    lock: threading.Lock = field(default_factory=threading.Lock)


def _seed(county: County) -> list[str]:
    site_id, _ = make_site(county)
    uids = []
    for i in range(STUDIES):
        modality, part = KINDS[i % len(KINDS)]
        ds = make_dataset(Modality=modality, **({"BodyPartExamined": part} if part else {}))
        priority = Priority.STAT if i % 7 == 0 else Priority.ROUTINE
        index(county, ingest(county, encode(ds), site_id=site_id, priority=priority))
        uids.append(str(ds.StudyInstanceUID))
    return uids


def _fits(county: County) -> dict[str, set[str]]:
    """Per reader, the studies they are competent for (by the rules competence.py states)."""
    with county.sessions() as s:
        users = {u.username: Competence.of(u) for u in s.execute(select(User)).scalars()}
        studies = list(s.execute(select(Study)).scalars())
        regions = study_regions(s, [st.id for st in studies])
        return {name: {st.study_uid for st in studies
                       if c.reads(modalities=st.modalities, regions=regions.get(st.id, frozenset()))}
                for name, c in users.items() if name in READERS}


def _rounds(settings: Settings, rounds: int) -> None:
    """A worker's assignment thread, bounded: ``rounds`` rounds back to back."""
    county = County(settings)
    try:
        for _ in range(rounds):
            with county.sessions() as session:
                assign_round(session=session, settings=settings)
            time.sleep(0.05)
    finally:
        county.close()


def _read(name: str, bearer: str, bases: list[str], targets: list[str], seen: Seen, seed: int) -> None:
    """One reader: claim-next, targeted claims of studies they read, and opening what they got."""
    rnd = random.Random(seed)
    mine: list[str] = []
    headers = {"Authorization": f"Bearer {bearer}"}
    with httpx.Client(timeout=30, headers=headers) as http:
        for _ in range(OPS_PER_READER):
            base, roll = rnd.choice(bases), rnd.random()
            if roll < 0.4:
                path, how = "/api/worklist/claim-next", "claim-next"
            elif roll < 0.8 or not mine:
                path, how = f"/api/worklist/{rnd.choice(targets)}/claim", "claim"
            else:
                path, how = f"/api/worklist/{rnd.choice(mine)}/open", "open"
            r = http.post(base + path)
            with seen.lock:
                seen.statuses.append((path, r.status_code, r.text[:200]))
                if r.status_code == 200:
                    uid = r.json()["study_instance_uid"]
                    (seen.opens.append((name, uid)) if how == "open" else seen.claims.append((name, uid, how)))
            if r.status_code == 200 and how != "open":
                mine.append(r.json()["study_instance_uid"])


@pytest.fixture
def replicas(tmp_path: Path, settings: Settings, county: County) -> Iterator[list[str]]:
    """Two county API processes on free ports, on this run's database."""
    ports = [free_port(), free_port()]
    procs = [RelayProcess(f"county{i}", ["county", "--no-migrate"], cwd=tmp_path, logdir=tmp_path,
                          env=base_env(data_dir=str(tmp_path / f"var{i}"),
                                       database_url=settings.resolved_database_url,
                                       broker_url=settings.resolved_broker_url,
                                       store_url=settings.resolved_store_url,
                                       queue_prefix=settings.queue_prefix, county_port=str(port)))
             for i, port in enumerate(ports)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for base in bases:
            wait_for(f"county API {base}", lambda b=base: httpx.get(f"{b}/healthz").status_code == 200,
                     timeout=60, procs=procs)
        yield bases
    finally:
        logs = {p.name: p for p in procs}
        for p in procs:
            p.stop()
        for name, p in logs.items():
            if "Traceback" in p.log():
                print(f"--- {name} ---\n{p.log()[-6000:]}")


def _history(county: County) -> dict[str, list[tuple[str, str, str, str]]]:
    """Per study, its transitions from the first assignment on: (state, actor, detail, reader),
    where reader is who an ``assigned`` row gave it to (from the ``study.assigned`` event of the
    same transaction)."""
    with county.sessions() as s:
        uid_of = dict(s.execute(select(Study.id, Study.study_uid)).all())
        rows = s.execute(select(StudyTransition).order_by(StudyTransition.id)).scalars().all()
        events = [json.loads(e.payload) for e in s.execute(
            select(OutboxEvent).where(OutboxEvent.topic == "study.assigned").order_by(OutboxEvent.id)).scalars()]
    given: dict[str, list[str]] = defaultdict(list)
    for e in events:
        given[e["study_instance_uid"]].append(e["reader"])
    out: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for t in rows:
        uid = uid_of[t.study_pk]
        if t.state == "assigned":
            out[uid].append((t.state, t.actor, t.detail, given[uid].pop(0)))
        elif t.state == "reading":
            out[uid].append((t.state, t.actor, t.detail, t.actor))
    assert not any(given.values()), "a study.assigned event without its transition"
    return out


def test_replicas_and_rounds_racing_leave_each_study_with_one_competent_holder(
        county: County, settings: Settings, replicas: list[str]) -> None:
    uids = _seed(county)
    for name, (modalities, regions) in READERS.items():
        reader(county, name, competences=modalities, regions=regions)
    fits = _fits(county)
    assert all(fits.values()) and set().union(*fits.values()) == set(uids)
    bearers = {name: token(replicas[0], name, "correct-horse-1") for name in READERS}
    fast = settings.model_copy(update={"reassign_minutes": REASSIGN_MIN, "reassign_stat_minutes": REASSIGN_MIN})
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_rounds, args=(fast, ROUNDS)) for _ in range(2)]
    seen = Seen()
    threads = [threading.Thread(target=_read, args=(name, bearers[name], replicas, sorted(fits[name]), seen, i))
               for i, name in enumerate(READERS)]
    for w in workers:
        w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for w in workers:
        w.join(300)
    assert not any(t.is_alive() for t in threads) and all(w.exitcode == 0 for w in workers)
    with county.sessions() as s:  # a last round places whatever the race left unassigned
        assign_round(session=s, settings=settings)

    _assert_losers_got_409(seen)
    history = _history(county)
    with county.sessions() as s:
        held = dict(s.execute(select(Study.study_uid, User.username)
                              .join(ReadingItem, ReadingItem.study_pk == Study.id)
                              .join(User, User.id == ReadingItem.assigned_user_id, isouter=True)).all())
        states = dict(s.execute(select(Study.study_uid, Study.state)).all())
    assert set(held) == set(uids) and all(held.values()), "a study is left without a holder"
    assert all(states[u] in ("assigned", "reading") for u in uids)
    for uid in uids:
        _assert_hand_overs_follow_the_rules(uid, history[uid], held[uid], fits)
    _assert_answers_match_the_record(seen, history, held)


def _assert_losers_got_409(seen: Seen) -> None:
    unexpected = [s for s in seen.statuses if s[1] not in (200, 204, 409)]
    assert not unexpected, f"claims answered other than 200/204/409: {unexpected[:5]}"
    assert any(s[1] == 409 for s in seen.statuses), "no claim lost a race: the test did not race"


def _assert_hand_overs_follow_the_rules(uid: str, steps: list[tuple[str, str, str, str]], holder: str,
                                        fits: dict[str, set[str]]) -> None:
    """After the first assignment a study changes hands only by a round's reassignment of an
    unopened study; nobody gets a study they do not read; the last hand-over is the holder."""
    givens = [s for s in steps if s[0] == "assigned"]
    assert givens and givens[-1][3] == holder, (uid, steps, holder)
    for before, after in zip(steps, steps[1:]):
        if after[0] == "assigned":
            assert before[0] == "assigned", f"{uid}: reassigned after it was opened: {steps}"
            assert after[1] == "auto" and after[2].startswith("reassigned"), f"{uid}: taken from its holder: {steps}"
        else:
            assert after[3] == before[3], f"{uid}: opened by someone else than its holder: {steps}"
    for _, _, _, who in givens:
        assert uid in fits[who], f"{uid} given to {who}, who does not read it"


def _assert_answers_match_the_record(seen: Seen, history: dict[str, list[tuple[str, str, str, str]]],
                                     held: dict[str, str]) -> None:
    """Each 200 to a claim is a hand-over to that reader in the record (a targeted claim of a
    study already theirs is answered without one), and if they do not hold it now a later
    reassignment took it."""
    for name, uid, how in seen.claims:
        steps = history[uid]
        mine = [i for i, s in enumerate(steps) if s[0] == "assigned" and s[3] == name]
        assert mine, f"{name} was told they got {uid} by {how}, the record has no such hand-over: {steps}"
        if held[uid] != name:
            assert any(s[0] == "assigned" and s[1] == "auto" for s in steps[mine[-1] + 1:]), (name, uid, steps)
    for how in ("claim-next",):
        told = sorted((n, u) for n, u, h in seen.claims if h == how)
        recorded = sorted((s[1], u) for u, steps in history.items() for s in steps if s[2] == how)
        assert told == recorded, f"{how}: answers and transitions differ"
    for name, uid in seen.opens:
        assert ("reading", name) in {(s[0], s[3]) for s in history[uid]} or any(
            s[0] == "assigned" and s[3] == name for s in history[uid]), (name, uid)


CYCLES = 6
"""Times the open-versus-reassign race is set up again (bounded)."""
HELD = 3000
"""Overdue held studies per cycle: enough that a round's one locking scan lasts a while."""
OPENS = 150
"""Opens the holder tries per cycle, while the round scans."""


def _open_some(settings: Settings, holder: tuple[int, str], uids: list[str], go: Any, done: Any) -> None:
    """Each cycle the holder opens studies at random (as the viewer does) while a round runs."""
    from relay.county.auth.service import Principal
    from relay.county.errors import Conflict
    from relay.county.reading import service
    from relay.dicom.vocab import Role

    county, rnd = County(settings), random.Random(3)
    me = Principal(holder[0], holder[1], Role.RADIOLOGIST, None)
    try:
        for _ in range(CYCLES):
            go.wait(120)
            for uid in rnd.sample(uids, OPENS):
                with county.sessions() as s:
                    try:
                        service.open_study(session=s, principal=me, study_uid=uid)
                    except Conflict:
                        pass  # the round moved it first: that is allowed
            done.wait(120)
    finally:
        county.close()


def _clone_held(county: County, holder_id: int, n: int) -> list[str]:
    """``n`` more studies like the first one (rows only: the round reads no pixels), held by
    ``holder_id``."""
    with county.sessions() as s:
        s.execute(text("""
            INSERT INTO studies (study_uid, patient_pk, site_id, accession_number, study_date, study_time,
                                 description, modalities, patient_name, priority, state, created_at, updated_at)
            SELECT '2.25.' || g, patient_pk, site_id, '', study_date, study_time, '', modalities, patient_name,
                   'routine', 'assigned', created_at, updated_at
            FROM studies, generate_series(1, :n) AS g WHERE studies.id = (SELECT min(id) FROM studies)"""),
                  {"n": n})
        s.execute(text("""
            INSERT INTO reading_items (study_pk, priority_rank, queued_at, assigned_user_id, assigned_at)
            SELECT id, 2, created_at, :holder, created_at FROM studies WHERE study_uid LIKE '2.25.%'"""),
                  {"holder": holder_id})
        s.commit()
        return list(s.execute(select(Study.study_uid).where(Study.study_uid.like("2.25.%"))).scalars())


def test_a_round_never_takes_back_a_study_its_holder_has_opened(county: County, settings: Settings) -> None:
    """A round's scan for overdue studies and their holder opening them meet, again and again:
    a study may go to the other reader before it is opened, never after."""
    from sqlalchemy import update

    _seed(county)
    a, _ = reader(county, "dr.a"), reader(county, "dr.b")
    uids = _clone_held(county, a.user_id, HELD)
    fast = settings.model_copy(update={"reassign_minutes": REASSIGN_MIN, "reassign_stat_minutes": REASSIGN_MIN})
    ctx = mp.get_context("spawn")
    go, done = ctx.Barrier(2), ctx.Barrier(2)
    opener = ctx.Process(target=_open_some, args=(settings, (a.user_id, a.username), uids, go, done))
    opener.start()
    taken_back: list[str] = []
    for _ in range(CYCLES):
        with county.sessions() as s:  # every clone held by dr.a, unopened and overdue again
            ids = select(Study.id).where(Study.study_uid.like("2.25.%"))
            s.execute(update(Study).where(Study.id.in_(ids)).values(state="assigned"))
            s.execute(update(ReadingItem).where(ReadingItem.study_pk.in_(ids))
                      .values(assigned_user_id=a.user_id, assigned_at=now_utc() - timedelta(hours=1)))
            mark = s.execute(select(func.max(StudyTransition.id))).scalar_one() or 0
            s.commit()
        go.wait(120)
        time.sleep(0.05)  # the opens are under way when the round's scan starts
        with county.sessions() as s:
            assign_round(session=s, settings=fast)
        done.wait(120)
        taken_back += _reassigned_after_opening(county, mark)
    opener.join(120)
    assert opener.exitcode == 0
    assert not taken_back, f"{len(taken_back)} studies moved to another reader after their holder opened them"


def _reassigned_after_opening(county: County, after_id: int) -> list[str]:
    with county.sessions() as s:
        rows = s.execute(select(Study.study_uid, StudyTransition.state).join(Study, Study.id == StudyTransition.study_pk)
                         .where(StudyTransition.id > after_id).order_by(StudyTransition.id)).all()
    opened: set[str] = set()
    bad = []
    for uid, state in rows:
        if state == "reading":
            opened.add(uid)
        elif state == "assigned" and uid in opened:
            bad.append(uid)
    return bad


def _one_round(settings: Settings, go: Any) -> None:
    county = County(settings)
    try:
        go.wait(120)
        with county.sessions() as session:
            assign_round(session=session, settings=settings)
    finally:
        county.close()


def test_two_rounds_at_once_give_each_study_once_and_keep_loads_within_one_per_round(
        county: County, settings: Settings) -> None:
    """Loads are read without locks, so two simultaneous rounds may both favour the same
    reader; each still spreads its own share evenly, so loads differ by at most two."""
    uids = _seed(county)
    names = ["dr.a", "dr.b", "dr.c", "dr.d"]
    for name in names:
        reader(county, name)
    ctx = mp.get_context("spawn")
    go = ctx.Barrier(2)
    rounds = [ctx.Process(target=_one_round, args=(settings, go)) for _ in range(2)]
    for p in rounds:
        p.start()
    for p in rounds:
        p.join(120)
    assert all(p.exitcode == 0 for p in rounds)
    history = _history(county)
    assert all(len(history[u]) == 1 for u in uids), "a study was handed over twice"
    loads = [sum(1 for u in uids if history[u][0][3] == n) for n in names]
    assert sum(loads) == len(uids) and max(loads) - min(loads) <= 2, loads


def test_a_study_opened_twice_at_once_starts_reading_once(county: County) -> None:
    """Two opens of one study (two tabs, two replicas): the second waits for the first's lock
    and must then see that reading has started, not record it again."""
    from relay.county.auth.service import Principal
    from relay.county.reading import repository, service
    from relay.county.studies.repository import add_transition
    from relay.dicom.vocab import Role

    (uid,) = _seed(county)[:1]
    a = reader(county, "dr.a")
    me = Principal(a.user_id, a.username, Role.RADIOLOGIST, None)
    with county.sessions() as s:
        service.claim(session=s, principal=me, study_uid=uid)
    first = county.sessions()
    item, study = repository.item_for_update(first, uid)  # the first open, under way
    study.state = "reading"
    add_transition(first, study_pk=study.id, state="reading", at=now_utc(), actor=a.username)
    first.flush()
    def open_again() -> None:
        with county.sessions() as s:
            service.open_study(session=s, principal=me, study_uid=uid)

    second = threading.Thread(target=open_again)
    second.start()
    time.sleep(0.5)  # the second open is waiting on the item's lock (nothing is asserted on time)
    first.commit()
    first.close()
    second.join(30)
    assert not second.is_alive()
    steps = [s[0] for s in _history(county)[uid]]
    assert steps.count("reading") == 1, steps
