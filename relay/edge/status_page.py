"""The technician's local status page: today's studies, their state, the spool, alarms,
the reports back from the county and their acknowledgement.

Served by the edge process on ``EdgeSettings.edge_status_host:edge_status_port`` (loopback
by default, HTTPS with ``edge_status_tls_cert``). Chinese by default, English with
``?lang=en``. Every route needs a technician's login (their county account for this
site, cached at the edge: relay.edge.technicians); the Host allow-list, the headers and
the sessions are in relay.edge.page_security. The state-changing actions (mark STAT,
acknowledge a report, register an order, log out) are POSTs carrying the session's CSRF token. An
acknowledgement names the logged-in technician and is journaled at the edge before the
page answers (relay.edge.acks), so a WAN outage neither loses it nor fails the page.

Patient names come from the journal's ``studies`` table (decoded from the first
instance's header with its Specific Character Set); they are rendered here and
never logged (uvicorn's access log is off: URLs carry Study UIDs only, but there is
no need for it).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from relay.config import EdgeSettings
from relay.edge import page_security as security
from relay.edge.acks import Ack, AckJournal, AckState
from relay.edge.admission import Alarms, disk_state
from relay.edge.bundle_outbox import uploaded_bytes
from relay.edge.orders import OrderCache
from relay.edge.registration_page import add_registration_routes
from relay.edge.page_text import TEXT, plain_reason
from relay.edge.report_pickup import local_reports
from relay.edge.technicians import LoginRefused, TechnicianCache
from relay.edge.completeness import StudyPhase, StudyRow
from relay.edge.journal import SpoolCounts
from relay.edge.spool import Spool

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SERVER_STOP_S = 5.0
"""Seconds ``StatusPage.stop`` waits for uvicorn to finish open requests."""


def display_name(raw: str) -> str:
    """A DICOM Person Name as people write it: the ideographic group if present
    ('Li^Na=李^娜' -> '李娜'), components joined without spaces for Chinese."""
    groups = [g for g in raw.split("=") if g.strip("^ ")]
    if not groups:
        return ""
    name = groups[1] if len(groups) > 1 else groups[0]
    parts = [p for p in name.split("^") if p]
    cjk = any("\u3400" <= ch <= "\u9fff" for ch in name)
    return ("" if cjk else " ").join(parts)


def human_bytes(n: float) -> str:
    """Bytes as B/KB/MB/GB/TB (powers of 1024), one decimal."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


@dataclass(frozen=True, slots=True)
class PageDeps:
    """What the page reads and writes: the open spool, the alarms, the site's zone, the
    technicians' logins and sessions, and the acknowledgement journal."""

    spool: Spool
    alarms: Alarms
    zone: ZoneInfo
    technicians: TechnicianCache
    acks: AckJournal
    sessions: security.Sessions
    allowed_hosts: frozenset[str]
    settings: EdgeSettings | None = None
    """For the reports section (the reports fetched to this edge)."""
    orders: OrderCache | None = None
    """The order cache the registration page (登记) writes to (relay.edge.registration_page)."""


