"""Rules of reports: draft, edit, sign (with the reader's signing password), add addenda.

Only the reader holding the study writes and signs its report. Signing builds the
canonical document (text, reader, time, study, and every instance read with its
SHA-256; since the orders, also the linked order's numbers under ``order``), signs it with
the reader's Ed25519 key, and stores it exactly as signed; the row never changes after
that. A document signed before ``order`` existed has no such key and verifies as it was. The study moves to ``signed`` (a transition with its
actor), and a ``study.signed`` event (plus ``critical.result`` for 危急值) is written in
the same transaction through the outbox.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.auth.service import Principal

from relay.county.clock import now_utc
from relay.county.db.models import Instance, Order, ReadingItem, Report, Site, Study, User
from relay.county.errors import BadRequest, Conflict, Forbidden, NotFound
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.orders.matching import LINKED
from relay.county.reports import delivery, report_templates, signing_keys
from relay.county.storage import ObjectStore
from relay.county.studies.repository import add_transition, study_regions
from relay.dicom import signing
from relay.dicom.vocab import ReportKind, ReportStatus, Role, StudyState

EDITABLE = ("findings", "impression", "advice", "critical")


def study_and_item(session: Session, study_uid: str) -> tuple[Study, ReadingItem]:
    row = session.execute(select(Study, ReadingItem).join(ReadingItem, ReadingItem.study_pk == Study.id)
                          .where(Study.study_uid == study_uid)).one_or_none()
    if row is None:
        raise NotFound(f"no study {study_uid}")
    return row[0], row[1]


def study_by_pk(session: Session, study_pk: int) -> Study:
    study = session.get(Study, study_pk)
    if study is None:
        raise NotFound("no such study")
    return study


def ranked_templates(*, session: Session, principal: Principal, study_uid: str) -> list[report_templates.Template]:
    """The templates for one study, those of its modality and body region first."""
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is None or (principal.role is Role.TECHNICIAN and study.site_id != principal.site_id):
        raise NotFound(f"no study {study_uid}")
    regions = study_regions(session, [study.id]).get(study.id, frozenset())
    return report_templates.ranked(modalities=study.modalities, regions=regions)


def _require_holder(principal: Principal, item: ReadingItem) -> None:
    if principal.role not in (Role.RADIOLOGIST, Role.ADMIN):
        raise Forbidden("only readers write reports")
    if item.assigned_user_id != principal.user_id:
        raise Conflict("claim the study before writing its report")


def reports_of(session: Session, study_pk: int) -> list[Report]:
    return list(session.execute(select(Report).where(Report.study_pk == study_pk)
                                .order_by(Report.revision)).scalars())


def create_draft(*, session: Session, principal: Principal, study_uid: str,
                 template_key: str | None = None) -> Report:
    """Start the report (or, once signed, an addendum); returns an open draft if one exists."""
    if principal.role not in (Role.RADIOLOGIST, Role.ADMIN):
        raise Forbidden("only readers write reports")
    study, item = study_and_item(session, study_uid)
    existing = reports_of(session, study.id)
    signed_before = any(r.status == ReportStatus.SIGNED for r in existing)
    if not signed_before:
        _require_holder(principal, item)
    draft = next((r for r in existing if r.status == ReportStatus.DRAFT), None)
    if draft is not None:
        if draft.author_user_id != principal.user_id:
            raise Conflict("another reader is writing an addendum to this study")
        return draft
    template = report_templates.get(template_key) if template_key else None
    if template_key and template is None:
        raise BadRequest(f"no template {template_key!r}")
    now = now_utc()
    report = Report(study_pk=study.id, revision=len(existing) + 1,
                    kind=(ReportKind.ADDENDUM if signed_before else ReportKind.REPORT).value,
                    status=ReportStatus.DRAFT.value,
                    author_user_id=principal.user_id, template=template_key or "",
                    findings=template.findings if template else "",
                    impression=template.impression if template else "",
                    advice=template.advice if template else "", critical=False,
                    created_at=now, updated_at=now)
    session.add(report)
    session.commit()
    return report


def _own_draft(session: Session, principal: Principal, report_id: int) -> Report:
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound(f"no report {report_id}")
    if report.author_user_id != principal.user_id:
        raise Forbidden("only the author edits or signs a draft")
    if report.status != ReportStatus.DRAFT:
        raise Conflict("a signed report never changes; write an addendum")
    return report


def update_draft(*, session: Session, principal: Principal, report_id: int, changes: dict[str, Any]) -> Report:
    """Edit a draft's text, 危急值 flag, or the template the reader chose ("" for none)."""
    report = _own_draft(session, principal, report_id)
    chosen = changes.get("template")
    if chosen is not None:
        if chosen and report_templates.get(chosen) is None:
            raise BadRequest(f"no template {chosen!r}")
        report.template = chosen
    for field in EDITABLE:
        if field in changes and changes[field] is not None:
            setattr(report, field, changes[field])
    report.updated_at = now_utc()
    session.commit()
    return report


