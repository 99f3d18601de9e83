"""The login form and logout: a server-side session in an HttpOnly cookie.

Passwords go through the same lockout and audit as the API's token login. The form is
protected against login CSRF by SameSite and by refusing a foreign ``Origin``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from relay.county.auth import sessions
from relay.county.auth.deps import CountyDep, SessionDep, own_origin, session_policy
from relay.county.auth.login import audit_login, password_login
from relay.county.auth.service import LoginLocked
from relay.county.context import County
from relay.county.errors import Forbidden, Unauthorized
from reader_portal.pages import (LOGIN_PATH, LangQuery, harden, language, login_url, safe_next,
                                 templates)

router = APIRouter(include_in_schema=False)


def _login_form(request: Request, *, lang: str | None, next_url: str, status_code: int = 200,
                error: str = "", notice: str = "", username: str = "") -> HTMLResponse:
    chosen, t, other = language(request, lang)
    response = templates.TemplateResponse(
        request, "login.html",
        {"t": t, "lang": chosen, "other_lang": other, "next": next_url, "error": error, "notice": notice,
         "username": username}, status_code=status_code)
    response.set_cookie("lang", chosen, samesite="lax")
    harden(response)
    return response


def _secure(request: Request, county: County) -> bool:
    forced = county.settings.session_cookie_secure
    return request.url.scheme == "https" if forced is None else forced


@router.get(LOGIN_PATH, response_class=HTMLResponse)
def login_page(request: Request, session: SessionDep, county: CountyDep, lang: LangQuery = None,
               next: str | None = None) -> Response:
    """The login form (Chinese first); a browser already logged in goes straight on."""
    next_url = safe_next(next)
    session_id = request.cookies.get(sessions.COOKIE)
    if session_id:
        try:
            sessions.resolve(session=session, session_id=session_id, policy=session_policy(county))
            return harden(RedirectResponse(next_url, status_code=303))
        except Unauthorized:
            _, t, _ = language(request, lang)
            return _login_form(request, lang=lang, next_url=next_url, notice=t["session_ended"])
    return _login_form(request, lang=lang, next_url=next_url)


@router.post(LOGIN_PATH, response_class=HTMLResponse)
def login(request: Request, session: SessionDep, county: CountyDep,
          username: Annotated[str, Form()], password: Annotated[str, Form()],
          next: Annotated[str, Form()] = "/portal/") -> Response:
    """Check the password (lockout, audit), start a session, and go to the page asked for."""
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        raise Forbidden("cross-origin login refused")
    _, t, _ = language(request, None)
    next_url = safe_next(next)
    source = request.client.host if request.client else ""
    try:
        user = password_login(county=county, session=session, username=username, password=password,
                              source=source)
    except LoginLocked:
        return _login_form(request, lang=None, next_url=next_url, status_code=401, error=t["login_locked"],
                           username=username)
    except Unauthorized:
        return _login_form(request, lang=None, next_url=next_url, status_code=401, error=t["login_failed"],
                           username=username)
    session_id = sessions.create(session=session, user=user, policy=session_policy(county),
                                 replaces=request.cookies.get(sessions.COOKIE))
    session.commit()
    audit_login(county=county, user=user, source=source, detail="portal session")
    response = RedirectResponse(next_url, status_code=303)
    # No max-age: the cookie also ends when the browser closes; the server ends it earlier
    # when idle or at its absolute expiry.
    response.set_cookie(sessions.COOKIE, session_id, httponly=True, samesite="lax",
                        secure=_secure(request, county), path="/")
    return harden(response)


@router.post("/portal/logout")
def logout(request: Request, session: SessionDep, county: CountyDep,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    """End the session server-side (the cookie is worthless afterwards) and clear it."""
    session_id = request.cookies.get(sessions.COOKIE)
    if session_id:
        try:
            live = sessions.resolve(session=session, session_id=session_id, policy=session_policy(county))
        except Unauthorized:
            live = None
        if live is not None:
            sessions.check_csrf(page_session=live, token=csrf_token, origin=request.headers.get("origin"),
                                own_origin=own_origin(request))
            sessions.destroy(session=session, session_id=session_id)
            session.commit()
    response = RedirectResponse(login_url(), status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_secure(request, county))
    return harden(response)
