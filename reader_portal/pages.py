"""What every logged-in portal page shares: who is looking, the nav, and rendering.

A new page is a route like::

    @app.get("/portal/fleet", response_class=HTMLResponse, include_in_schema=False)
    def fleet_page(request: Request, who: PageSessionDep, county: CountyDep,
                   lang: LangQuery = None) -> HTMLResponse:
        require_role(who, Role.ADMIN)
        return render(request, "fleet.html", county=county, who=who, lang=lang, active="fleet")

plus a template that extends ``_base.html``, its script in ``reader_portal/static/``
(loaded with ``<script src>``, linted by ``make lint-js``) and, for a link in the header,
one ``NavItem`` in ``NAV`` (and its label in reader_portal.i18n). The page reads its data
through the JSON API with portal.js's shared ``api()`` helper; the server filters by role
and site as for any API client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from relay.county.auth import sessions
from relay.county.auth.deps import CountyDep, SessionDep, session_policy
from relay.county.context import County
from relay.county import errors
from relay.county.errors import Forbidden, Unauthorized
from relay.dicom.vocab import Role
from reader_portal.i18n import strings

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
LangQuery = Annotated[str | None, Query()]
LOGIN_PATH = "/portal/login"
HOME = "/portal/"
_EVERYONE = frozenset(Role)


@dataclass(frozen=True, slots=True)
class NavItem:
    """A link in the header: ``key`` names its label in reader_portal.i18n and, as
    ``active``, marks the current page; only ``roles`` see it."""

    key: str
    href: str
    roles: frozenset[Role] = _EVERYONE


NAV: list[NavItem] = [
    NavItem("worklist", HOME),
    NavItem("roster", "/portal/roster", frozenset({Role.ADMIN, Role.RADIOLOGIST})),
    NavItem("admin_tat", "/portal/admin/tat", frozenset({Role.ADMIN})),
    NavItem("admin_edges", "/portal/admin/edges", frozenset({Role.ADMIN})),
    NavItem("admin_workload", "/portal/admin/workload", frozenset({Role.ADMIN})),
    NavItem("admin_audit", "/portal/admin/audit", frozenset({Role.ADMIN})),
    NavItem("admin_his", "/portal/admin/his", frozenset({Role.ADMIN})),
    NavItem("admin_reconcile", "/portal/admin/reconcile", frozenset({Role.ADMIN})),
]
"""The header's links, in order. Admin pages add theirs here, e.g.
``NavItem("tat", "/portal/tat", frozenset({Role.ADMIN}))``."""


class LoginRequired(Exception):
    """No live session: the page answers with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _wanted(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def get_page_session(request: Request, session: SessionDep, county: CountyDep) -> sessions.PageSession:
    """The browser's live session, or LoginRequired (a redirect to the login page)."""
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        raise LoginRequired(_wanted(request))
    try:
        return sessions.resolve(session=session, session_id=session_id, policy=session_policy(county))
    except Unauthorized:
        raise LoginRequired(_wanted(request)) from None


PageSessionDep = Annotated[sessions.PageSession, Depends(get_page_session)]


def require_role(who: sessions.PageSession, *roles: Role) -> None:
    """Refuse (403) a page to anyone without one of ``roles``; the API checks again."""
    if who.principal.role not in roles:
        raise Forbidden("this page is not for your role")


def login_url(next_url: str = HOME) -> str:
    return LOGIN_PATH if next_url == HOME else f"{LOGIN_PATH}?next={quote(next_url, safe='')}"


def safe_next(next_url: str | None) -> str:
    """Where to go after login: only a page of the portal (no open redirect)."""
    if not next_url or not next_url.startswith("/portal/") or next_url.startswith(LOGIN_PATH):
        return HOME
    return next_url


CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""The portal's Content-Security-Policy: scripts only from the portal's own files (no inline
script, no event-handler attributes, no ``javascript:`` URLs), so text that slipped into a
page from a DICOM header or a report cannot run; never framed. Inline styles stay allowed
(the templates have <style> blocks; a style cannot run script)."""


def harden(response: Response) -> Response:
    """Headers for every portal page: never framed (clickjacking), never cached (the
    page carries the CSRF token and patient data), no script but the portal's own files."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def language(request: Request, lang: str | None) -> tuple[str, dict[str, str], str]:
    """The language (``?lang=`` or the ``lang`` cookie), its strings, and the other one."""
    chosen, t = strings(lang or request.cookies.get("lang"))
    return chosen, t, "en" if chosen == "zh-CN" else "zh-CN"


def render(request: Request, template: str, *, county: County, who: sessions.PageSession, lang: str | None,
           active: str = "", status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page extending ``_base.html``: strings, user, CSRF token and the nav it may see."""
    chosen, t, other = language(request, lang)
    nav = [item for item in NAV if who.principal.role in item.roles]
    response = templates.TemplateResponse(
        request, template,
        {"t": t, "lang": chosen, "other_lang": other, "zone": county.settings.timezone, "user": who,
         "csrf_token": who.csrf_token, "nav": nav, "active": active, **context},
        status_code=status_code)
    response.set_cookie("lang", chosen, samesite="lax")
    harden(response)
    return response


def install(app: FastAPI) -> None:
    """Send a page visitor without a session to the login form, and back afterwards."""

    async def _to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        response = RedirectResponse(login_url(exc.next_url), status_code=303)
        if request.query_params.get("lang"):  # the login form speaks the language asked for
            chosen, _ = strings(request.query_params["lang"])
            response.set_cookie("lang", chosen, samesite="lax")
        return harden(response)

    app.add_exception_handler(LoginRequired, _to_login)
    errors.set_html_renderer(app, error_page)

    @app.middleware("http")
    async def _portal_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Every answer under /portal, also a problem+json error or a redirect: the headers
        # of harden(); the static files keep their caching.
        response = await call_next(request)
        path = request.url.path
        if path.startswith("/portal/static/"):
            response.headers["X-Content-Type-Options"] = "nosniff"
        elif path.startswith("/portal"):
            harden(response)
        return response


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    """A browser's error page under /portal, in its language (API callers get problem+json)."""
    chosen, t, other = language(request, request.query_params.get("lang"))
    heading = t.get(f"err_{status}", t["err_other"])
    response = templates.TemplateResponse(
        request, "error.html",
        {"t": t, "lang": chosen, "other_lang": other, "status": status, "heading": heading,
         "detail": detail, "request_id": errors.request_id(request)},
        status_code=status)
    return harden(response)
