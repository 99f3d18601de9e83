"""Reports and signing keys: drafts, edits, signatures, addenda; keys published with owner, validity, revocation."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from relay.county.audit.endpoints import audit
from relay.county.audit.service import Action
from relay.county.auth.deps import CountyDep, PrincipalDep, SessionDep
from relay.county.db.models import Report, User
from relay.county.errors import NotFound
from relay.county.reports import delivery, report_templates, service, signing_keys
from relay.county.jobs import enqueue_deliver
from relay.dicom import body_parts, signing
from relay.dicom.vocab import ReportStatus, Role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/signing-keys", tags=["reports"])
reports_router = APIRouter(prefix="/api", tags=["reports"])


class NewKeyIn(BaseModel):
    signing_password: str = Field(min_length=8, description="Needed again at every signature; "
                                  "the private key is stored only encrypted under it.")


class OwnerOut(BaseModel):
    username: str = Field(description="The reader every document this key signs must name (`reader`).")
    display_name: str


class KeyOut(BaseModel):
    key_id: str
    public_pem: str
    owner: OwnerOut
    valid_from: datetime
    valid_until: datetime | None = Field(description="Set when the reader made a newer key; null: open.")
    revoked_at: datetime | None = Field(description="From when the key signs nothing; null: not revoked.")
    revocation_reason: str


class KeySetOut(BaseModel):
    format: str = Field(description=signing.KEY_SET_FORMAT)
    published_at: str
    keys: list[KeyOut]


class RevokeIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="Why, e.g. 离职, 密码泄露.")
    effective_at: datetime | None = Field(
        None, description="From when the key is to sign nothing (not in the future): the time it "
        "was compromised, if earlier than now. Reports it signed from then on no longer verify.")


def _key_out(key: signing.PublishedKey) -> KeyOut:
    return KeyOut.model_validate(key.to_json_obj())


@router.post("", response_model=KeyOut, status_code=201)
def create_key(body: NewKeyIn, principal: PrincipalDep, session: SessionDep, county: CountyDep,
               request: Request) -> KeyOut:
    """Make a signing key for the calling reader (readers only; 403 for anyone else). The
    reader's earlier keys stay published, valid until now."""
    key = signing_keys.create_key(session=session, principal=principal, signing_password=body.signing_password)
    owner = session.get(User, key.user_id)
    assert owner is not None
    audit(county, request, principal, Action.SIGNING_KEY_CREATE, object_type="signing_key", object_id=key.key_id)
    return _key_out(signing_keys.published(key, owner))


@router.get("", response_model=KeySetOut)
def published(session: SessionDep) -> KeySetOut:
    """Every key ever made, with its owner, validity and revocation: what `relay verify-report
    --county` checks against (it trusts this server; the offline, pinned path is `relay keys
    export`). Public by nature: it lets anyone verify a report, and signs nothing."""
    return KeySetOut.model_validate(signing_keys.key_set(session=session).to_json_obj())


@router.post("/{key_id}/revoke", response_model=KeyOut)
def revoke(key_id: str, body: RevokeIn, principal: PrincipalDep, session: SessionDep, county: CountyDep,
           request: Request) -> KeyOut:
    """Revoke a key (administrators, or the key's owner): it signs nothing from ``effective_at``
    (default now) on; reports it signed before still verify. 409 if already revoked."""
    key, owner = signing_keys.revoke_key(session=session, principal=principal, key_id=key_id, reason=body.reason,
                                 effective_at=body.effective_at)
    audit(county, request, principal, Action.SIGNING_KEY_REVOKE, object_type="signing_key", object_id=key.key_id,
          detail=f"owner {owner.username}; from {key.revoked_at.isoformat() if key.revoked_at else ''}; "
          f"reason: {key.revocation_reason}")
    return _key_out(signing_keys.published(key, owner))


class TemplateOut(BaseModel):
    key: str
    name: str
    modalities: list[str]
    regions: list[str] = Field(description="Body regions (BodyPartExamined) it is written for; [] for any.")
    findings: str
    impression: str
    advice: str


class DraftIn(BaseModel):
    template: str | None = Field(None, description="Template key, e.g. chest-pa, head-ct-plain, ecg-12-lead.")


class ReportIn(BaseModel):
    findings: str | None = Field(None, description="检查所见")
    impression: str | None = Field(None, description="诊断意见")
    advice: str | None = Field(None, description="建议")
    critical: bool | None = Field(None, description="危急值")
    template: str | None = Field(None, description='The template the reader chose (a key); "" for none.')


class SignIn(BaseModel):
    signing_password: str


class ReportOut(BaseModel):
    id: int
    revision: int
    kind: str = Field(description="report or addendum")
    status: str = Field(description="draft or signed")
    findings: str
    impression: str
    advice: str
    critical: bool
    template: str
    signed_at: datetime | None
    key_id: str


