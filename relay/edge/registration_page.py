"""GET/POST /register on the technician's page: the registration form (登记) and today's orders.

A registered order is written to the edge's order cache and its upload queue before the
page answers (relay.edge.orders), so the modality's worklist has it at once, also with
the WAN down; the page then lists it as 待上传 until the county confirmed it (已上传).
The form's rules and numbers are in relay.edge.registration. Login and CSRF as on the
rest of the page (relay.edge.page_security); nothing of the patient is logged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from relay.config import EdgeSettings
from relay.dicom.orders import Order
from relay.edge import page_security as security
from relay.edge.orders import CachedOrder, Origin, OrderCache, local_date_time
from relay.edge.page_text import TEXT
from relay.edge.registration import (
    MODALITIES,
    PRIORITIES,
    SEXES,
    check_form,
    make_order,
    next_sequence,
    site_code,
)

log = logging.getLogger(__name__)


def _lang(value: str | None) -> str:
    return "en" if value == "en" else "zh"


def _state(cached: CachedOrder) -> str:
    if cached.upload is not None:
        return f"upload_{cached.upload.value}"
    return "from_county" if cached.origin is Origin.COUNTY else "upload_pending"


def todays_orders(orders: OrderCache, zone: ZoneInfo, now: datetime) -> list[dict[str, Any]]:
    """Today's orders of the cache (registered here or from the county), newest first."""
    today = now.astimezone(zone).strftime("%Y%m%d")
    views = []
    for cached in orders.orders():
        order = cached.order
        day, at = local_date_time(order, zone, now)
        if day != today:
            continue
        views.append({"accession": order.accession_number, "name": order.patient_name.replace("^", ""),
                      "pinyin": order.patient_name_pinyin.replace("^", " "), "patient_id": order.patient_id,
                      "modality": order.modality, "procedure": order.procedure_description,
                      "priority": order.priority, "status": order.status, "time": f"{at[:2]}:{at[2:4]}" if at else "",
                      "state": _state(cached), "error": cached.upload_error or ""})
    return list(reversed(views))


def add_registration_routes(app: FastAPI, *, sessions: security.Sessions, orders: OrderCache,
                            settings: EdgeSettings, zone: ZoneInfo, templates: Jinja2Templates) -> None:
    """GET /register (the form and today's orders) and POST /register (one order)."""
    code = site_code(settings.edge_site, settings.edge_site_code)

    def render(request: Request, session: security.PageSession, lang: str, *, values: dict[str, str],
               errors: dict[str, str], done: str = "", status: int = 200) -> Response:
        context = {"t": TEXT[lang], "lang": lang, "csrf": session.csrf, "technician": session.technician,
                   "nonce": request.state.nonce, "values": values, "errors": errors, "done": done,
                   "modalities": MODALITIES, "sexes": SEXES, "priorities": PRIORITIES,
                   "orders": todays_orders(orders, zone, datetime.now(zone))}
        return templates.TemplateResponse(request, "register.html", context, status_code=status)

    @app.get("/register", response_class=HTMLResponse)
    def register_form(request: Request, lang: str | None = None, done: str | None = None) -> Response:
        session = sessions.get(request.cookies.get(security.SESSION_COOKIE))
        if session is None:
            return RedirectResponse(f"/login?lang={_lang(lang)}", status_code=303)
        return render(request, session, _lang(lang), values={"priority": "routine", "modality": "DX"}, errors={},
                      done=done or "")

    @app.post("/register")
    async def register(request: Request) -> Response:
        form, refused = await security.checked_post(request, sessions)
        if refused is not None:
            return refused
        session = sessions.get(request.cookies.get(security.SESSION_COOKIE))
        assert session is not None  # checked_post found it
        lang = _lang(form.get("lang"))
        now = datetime.now(zone)
        checked = check_form(form, today=now.date())
        if checked.errors:
            log.info("registration form refused fields=%s", ",".join(sorted(checked.errors)))
            return render(request, session, lang, values={k: form.get(k, "") for k in checked.values},
                          errors=checked.errors, status=422)

        def build(taken: set[str]) -> Order:
            return make_order(checked.values, site=settings.edge_site, code=code,
                              sequence=next_sequence(taken, code=code, now=now), now=now,
                              registered_by=session.technician.username)

        order = await run_in_threadpool(orders.register, build)  # fsynced: off the event loop
        log.info("order registered at the township accession=%s modality=%s", order.accession_number,
                 order.modality)
        return RedirectResponse(f"/register?lang={lang}&done={order.accession_number}", status_code=303)
