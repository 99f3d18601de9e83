"""FastAPI dependencies: the county context, a DB session, the calling person (bearer token or
portal session cookie with CSRF token) or site."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from relay.county.auth import service, sessions
from relay.county.context import County
from relay.county.db.models import Site
from relay.county.errors import Forbidden, Unauthorized
from relay.dicom.vocab import Role

_bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def get_county(request: Request) -> County:
    county: County = request.app.state.county
    return county


CountyDep = Annotated[County, Depends(get_county)]


def get_session(county: CountyDep) -> Iterator[Session]:
    session = county.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def _require(token: str | None) -> str:
    if not token:
        raise Unauthorized("bearer token required")
    return token


def session_policy(county: County) -> sessions.Policy:
    """Session lifetimes from the settings."""
    return sessions.Policy(idle=timedelta(minutes=county.settings.session_idle_minutes),
                           absolute=timedelta(hours=county.settings.session_absolute_hours))


def own_origin(request: Request) -> str:
    """This server's origin as a browser names it in ``Origin`` (scheme://host[:port])."""
    return f"{request.url.scheme}://{request.url.netloc}"


def get_principal(request: Request, session: SessionDep, county: CountyDep,
                  token: Annotated[str | None, Depends(_bearer)]) -> service.Principal:
    """The person calling: by bearer token (API clients; no CSRF, a browser never adds the
    header on its own), or by the portal's session cookie, when every unsafe method must
    also carry the session's CSRF token."""
    if token:
        return service.principal_for_token(session=session, token=token)
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        raise Unauthorized("bearer token or session cookie required")
    page_session = sessions.resolve(session=session, session_id=session_id, policy=session_policy(county))
    if request.method not in sessions.SAFE_METHODS:
        sessions.check_csrf(page_session=page_session, token=request.headers.get(sessions.CSRF_HEADER),
                            origin=request.headers.get("origin"), own_origin=own_origin(request))
    return page_session.principal


def get_site(session: SessionDep, token: Annotated[str | None, Depends(_bearer)]) -> Site:
    return service.site_for_token(session=session, token=_require(token))


PrincipalDep = Annotated[service.Principal, Depends(get_principal)]
SiteDep = Annotated[Site, Depends(get_site)]


def get_admin(principal: PrincipalDep) -> service.Principal:
    """The caller, who must be an administrator."""
    if principal.role is not Role.ADMIN:
        raise Forbidden("administrators only")
    return principal


AdminDep = Annotated[service.Principal, Depends(get_admin)]
