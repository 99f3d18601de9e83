"""Administrators' turnaround figures: GET /api/tat, /api/tat.csv, /api/sla/breaches,
/api/readers/workload. Every figure an admin page charts comes from one of these."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import AdminDep, CountyDep, SessionDep
from relay.county.context import County
from relay.county.errors import BadRequest
from relay.county.sla import SlaPolicy
from relay.county.tat import service
from relay.county.tat.workload import breaches, workload

router = APIRouter(prefix="/api", tags=["turnaround"])

DEFAULT_WINDOW = timedelta(days=7)
"""The dashboards' window when no ``since`` is given: the last 7 days."""
GroupBy = Literal["site", "modality", "priority", "reader", "day", "week", "all"]


class Figures(BaseModel):
    n: int = Field(description="Studies that reached both ends of the stage.")
    p50_s: float
    p90_s: float
    max_s: float


class TatOut(BaseModel):
    since: datetime
    until: datetime
    group_by: str
    stages: list[str] = Field(description="Stage names in path order; the last two span several stages.")
    groups: dict[str, dict[str, Figures]] = Field(
        description="group key -> stage -> figures (seconds). Keys: site name, modality, priority, reader "
                    "login ('' = not signed yet), day or week (Monday) of arrival as YYYY-MM-DD in the "
                    "site's zone, or 'all'. A stage no study completed is absent.")


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    return since or until - DEFAULT_WINDOW, until


@router.get("/tat", response_model=TatOut)
def tat(_admin: AdminDep, session: SessionDep, county: CountyDep,
        group_by: Annotated[GroupBy, Query(description="how to group the studies")] = "site",
        since: datetime | None = None, until: datetime | None = None) -> TatOut:
    """p50 / p90 / max seconds per stage and group, for studies that arrived in [since, until)
    (default: the last 7 days); days and weeks are the site's (Asia/Shanghai by default)."""
    start, end = _window(since, until)
    try:
        groups = service.summary(session, since=start, until=end, group_by=group_by,
                                 zone=ZoneInfo(county.settings.timezone))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return TatOut(since=start, until=end, group_by=group_by, stages=[s[0] for s in service.STAGES],
                  groups={k: {name: Figures(n=f.n, p50_s=f.p50_s, p90_s=f.p90_s, max_s=f.max_s)
                              for name, f in v.items()} for k, v in groups.items()})


CSV_MILESTONES = ["received_at_edge", "arrived", "assigned", "reading", "signed", "delivered", "acknowledged"]


def _csv_lines(county: County, start: datetime, end: datetime) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    # UTF-8 with BOM so that Excel on a county PC shows Chinese site names correctly.
    out.write("\ufeff")
    writer.writerow(["study_instance_uid", "site", "modality", "priority", "reader", *CSV_MILESTONES,
                     *[s[0] + "_s" for s in service.STAGES]])
    with county.sessions() as session:  # its own: the response streams after the route returned
        for i, st in enumerate(service.iter_studies(session, since=start, until=end)):
            writer.writerow([st.study_uid, st.site, st.modality, st.priority, st.reader,
                             *[st.milestones[m].isoformat() if m in st.milestones else "" for m in CSV_MILESTONES],
                             *["" if (d := st.duration_s(a, b)) is None else f"{d:.0f}" for _, a, b in service.STAGES]])
            if i % 1000 == 999:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
    yield out.getvalue()


@router.get("/tat.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per study"}})
def tat_csv(admin: AdminDep, county: CountyDep, request: Request, since: datetime | None = None,
            until: datetime | None = None) -> StreamingResponse:
    """One row per study: its milestones (UTC) and stage durations in seconds; opens in a
    spreadsheet. Streamed; recorded in the audit trail as an export."""
    start, end = _window(since, until)
    audit(county, request, admin, Action.EXPORT, object_type="tat.csv",
          detail=f"since={start.isoformat()} until={end.isoformat()}")
    return StreamingResponse(_csv_lines(county, start, end), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="tat.csv"'})


class BreachOut(BaseModel):
    study_instance_uid: str
    site: str
    priority: str
    state: str = Field(description="The stage where the time is going now.")
    held_by: str | None
    overdue_s: float
    sla_due_at: datetime


@router.get("/sla/breaches", response_model=list[BreachOut],
            responses={200: {"headers": {"X-Total-Count": {"description": "breaches in all, beyond the limit too",
                                                           "schema": {"type": "integer"}}}}})
def sla_breaches(_admin: AdminDep, session: SessionDep, county: CountyDep, response: Response,
                 limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[BreachOut]:
    """Open studies past their SLA deadline (arrival + the priority's minutes, or the
    modality's where RELAY_SLA_OVERRIDES says), most overdue first, at most ``limit``; the
    header X-Total-Count says how many there are."""
    late = breaches(session, now=datetime.now(UTC), sla=SlaPolicy.from_settings(county.settings))
    response.headers["X-Total-Count"] = str(len(late))
    return [BreachOut(study_instance_uid=b.study_uid, site=b.site, priority=b.priority, state=b.state,
                      held_by=b.held_by, overdue_s=b.overdue_s, sla_due_at=b.due_at) for b in late[:limit]]


class WorkloadOut(BaseModel):
    reader: str
    holding: int = Field(description="Studies assigned to or being read by the reader now.")
    signed_today: int = Field(description="Reports signed since local midnight.")
    signed_7d: int
    median_read_s: float | None = Field(description="Opened to signed, over the last 7 days.")


@router.get("/readers/workload", response_model=list[WorkloadOut])
def readers_workload(_admin: AdminDep, session: SessionDep, county: CountyDep) -> list[WorkloadOut]:
    """Per reader: what they hold now, what they signed, how long reading takes them."""
    zone = ZoneInfo(county.settings.timezone)
    return [WorkloadOut(**row) for row in workload(session, now=datetime.now(UTC), zone=zone)]
