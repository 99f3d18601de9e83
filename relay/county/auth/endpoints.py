"""POST /api/auth/token: OAuth2 password form in, bearer token out."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth import service
from relay.county.auth.deps import AdminDep, CountyDep, PrincipalDep, SessionDep
from relay.county.auth.login import audit_login, password_login
from relay.county.db.models import User
from relay.county.errors import NotFound
from relay.dicom import body_parts

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])
users_router = APIRouter(prefix="/api/users", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


class MeOut(BaseModel):
    username: str
    role: str
    site_id: int | None


@router.post("/token", response_model=TokenOut)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, county: CountyDep,
    request: Request,
) -> TokenOut:
    """Exchange a username and password for a bearer token."""
    source = request.client.host if request.client else ""
    user = password_login(county=county, session=session, username=form.username, password=form.password,
                          source=source)
    ttl = timedelta(hours=county.settings.token_ttl_hours)
    token = service.issue_token(session=session, user=user, ttl=ttl)
    session.commit()
    audit_login(county=county, user=user, source=source)
    return TokenOut(access_token=token, expires_in=int(ttl.total_seconds()), role=user.role)


@router.get("/me", response_model=MeOut)
def me(principal: PrincipalDep) -> MeOut:
    """Who the bearer token (or the portal session cookie) belongs to."""
    return MeOut(username=principal.username, role=principal.role.value, site_id=principal.site_id)


class DutyIn(BaseModel):
    on_duty: bool | None = None
    competences: str | None = Field(None, description='Modalities, comma-separated, e.g. "CT,DX,ECG"; "" for all.')
    body_regions: str | None = Field(None, description='Body regions as BodyPartExamined names them, '
                                     'comma-separated, e.g. "HEAD,NECK"; "" for all. A study whose series '
                                     'name no body part is given by modality alone.')


class DutyOut(BaseModel):
    username: str
    role: str
    on_duty: bool
    competences: str
    body_regions: str


@users_router.patch("/{username}", response_model=DutyOut)
def set_duty(username: str, body: DutyIn, admin: AdminDep, session: SessionDep,
             county: CountyDep, request: Request) -> DutyOut:
    """Put a reader on or off duty and set what they read (automatic assignment uses both)."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}")
    if body.on_duty is not None:
        user.on_duty = body.on_duty
    if body.competences is not None:
        user.competences = body.competences.upper().replace(" ", "")
    if body.body_regions is not None:
        user.body_regions = body_parts.canonical_list(body.body_regions)
    session.commit()
    changed = ", ".join(f"{k}={v}" for k, v in body.model_dump(exclude_none=True).items())
    audit(county, request, admin, Action.USER_UPDATE, object_type="user",
          object_id=user.username, detail=changed)
    return DutyOut(username=user.username, role=user.role, on_duty=user.on_duty, competences=user.competences,
                   body_regions=user.body_regions)
