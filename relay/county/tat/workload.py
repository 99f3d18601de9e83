"""Readers' workload and live SLA breaches, from the per-study milestones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from relay.county.sla import SlaPolicy
from relay.county.tat import repository
from relay.county.tat.service import percentile
from relay.dicom.vocab import Priority

SIGNED_WINDOW = timedelta(days=7)
"""Signatures counted in ``signed_7d`` and in the median read time."""
ARRIVED_WINDOW = timedelta(days=30)
"""Only studies that arrived this recently are looked at (bounds the scan; a study read
more than 30 days after arrival does not count in a reader's week)."""


def workload(session: Session, *, now: datetime, zone: ZoneInfo) -> list[dict[str, Any]]:
    """Per reader: studies held now, signed today and in 7 days, median opened-to-signed seconds."""
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    readers: dict[str, dict[str, Any]] = {name: _empty(name, n) for name, n in repository.held_per_reader(session).items()}
    window = {"since": now - ARRIVED_WINDOW, "until": now + timedelta(seconds=1), "signed_after": now - SIGNED_WINDOW}
    if repository.is_postgresql(session):
        rows = repository.signatures_pg(session, midnight=midnight, **window)
    else:
        rows = _signatures(repository.signature_rows(session, **window), midnight)
    for name, signed, today, median in rows:
        row = readers.setdefault(name, _empty(name, 0))
        row.update(signed_7d=signed, signed_today=today, median_read_s=median)
    return sorted(readers.values(), key=lambda r: (-r["holding"], r["reader"]))


def _signatures(rows: list[tuple[str, datetime, datetime | None]],
                midnight: datetime) -> list[tuple[str, int, int, float | None]]:
    per: dict[str, list[Any]] = {}
    for reader, signed, opened in rows:
        entry = per.setdefault(reader, [0, 0, []])
        entry[0] += 1
        entry[1] += int(signed >= midnight)
        if opened is not None:
            entry[2].append((signed - opened).total_seconds())
    return [(name, n, today, percentile(sorted(reads), 0.5) if reads else None)
            for name, (n, today, reads) in per.items()]


def _empty(name: str, holding: int) -> dict[str, Any]:
    return {"reader": name, "holding": holding, "signed_today": 0, "signed_7d": 0, "median_read_s": None}


@dataclass(frozen=True, slots=True)
class Breach:
    study_uid: str
    site: str
    priority: str
    state: str
    held_by: str | None
    due_at: datetime
    overdue_s: float


def breaches(session: Session, *, now: datetime, sla: SlaPolicy) -> list[Breach]:
    """Open studies past their SLA deadline (``sla``: minutes from arrival to a signed report
    by priority and modality), most overdue first."""
    cutoffs = {p.value: now - timedelta(minutes=sla.shortest(p.value)) for p in Priority}
    rows = repository.breaches(session, cutoffs=cutoffs, default_cutoff=cutoffs[Priority.ROUTINE.value])
    out = []
    for uid, site, priority, state, holder, created, modalities in rows:
        due = sla.due(priority=priority, modalities=modalities, arrived=created)
        if due < now:
            out.append(Breach(uid, site, priority, state, holder, due, (now - due).total_seconds()))
    return sorted(out, key=lambda b: (-b.overdue_s, b.study_uid))
