"""Turnaround times from recorded transitions, never guessed.

For each study, the time of each stage is the first transition into it (edge receipt
comes from the instances the edge timestamped). Database triggers copy these first
times into the study's ``tat_*`` columns as the transitions are recorded (migration
0018), so the figures read one row per study. A stage duration is the difference of
two consecutive stage times; studies that have not reached a stage yet do not count
for it. Percentiles interpolate linearly between order statistics (as numpy's default
does, and PostgreSQL's ``percentile_cont``), so figures can be checked independently.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from relay.county.tat import repository

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
GROUPS = ("site", "modality", "priority", "reader", "day", "week", "all")
"""Ways to group studies. ``day`` and ``week`` (the Monday starting it) are of the arrival
at the county, in the site's zone."""
MILESTONES = tuple(repository.MILESTONES)


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


def iter_studies(session: Session, *, since: datetime, until: datetime) -> Iterator[StudyTimes]:
    """Milestones of the studies that arrived at the county in [since, until), streamed."""
    for uid, site, modality, priority, reader, *stamps in repository.study_rows(session, since=since, until=until):
        yield StudyTimes(uid, site, modality, priority, reader,
                         {name: at for name, at in zip(MILESTONES, stamps, strict=True) if at is not None})


def load(session: Session, *, since: datetime, until: datetime) -> list[StudyTimes]:
    """Milestones of the studies that arrived at the county in [since, until)."""
    return list(iter_studies(session, since=since, until=until))


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


def _key(study: StudyTimes, group_by: str, zone: ZoneInfo) -> str:
    if group_by == "all":
        return "all"
    if group_by in ("day", "week"):
        arrived = study.milestones.get("arrived")
        if arrived is None:
            return ""
        day = arrived.astimezone(zone).date()
        return (day - timedelta(days=day.weekday()) if group_by == "week" else day).isoformat()
    return str(getattr(study, group_by))


def _check(group_by: str) -> None:
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")


def figures(studies: list[StudyTimes], *, group_by: str, zone: ZoneInfo) -> dict[str, dict[str, StageFigures]]:
    """group -> stage -> p50/p90/max, over the studies that reached both ends of the stage."""
    _check(group_by)
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


def summary(session: Session, *, since: datetime, until: datetime, group_by: str,
            zone: ZoneInfo) -> dict[str, dict[str, StageFigures]]:
    """The dashboard's figures: computed by PostgreSQL where it runs, else in Python (same numbers)."""
    _check(group_by)
    if not repository.is_postgresql(session):
        return figures(load(session, since=since, until=until), group_by=group_by, zone=zone)
    result: dict[str, dict[str, StageFigures]] = {}
    order = {name: i for i, (name, _a, _b) in enumerate(STAGES)}
    rows = repository.stage_percentiles_pg(session, since=since, until=until, group_by=group_by,
                                           zone=zone.key, stages=STAGES)
    for key, name, n, p50, p90, top in sorted(rows, key=lambda r: (r[0], order[r[1]])):
        result.setdefault(key, {})[name] = StageFigures(n, p50, p90, top)
    return result

