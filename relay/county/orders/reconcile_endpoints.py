"""The reconciliation API (administrators): GET /api/reconcile, POST .../link, /correct, /split;
and GET /api/studies/{uid}/order, the 申请单 a reader reads the study with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import AdminDep, CountyDep, PrincipalDep, SessionDep
from relay.county.auth.service import Principal
from relay.county.context import County
from relay.county.db.models import Order, Study
from relay.county.errors import NotFound
from relay.county.orders import matching, reconcile
from relay.dicom.vocab import Role

router = APIRouter(prefix="/api/reconcile", tags=["orders"])
study_order_router = APIRouter(prefix="/api/studies", tags=["orders"])


class LinkIn(BaseModel):
    order_id: int | None = Field(None, description="The order to link to; default: the study's candidate.")


class ChangeOut(BaseModel):
    study_instance_uid: str
    order_match: str
    order_id: int | None


@router.get("")
def list_waiting(_admin: AdminDep, session: SessionDep) -> list[dict[str, Any]]:
    """Studies whose DICOM identity contradicts their candidate order, or that were linked
    with a note (name not verifiable, order cancelled), oldest first; each with both
    identities and the differing fields."""
    return [reconcile.as_dict(item) for item in reconcile.waiting(session)]


def _done(county: County, request: Request, admin: Principal, session: Session, change: reconcile.Change,
          what: str) -> ChangeOut:
    session.commit()
    audit(county, request, admin, Action.STUDY_RECONCILE, object_type="study", object_id=change.study_uid,
          detail=f"{what} {change.detail()}")
    return ChangeOut(study_instance_uid=change.study_uid, order_match=str(change.after["order_match"]),
                     order_id=change.after["order_id"])


@router.post("/studies/{study_uid}/link", response_model=ChangeOut)
def link(study_uid: str, body: LinkIn, admin: AdminDep, session: SessionDep, county: CountyDep,
         request: Request) -> ChangeOut:
    """关联: the study is this order's and shows the order's patient and name."""
    change = reconcile.link(session, study_uid=study_uid, order_id=body.order_id)
    return _done(county, request, admin, session, change, "link")


@router.post("/studies/{study_uid}/correct", response_model=ChangeOut)
def correct(study_uid: str, admin: AdminDep, session: SessionDep, county: CountyDep, request: Request) -> ChangeOut:
    """更正: the DICOM identity was wrong; take the candidate order's (a link to it)."""
    change = reconcile.correct(session, study_uid=study_uid)
    return _done(county, request, admin, session, change, "correct")


@router.post("/studies/{study_uid}/split", response_model=ChangeOut)
def split(study_uid: str, admin: AdminDep, session: SessionDep, county: CountyDep, request: Request) -> ChangeOut:
    """拆分: the study has no order; it keeps its DICOM identity and is never matched again."""
    change = reconcile.split(session, study_uid=study_uid)
    return _done(county, request, admin, session, change, "split")


class StudyOrderOut(BaseModel):
    order_match: str = Field(description="How the order was found (see relay.county.orders.matching.MatchKind).")
    fields: list[str] = Field(description="Contradictions and notes (identity_check.Flag).")
    order: dict[str, str] | None = Field(None, description="The linked order; None without one, or while the "
                                         "study's identity contradicts its candidate (身份待核对).")


_SHOWN = ("placer_order_number", "placer_issuer", "accession_number", "status", "modality", "procedure_code",
          "procedure_description", "clinical_diagnosis", "exam_purpose", "history_summary",
          "ordering_department", "ordering_doctor", "requested_procedure_id")


@study_order_router.get("/{study_uid}/order", response_model=StudyOrderOut)
def study_order(study_uid: str, principal: PrincipalDep, session: SessionDep) -> StudyOrderOut:
    """The order (申请单) the study was done for: clinical question, ordering doctor and department."""
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is None or (principal.role is Role.TECHNICIAN and study.site_id != principal.site_id):
        raise NotFound(f"no study {study_uid}")
    order = session.get(Order, study.order_pk) if study.order_pk and study.order_match in matching.LINKED else None
    shown = {name: str(getattr(order, name)) for name in _SHOWN} if order is not None else None
    return StudyOrderOut(order_match=study.order_match, fields=matching.flags_of(study), order=shown)
