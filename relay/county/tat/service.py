"""Turnaround times from recorded transitions, never guessed.

For each study, the time of each stage is the first transition into it (edge receipt
comes from the instances the edge timestamped). A stage duration is the difference
of two consecutive stage times; studies that have not reached a stage yet do not
count for it. Percentiles interpolate linearly between order statistics (as numpy's
default does), so figures can be checked independently.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from relay.county.db.models import Instance, Site, Study, StudyTransition

STAGES: tuple[tuple[str, str, str], ...] = (
    ("edge_to_county", "received_at_edge", "arrived"),
    ("waiting_for_reader", "arrived", "assigned"),
    ("until_opened", "assigned", "reading"),
    ("reading", "reading", "signed"),
    ("signed_to_township", "signed", "delivered"),
    ("until_acknowledged", "delivered", "acknowledged"),
    ("arrival_to_signature", "arrived", "signed"),
    ("end_to_end", "received_at_edge", "acknowledged"),
)
"""(name, from milestone, to milestone). The last two span several stages."""
GROUPS = ("site", "modality", "priority", "reader", "day", "all")


@dataclass
class StudyTimes:
    """The milestones of one study (UTC) and what it is grouped by."""

    study_uid: str
    site: str
    modality: str
    priority: str
    reader: str
    milestones: dict[str, datetime] = field(default_factory=dict)

    def duration_s(self, start: str, end: str) -> float | None:
        a, b = self.milestones.get(start), self.milestones.get(end)
        return None if a is None or b is None else (b - a).total_seconds()


def load(session: Session, *, since: datetime, until: datetime) -> list[StudyTimes]:
    """Milestones of the studies that arrived at the county in [since, until)."""
    studies = session.execute(select(Study.id, Study.study_uid, Site.name, Study.modalities, Study.priority)
                              .join(Site, Site.id == Study.site_id)
                              .where(Study.created_at >= since, Study.created_at < until)).all()
    times = {pk: StudyTimes(uid, site, modality, priority, "") for pk, uid, site, modality, priority in studies}
    for pk, state, at, actor in _first_transitions(session, list(times)):
        times[pk].milestones[state] = at
        if state == "signed":
            times[pk].reader = actor
    for uid_pk, received in _edge_receipts(session, times):
        times[uid_pk].milestones["received_at_edge"] = received
    return list(times.values())


def _first_transitions(session: Session, pks: list[int]) -> Iterable[tuple[int, str, datetime, str]]:
    for chunk in (pks[i:i + 5000] for i in range(0, len(pks), 5000)):
        first = (select(StudyTransition.study_pk, StudyTransition.state, func.min(StudyTransition.id).label("id"))
                 .where(StudyTransition.study_pk.in_(chunk))
                 .group_by(StudyTransition.study_pk, StudyTransition.state).subquery())
        yield from session.execute(select(StudyTransition.study_pk, StudyTransition.state, StudyTransition.at,
                                          StudyTransition.actor).join(first, first.c.id == StudyTransition.id)).all()


def _edge_receipts(session: Session, times: dict[int, StudyTimes]) -> Iterable[tuple[int, datetime]]:
    by_uid = {t.study_uid: pk for pk, t in times.items()}
    uids = list(by_uid)
    for chunk in (uids[i:i + 5000] for i in range(0, len(uids), 5000)):
        rows = session.execute(select(Instance.study_uid, func.min(Instance.edge_received_at))
                               .where(Instance.study_uid.in_(chunk), Instance.edge_received_at.is_not(None))
                               .group_by(Instance.study_uid)).all()
        yield from ((by_uid[uid], at) for uid, at in rows if at is not None)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    position = (len(sorted_values) - 1) * q
    lo, hi = math.floor(position), math.ceil(position)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


@dataclass(frozen=True, slots=True)
class StageFigures:
    n: int
    p50_s: float
    p90_s: float
    max_s: float


def _key(study: StudyTimes, group_by: str, zone: object) -> str:
    if group_by == "all":
        return "all"
    if group_by == "day":
        arrived = study.milestones.get("arrived")
        return arrived.astimezone(zone).date().isoformat() if arrived else ""  # type: ignore[arg-type]
    return str(getattr(study, group_by))


def figures(studies: list[StudyTimes], *, group_by: str, zone: object) -> dict[str, dict[str, StageFigures]]:
    """group -> stage -> p50/p90/max, over the studies that reached both ends of the stage."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for study in studies:
        key = _key(study, group_by, zone)
        for name, start, end in STAGES:
            d = study.duration_s(start, end)
            if d is not None:
                samples[key][name].append(d)
    result: dict[str, dict[str, StageFigures]] = {}
    for key, stages in sorted(samples.items()):
        result[key] = {}
        for name, values in stages.items():
            values.sort()
            result[key][name] = StageFigures(len(values), percentile(values, 0.5), percentile(values, 0.9), values[-1])
    return result