def _report_out(r: Report) -> ReportOut:
    return ReportOut(id=r.id, revision=r.revision, kind=r.kind, status=r.status, findings=r.findings,
                     impression=r.impression, advice=r.advice, critical=r.critical, template=r.template,
                     signed_at=r.signed_at, key_id=r.key_id)


@reports_router.get("/report-templates", response_model=list[TemplateOut])
def list_templates(
    principal: PrincipalDep, session: SessionDep, modality: str = "",
    body_part: Annotated[str, Query(description="BodyPartExamined, e.g. CHEST; any case")] = "",
    study_uid: Annotated[str, Query(description="Rank for this study's modality and its series' "
                                    "body parts (then modality and body_part are not used)")] = "",
) -> list[TemplateOut]:
    """Chinese report templates, every one, those fitting the modality and body region first."""
    if study_uid:
        found = service.ranked_templates(session=session, principal=principal, study_uid=study_uid)
    else:
        found = report_templates.ranked(modalities=modality, regions=body_parts.region_set([body_part]))
    return [TemplateOut(key=t.key, name=t.name, modalities=list(t.modalities), regions=list(t.regions),
                        findings=t.findings, impression=t.impression, advice=t.advice) for t in found]


@reports_router.get("/studies/{study_uid}/reports", response_model=list[ReportOut])
def study_reports(study_uid: str, principal: PrincipalDep, session: SessionDep) -> list[ReportOut]:
    """A study's report and addenda, oldest first."""
    study, _ = service.study_and_item(session, study_uid)
    if principal.role is Role.TECHNICIAN and study.site_id != principal.site_id:
        raise NotFound(f"no study {study_uid}")
    reports = service.reports_of(session, study.id)
    if principal.role is Role.TECHNICIAN:
        reports = [r for r in reports if r.status == ReportStatus.SIGNED]
    return [_report_out(r) for r in reports]


@reports_router.post("/studies/{study_uid}/reports", response_model=ReportOut, status_code=201)
def create_draft(study_uid: str, body: DraftIn, principal: PrincipalDep, session: SessionDep,
                 county: CountyDep, request: Request) -> ReportOut:
    """Start the report (from a template), or an addendum once the report is signed."""
    report = service.create_draft(session=session, principal=principal, study_uid=study_uid,
                                  template_key=body.template)
    action = Action.REPORT_ADDENDUM if report.revision > 1 else Action.REPORT_DRAFT
    audit(county, request, principal, action, object_type="study", object_id=study_uid,
          detail=f"report {report.id} revision {report.revision}")
    return _report_out(report)


@reports_router.patch("/reports/{report_id}", response_model=ReportOut)
def update_draft(report_id: int, body: ReportIn, principal: PrincipalDep, session: SessionDep,
                 county: CountyDep, request: Request) -> ReportOut:
    """Edit a draft; a signed report answers 409."""
    report = service.update_draft(session=session, principal=principal, report_id=report_id,
                                  changes=body.model_dump())
    audit(county, request, principal, Action.REPORT_DRAFT, object_type="report",
          object_id=str(report.id), detail=f"revision {report.revision} edited")
    return _report_out(report)


@reports_router.post("/reports/{report_id}/sign", response_model=ReportOut)
def sign_report(report_id: int, body: SignIn, principal: PrincipalDep, session: SessionDep,
                county: CountyDep, request: Request) -> ReportOut:
    """Sign with the reader's key (the signing password unlocks it for this signature only);
    the signed report is queued for delivery to the study's township, its SR and PDF built
    by a worker on the ``deliver`` queue."""
    signed = service.sign(session=session, principal=principal, report_id=report_id,
                          signing_password=body.signing_password, store=county.store)
    try:
        enqueue_deliver(county.celery, county.settings, report_id)
    except Exception as exc:  # the signed document still travels, without its renderings
        log.error("could not enqueue the SR/PDF of report %d (%s)", report_id, type(exc).__name__)
        delivery.mark_ready(session=session, report_id=report_id)
    audit(county, request, principal, Action.REPORT_SIGN, object_type="report",
          object_id=str(signed.id), detail=f"revision {signed.revision} signed")
    return _report_out(signed)


@reports_router.get("/reports/{report_id}/signed")
def signed_file(report_id: int, principal: PrincipalDep, session: SessionDep) -> Response:
    """The signed report as a file that `relay verify-report` checks offline."""
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound(f"no report {report_id}")
    study = service.study_by_pk(session, report.study_pk)
    if principal.role is Role.TECHNICIAN and study.site_id != principal.site_id:
        raise NotFound(f"no report {report_id}")
    return Response(service.signed_report(report).to_json(), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="report-{report_id}.json"'})