def _document(session: Session, report: Report, study: Study, principal: Principal, at: str) -> dict[str, Any]:
    rows = session.execute(select(Instance.sop_uid, Instance.sha256).where(Instance.study_uid == study.study_uid)
                           .order_by(Instance.sop_uid)).all()
    site = session.get(Site, study.site_id)
    document: dict[str, Any] = {
        "study_instance_uid": study.study_uid, "accession_number": study.accession_number,
        "site": site.name if site else "", "revision": report.revision, "kind": report.kind,
        "reader": principal.username, "reader_name": _display_name(session, principal.user_id),
        "signed_at": at, "findings": report.findings,
        "impression": report.impression, "advice": report.advice, "critical": report.critical,
        "instances": [[sop, sha] for sop, sha in rows],
    }
    order = session.get(Order, study.order_pk) if study.order_pk and study.order_match in LINKED else None
    if order is not None:
        document["order"] = {name: str(getattr(order, name)) for name in ORDER_FIELDS}
    return document


ORDER_FIELDS = ("placer_order_number", "placer_issuer", "accession_number", "requested_procedure_id",
                "procedure_code", "procedure_description", "ordering_department", "ordering_doctor")
"""What the signed document says of the study's order (申请单): its numbers and who asked;
the SR's ReferencedRequestSequence and the PDF's 申请单号 come from here."""


def _display_name(session: Session, user_id: int) -> str:
    """The reader's name as people know it (the login name if none was given)."""
    user = session.get(User, user_id)
    return user.display_name if user and user.display_name else ""


def sign(*, session: Session, principal: Principal, report_id: int, signing_password: str,
         store: ObjectStore) -> Report:
    """Sign a draft with the reader's key; the study becomes ``signed``. Only readers sign."""
    signing_keys.require_signer(principal)
    report = _own_draft(session, principal, report_id)
    if not report.impression.strip():
        raise BadRequest("诊断意见 (impression) is empty")
    key = signing_keys.current_key(session=session, user_id=principal.user_id)
    if key is None:
        raise Conflict("make a signing key first (POST /api/signing-keys): you have none that is "
                       "valid now (never made, revoked or ended)")
    try:
        private = signing.unlock(key.encrypted_private_pem, signing_password)
    except signing.SignatureError as exc:
        raise Forbidden(str(exc)) from exc
    study = session.get(Study, report.study_pk)
    assert study is not None
    now = now_utc()
    signed = signing.sign(_document(session, report, study, principal, now.isoformat()), private)
    report.status, report.signed_at, report.updated_at = ReportStatus.SIGNED.value, now, now
    report.key_id, report.signature = signed.key_id, signed.signature
    report.document_json = json.dumps(signed.document, ensure_ascii=False)
    _mark_signed(session, study, report, principal, now)
    session.flush()
    delivery.create_delivery(session=session, store=store, report=report, study=study, signed=signed)
    session.commit()
    return report


def _mark_signed(session: Session, study: Study, report: Report, principal: Principal, now: Any) -> None:
    if report.kind == ReportKind.REPORT:
        study.state, study.updated_at = StudyState.SIGNED.value, now
    add_transition(session, study_pk=study.id, state=StudyState.SIGNED, at=now, actor=principal.username,
                   detail=f"{report.kind} revision {report.revision}")
    event = {"study_instance_uid": study.study_uid, "revision": report.revision, "kind": report.kind,
             "critical": report.critical}
    outbox.emit(session, Topic.STUDY_SIGNED, event)
    if report.critical:
        outbox.emit(session, Topic.CRITICAL_RESULT, event)


def signed_report(report: Report) -> signing.SignedReport:
    """The report as a verifiable file (what `relay verify-report` reads)."""
    if report.status != ReportStatus.SIGNED:
        raise Conflict("the report is not signed yet")
    return signing.SignedReport(json.loads(report.document_json), report.key_id, report.signature)
