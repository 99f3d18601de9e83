"""Readers' workload: held studies, signed reports, read times (from the recorded transitions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from relay.county.db.models import ReadingItem, Study, User
from relay.county.tat.service import load, percentile


def workload(session: Session, *, now: datetime, zone: ZoneInfo) -> list[dict[str, Any]]:
    held = dict(session.execute(
        select(User.username, func.count()).join(ReadingItem, ReadingItem.assigned_user_id == User.id)
        .join(Study, Study.id == ReadingItem.study_pk).where(Study.state.in_(("assigned", "reading")))
        .group_by(User.username)).all())
    midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    readers: dict[str, dict[str, Any]] = {name: _empty(name, int(n)) for name, n in held.items()}
    reads: dict[str, list[float]] = {}
    for study in load(session, since=now - timedelta(days=30), until=now + timedelta(seconds=1)):
        signed = study.milestones.get("signed")
        if not study.reader or signed is None or signed < now - timedelta(days=7):
            continue
        row = readers.setdefault(study.reader, _empty(study.reader, 0))
        row["signed_7d"] += 1
        row["signed_today"] += int(signed >= midnight)
        duration = study.duration_s("reading", "signed")
        if duration is not None:
            reads.setdefault(study.reader, []).append(duration)
    for name, values in reads.items():
        readers[name]["median_read_s"] = percentile(sorted(values), 0.5)
    return sorted(readers.values(), key=lambda r: (-r["holding"], r["reader"]))


def _empty(name: str, holding: int) -> dict[str, Any]:
    return {"reader": name, "holding": holding, "signed_today": 0, "signed_7d": 0, "median_read_s": None}
