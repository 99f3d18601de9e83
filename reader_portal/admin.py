"""The administrator's pages: turnaround (运营总览), the edge fleet, readers' workload, audit,
reports to the HIS (HIS 回传), and the identity check (身份核对) of studies and orders.

Each page is a shell: its figures come from the administrators' JSON API
(relay.county.tat, relay.county.edges, relay.county.audit) through the shared ``api()``
helper, with the session cookie, and its charts are inline SVG drawn in the browser by
``/portal/static/admin.js``. Nothing is fetched from outside the county.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from relay.county.audit.service import Action
from relay.county.auth.deps import CountyDep
from relay.county.tat.service import STAGES
from relay.dicom.vocab import Role
from reader_portal.pages import LangQuery, PageSessionDep, render, require_role

STATIC = Path(__file__).with_name("static")
STATIC_PATH = "/portal/static"
ATNA_EXPORT_HINTS = ("/api/audit/export", "/api/audit/atna")
"""Where an ATNA export of the audit trail may be served; the audit page links to the first
route of the app that starts with one of these (none: no link)."""

router = APIRouter(include_in_schema=False)


def _atna_export(request: Request) -> str | None:
    # The OpenAPI paths list every route, however routers are nested (generated once, cached).
    paths: dict[str, object] = request.app.openapi().get("paths", {})
    return next((path for path in paths if path.startswith(ATNA_EXPORT_HINTS) and "{" not in path), None)


@router.get("/portal/admin/tat", response_class=HTMLResponse)
def tat_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """运营总览: turnaround per stage as charts, a trend per day or week, live SLA breaches."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_tat.html", county=county, who=who, lang=lang, active="admin_tat",
                  stages=[name for name, _a, _b in STAGES])


@router.get("/portal/admin/edges", response_class=HTMLResponse)
def edges_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """前置机: every township edge's health with its alarms, refreshed by itself."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_edges.html", county=county, who=who, lang=lang, active="admin_edges",
                  spool_alarm_minutes=county.settings.edge_spool_alarm_minutes)


@router.get("/portal/admin/workload", response_class=HTMLResponse)
def workload_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """阅片工作量: per reader, what they hold, what they sign, how long reading takes."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_workload.html", county=county, who=who, lang=lang, active="admin_workload")


@router.get("/portal/admin/audit", response_class=HTMLResponse)
def audit_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """审计日志: search the audit trail, verify its hash chain, export it."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_audit.html", county=county, who=who, lang=lang, active="admin_audit",
                  actions=[a.value for a in Action], atna_export=_atna_export(request))


@router.get("/portal/admin/his", response_class=HTMLResponse)
def his_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """HIS 回传: signed reports on their way to the hospital's HIS, refused or overdue ones red."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_his.html", county=county, who=who, lang=lang, active="admin_his",
                  overdue_minutes=county.settings.his_overdue_minutes)
@router.get("/portal/admin/reconcile", response_class=HTMLResponse)
def reconcile_page(request: Request, who: PageSessionDep, county: CountyDep, lang: LangQuery = None) -> HTMLResponse:
    """身份核对: studies whose identity contradicts their order, the two side by side, 关联/拆分."""
    require_role(who, Role.ADMIN)
    return render(request, "admin_reconcile.html", county=county, who=who, lang=lang, active="admin_reconcile")


def install(app: FastAPI) -> None:
    """Add the admin pages and the portal's static files (charts, styles) to ``app``."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="portal-static")