def start_of_today(zone: ZoneInfo, now: datetime) -> datetime:
    """Midnight of today in the site's zone (studies are listed from then)."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), dtime(0, 0), tzinfo=zone)


def _local(iso_utc: str | None, zone: ZoneInfo) -> str:
    if not iso_utc:
        return ""
    return datetime.fromisoformat(iso_utc).astimezone(zone).strftime("%H:%M:%S")


def _study_time(row: StudyRow) -> str:
    t = row.study_time
    return f"{t[0:2]}:{t[2:4]}:{t[4:6]}".rstrip(":") if len(t) >= 4 else ""


def _view(row: StudyRow, zone: ZoneInfo, lang: str) -> dict[str, Any]:
    return {
        "uid": row.study_uid, "name": display_name(row.patient_name),
        "time": _study_time(row), "received": _local(row.first_at, zone),
        "modality": row.modality, "ae": row.calling_ae, "count": row.instance_count,
        "phase": row.phase.value, "percent": row.percent_sent,
        "sending": row.phase is StudyPhase.SENDING, "stat": row.priority.rank == 0,
        "priority": row.priority.value, "late": row.late_count, "error": row.last_error,
        "reason": plain_reason(row.last_error, lang),
    }


def _summary(counts: SpoolCounts, deps: PageDeps, lang: str = "zh") -> dict[str, Any]:
    disk = disk_state(deps.spool.root)
    age = counts.oldest_pending_age_s
    return {
        "pending": counts.pending, "pending_bytes": human_bytes(counts.pending_bytes),
        "oldest_s": None if age is None else int(age), "last_error": counts.last_error,
        "last_reason": plain_reason(counts.last_error, lang),
        "disk_free": f"{human_bytes(disk.free_bytes)} ({disk.free_percent:.0f}%)",
        "alarms": [msg for msg, _ in deps.alarms.active().values()],
    }


def page_context(deps: PageDeps, *, lang: str, now: datetime) -> dict[str, Any]:
    """Everything the template shows, in plain values (the session's parts are added by the route)."""
    studies = deps.spool.studies(since=start_of_today(deps.zone, now), now=now,
                                 uploading=uploaded_bytes(deps.spool.root))
    names = {row.study_uid: _view(row, deps.zone, lang)["name"] for row in studies}
    reports = report_views(deps, names)
    return {
        "t": TEXT[lang], "lang": lang,
        "studies": [_view(row, deps.zone, lang) for row in studies],
        "summary": _summary(deps.spool.counts(now=now), deps, lang),
        "reports": reports, "critical_open": any(r["critical"] and not r["ack"] for r in reports),
    }


def report_views(deps: PageDeps, names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The reports fetched to this edge with their acknowledgement state, newest first."""
    acks = deps.acks.all()
    items = local_reports(deps.settings) if deps.settings else []
    return [_report_view(item, deps, names or {}, acks.get(int(item["delivery_id"]))) for item in items]


def _report_view(item: dict[str, Any], deps: PageDeps, names: dict[str, str], ack: Ack | None) -> dict[str, Any]:
    folder = report_folder(deps, int(item["delivery_id"]))
    signed = datetime.fromisoformat(item["signed_at"]).astimezone(deps.zone).strftime("%m-%d %H:%M")
    # ack.json: acknowledged by an edge from before the journal, which told the county at once.
    state = ack.state.value if ack else (AckState.CONFIRMED.value if (folder / "ack.json").exists() else None)
    return {"id": item["delivery_id"], "kind": item["kind"], "critical": item["critical"],
            "reader": item["reader"], "signed": signed, "name": names.get(item["study_instance_uid"], ""),
            "study": item["study_instance_uid"], "pdf": (folder / "pdf.pdf").exists(), "ack": state,
            "ack_by": ack.display_name if ack else "",
            "ack_at": ack.acknowledged_at.astimezone(deps.zone).strftime("%H:%M") if ack else ""}


def report_folder(deps: PageDeps, delivery_id: int) -> Path:
    root = deps.settings.edge_spool_dir if deps.settings else deps.spool.root
    return root / "reports" / str(int(delivery_id))


def _lang(value: str | None) -> str:
    return "en" if value == "en" else "zh"


def build_app(deps: PageDeps) -> FastAPI:
    """The page's app behind the Host allow-list and the security headers: GET/POST /login,
    POST /logout, GET / (HTML), POST /studies/{uid}/stat, GET /reports/{id}/pdf, POST
    /reports/{id}/ack, GET /api/summary (JSON, no patient data), GET/POST /register (登记). All but /login need a
    technician's session; every POST its CSRF token."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(security.guard(deps.allowed_hosts))
    templates = Jinja2Templates(directory=str(TEMPLATES))
    add_login_routes(app, deps, templates)
    if deps.orders is not None and deps.settings is not None:
        add_registration_routes(app, sessions=deps.sessions, orders=deps.orders, settings=deps.settings,
                                zone=deps.zone, templates=templates)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, lang: str | None = None, auto: str | None = None) -> Response:
        session = deps.sessions.get(request.cookies.get(security.SESSION_COOKIE), touch=auto is None)
        if session is None:
            return RedirectResponse(f"/login?lang={_lang(lang)}{'&expired=1' if auto else ''}", status_code=303)
        context = page_context(deps, lang=_lang(lang), now=datetime.now(deps.zone))
        context.update(csrf=session.csrf, technician=session.technician, nonce=request.state.nonce)
        return templates.TemplateResponse(request, "status.html", context)

    @app.post("/studies/{study_uid}/stat")
    async def mark_stat(study_uid: str, request: Request) -> Response:
        form, refused = await _checked_post(request, deps)
        if refused is not None:
            return refused
        if not await run_in_threadpool(deps.spool.mark_study_stat, study_uid, reason="technician"):
            return JSONResponse({"detail": "unknown study"}, status_code=404)
        log.info("study %s marked STAT by the technician", study_uid)
        return RedirectResponse(f"/?lang={_lang(form.get('lang'))}", status_code=303)

    @app.get("/reports/{delivery_id}/pdf")
    def report_pdf(delivery_id: int, request: Request) -> Response:
        if deps.sessions.get(request.cookies.get(security.SESSION_COOKIE)) is None:
            return JSONResponse({"detail": "log in first"}, status_code=401)
        path = report_folder(deps, delivery_id) / "pdf.pdf"
        if not path.is_file():
            return JSONResponse({"detail": "no PDF for this report"}, status_code=404)
        return Response(path.read_bytes(), media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="report-{int(delivery_id)}.pdf"'})

    @app.post("/reports/{delivery_id}/ack")
    async def ack_report(delivery_id: int, request: Request) -> Response:
        form, refused = await _checked_post(request, deps)
        if refused is not None:
            return refused
        if not (report_folder(deps, delivery_id) / "delivery.json").is_file():
            return JSONResponse({"detail": "no such report at this edge"}, status_code=404)
        session = deps.sessions.get(request.cookies.get(security.SESSION_COOKIE))
        assert session is not None  # _checked_post found it
        await run_in_threadpool(deps.acks.record, delivery_id=delivery_id, username=session.technician.username,
                                display_name=session.technician.display_name)  # fsynced: off the event loop
        log.info("report delivery %d acknowledged at the township (journaled)", delivery_id)
        return RedirectResponse(f"/?lang={_lang(form.get('lang'))}", status_code=303)

    @app.get("/api/summary")
    def summary(request: Request) -> Response:
        if deps.sessions.get(request.cookies.get(security.SESSION_COOKIE), touch=False) is None:
            return JSONResponse({"detail": "log in first"}, status_code=401)
        return JSONResponse(_summary(deps.spool.counts(), deps))

    return app


async def _checked_post(request: Request, deps: PageDeps) -> tuple[dict[str, str], Response | None]:
    return await security.checked_post(request, deps.sessions)


def add_login_routes(app: FastAPI, deps: PageDeps, templates: Jinja2Templates) -> None:
    """GET/POST /login and POST /logout."""

    def login_page(request: Request, lang: str, *, error: str = "", status: int = 200) -> Response:
        token = request.cookies.get(security.LOGIN_COOKIE) or secrets.token_urlsafe(24)
        critical = any(r["critical"] and not r["ack"] for r in report_views(deps))
        response = templates.TemplateResponse(request, "login.html", {
            "t": TEXT[lang], "lang": lang, "csrf": token, "error": error, "critical_open": critical,
            "nonce": request.state.nonce}, status_code=status)
        deps.sessions.set_cookie(response, security.LOGIN_COOKIE, token)
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, lang: str | None = None, expired: str | None = None) -> Response:
        return login_page(request, _lang(lang), error=TEXT[_lang(lang)]["expired"] if expired else "")

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        lang = _lang(form.get("lang"))
        if not security.same_token(form.get("csrf"), request.cookies.get(security.LOGIN_COOKIE)):
            return JSONResponse({"detail": "bad or missing CSRF token"}, status_code=403)
        try:
            technician = await run_in_threadpool(deps.technicians.authenticate, form.get("username", "").strip(),
                                                 form.get("password", ""))
        except LoginRefused as exc:
            log.info("technician login refused locked=%s", exc.locked)
            return login_page(request, lang, error=TEXT[lang]["login_locked" if exc.locked else "login_failed"],
                              status=401)
        cookie, _ = deps.sessions.create(technician)
        log.info("technician logged in to the page")
        response = RedirectResponse(f"/?lang={lang}", status_code=303)
        deps.sessions.set_cookie(response, security.SESSION_COOKIE, cookie)
        response.delete_cookie(security.LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form, refused = await _checked_post(request, deps)
        if refused is not None:
            return refused
        deps.sessions.drop(request.cookies.get(security.SESSION_COOKIE))
        response = RedirectResponse(f"/login?lang={_lang(form.get('lang'))}", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE, path="/")
        return response


class StatusPage:
    """The page served by uvicorn in a background thread; ``stop()`` ends it.

    ``technicians``, ``acks`` and ``orders`` default to their files in the spool's folder;
    the agent passes the ones its background loops use."""

    def __init__(self, *, spool: Spool, alarms: Alarms, host: str, port: int,
                 timezone: str, settings: EdgeSettings | None = None,
                 technicians: TechnicianCache | None = None, acks: AckJournal | None = None,
                 orders: OrderCache | None = None) -> None:
        tls = settings is not None and settings.edge_status_tls_cert is not None
        allowed_setting = settings.edge_status_allowed_hosts if settings else ""
        technicians = technicians or TechnicianCache(
            spool.root, max_failures=settings.login_max_failures if settings else 5,
            lockout_minutes=settings.login_lockout_minutes if settings else 15.0)
        idle_minutes = settings.edge_status_session_idle_minutes if settings else 30.0
        deps = PageDeps(spool=spool, alarms=alarms, zone=ZoneInfo(timezone), technicians=technicians,
                        acks=acks or AckJournal(spool.root),
                        sessions=security.Sessions(idle_s=idle_minutes * 60.0, secure=tls),
                        allowed_hosts=security.allowed_hosts(allowed_setting, host), settings=settings,
                        orders=orders or (OrderCache(spool.root) if settings is not None else None))
        for warning in security.bind_warnings(host=host, tls=tls, allowed_setting=allowed_setting,
                                              technicians=technicians.active_count()):
            log.warning("security: %s", warning)
        tls_files: dict[str, Any] = {}
        if settings is not None and settings.edge_status_tls_cert is not None:
            tls_files = {"ssl_certfile": str(settings.edge_status_tls_cert),
                         "ssl_keyfile": str(settings.edge_status_tls_key) if settings.edge_status_tls_key else None}
        config = uvicorn.Config(build_app(deps), host=host, port=port, access_log=False,
                                log_level="warning", lifespan="off", **tls_files)
        self.deps = deps
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="relay-status-page",
                                        daemon=True)

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start serving; returns once the socket listens (or raises after ``timeout_s``)."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            if self.server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self.server.started:
            raise RuntimeError("status page did not start (port in use?)")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(SERVER_STOP_S)
