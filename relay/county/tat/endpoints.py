"""GET /api/tat (figures) and GET /api/tat.csv (per-study times), for administrators."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from relay.county.auth.deps import AdminDep, CountyDep, SessionDep
from relay.county.errors import BadRequest
from relay.county.tat import service

router = APIRouter(prefix="/api", tags=["turnaround"])


class Figures(BaseModel):
    n: int
    p50_s: float
    p90_s: float
    max_s: float


class TatOut(BaseModel):
    since: datetime
    until: datetime
    group_by: str
    stages: list[str]
    groups: dict[str, dict[str, Figures]]


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    return since or until - timedelta(days=7), until


@router.get("/tat", response_model=TatOut)
def tat(_admin: AdminDep, session: SessionDep, county: CountyDep,
        group_by: Annotated[str, Query(description=f"one of {', '.join(service.GROUPS)}")] = "site",
        since: datetime | None = None, until: datetime | None = None) -> TatOut:
    """p50 / p90 / max seconds per stage and group, for studies that arrived in the window
    (default: the last 7 days); days are the site's (Asia/Shanghai by default)."""
    start, end = _window(since, until)
    studies = service.load(session, since=start, until=end)
    try:
        groups = service.figures(studies, group_by=group_by, zone=ZoneInfo(county.settings.timezone))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return TatOut(since=start, until=end, group_by=group_by, stages=[s[0] for s in service.STAGES],
                  groups={k: {name: Figures(n=f.n, p50_s=f.p50_s, p90_s=f.p90_s, max_s=f.max_s)
                              for name, f in v.items()} for k, v in groups.items()})


@router.get("/tat.csv")
def tat_csv(_admin: AdminDep, session: SessionDep, since: datetime | None = None,
            until: datetime | None = None) -> Response:
    """One row per study: its milestones (UTC) and stage durations in seconds; opens in a spreadsheet."""
    start, end = _window(since, until)
    milestones = ["received_at_edge", "arrived", "assigned", "reading", "signed", "delivered", "acknowledged"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["study_instance_uid", "site", "modality", "priority", "reader", *milestones,
                     *[s[0] + "_s" for s in service.STAGES]])
    for st in service.load(session, since=start, until=end):
        writer.writerow([st.study_uid, st.site, st.modality, st.priority, st.reader,
                         *[st.milestones[m].isoformat() if m in st.milestones else "" for m in milestones],
                         *["" if (d := st.duration_s(a, b)) is None else f"{d:.0f}" for _, a, b in service.STAGES]])
    # UTF-8 with BOM so that Excel on a county PC shows Chinese site names correctly.
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="tat.csv"'})


class BreachOut(BaseModel):
    study_instance_uid: str
    site: str
    priority: str
    state: str = Field(description="The stage where the time is going now.")
    held_by: str | None
    overdue_s: float
    sla_due_at: datetime


@router.get("/sla/breaches", response_model=list[BreachOut])
def sla_breaches(admin: AdminDep, session: SessionDep, county: CountyDep) -> list[BreachOut]:
    """Open studies past their SLA deadline, most overdue first."""
    from relay.county.worklist.service import SlaTargets, worklist

    s = county.settings
    sla = SlaTargets(stat=s.sla_stat_minutes, urgent=s.sla_urgent_minutes, routine=s.sla_routine_minutes)
    items = worklist(session=session, principal=admin, limit=5000, sla=sla)
    late = sorted((i for i in items if i.sla_remaining_s < 0), key=lambda i: i.sla_remaining_s)
    return [BreachOut(study_instance_uid=i.study_instance_uid, site=i.site, priority=i.priority, state=i.state,
                      held_by=i.assigned_to, overdue_s=-i.sla_remaining_s, sla_due_at=i.sla_due_at) for i in late]


class WorkloadOut(BaseModel):
    reader: str
    holding: int = Field(description="Studies assigned to or being read by the reader now.")
    signed_today: int = Field(description="Reports signed since local midnight.")
    signed_7d: int
    median_read_s: float | None = Field(description="Opened to signed, over the last 7 days.")


@router.get("/readers/workload", response_model=list[WorkloadOut])
def readers_workload(_admin: AdminDep, session: SessionDep, county: CountyDep) -> list[WorkloadOut]:
    """Per reader: what they hold now, what they signed, how long reading takes them."""
    from relay.county.tat.workload import workload

    zone = ZoneInfo(county.settings.timezone)
    return [WorkloadOut(**row) for row in workload(session, now=datetime.now(UTC), zone=zone)]
