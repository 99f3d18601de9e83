"""FastAPI dependencies: the county context, a DB session, the calling person or site."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from relay.county.auth import service
from relay.county.context import County
from relay.county.db.models import Site
from relay.county.errors import Unauthorized

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


def get_principal(session: SessionDep, token: Annotated[str | None, Depends(_bearer)]) -> service.Principal:
    return service.principal_for_token(session=session, token=_require(token))


def get_site(session: SessionDep, token: Annotated[str | None, Depends(_bearer)]) -> Site:
    return service.site_for_token(session=session, token=_require(token))


PrincipalDep = Annotated[service.Principal, Depends(get_principal)]
SiteDep = Annotated[Site, Depends(get_site)]


def get_admin(principal: PrincipalDep) -> service.Principal:
    """The caller, who must be an administrator."""
    from relay.county.errors import Forbidden
    from relay.dicom.vocab import Role

    if principal.role is not Role.ADMIN:
        raise Forbidden("administrators only")
    return principal


AdminDep = Annotated[service.Principal, Depends(get_admin)]
