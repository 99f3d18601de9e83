"""Signed reports back to the township: what to deliver, and the steps back from the edge.

At signing, the signed document (the verifiable JSON) is stored under a deterministic
key and a delivery row is created for the study's site. The DICOM renderings (SR,
Encapsulated PDF) and the printable PDF are added when built, by a task on the
``deliver`` queue enqueued after the sign commit. The site's edge lists
its pending deliveries, fetches the objects, stores them into the township PACS, and
reports ``delivered``; the technician's acknowledgement comes back the same way.
Every step is idempotent and a study transition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Report, ReportDelivery, Site, Study, User
from relay.county.edges import technicians
from relay.county.errors import NotFound, Unprocessable
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.storage import ObjectStore
from relay.county.studies.repository import add_transition
from relay.dicom.signing import SignedReport
from relay.dicom.vocab import ReportKind, StudyState


def object_key(study_uid: str, revision: int, name: str) -> str:
    return f"reports/{study_uid}/{revision}/{name}"


def put_object(store: ObjectStore, key: str, data: bytes) -> str:
    store.put(key, data, sha256=hashlib.sha256(data).hexdigest())
    return key


def create_delivery(*, session: Session, store: ObjectStore, report: Report, study: Study,
                    signed: SignedReport) -> ReportDelivery:
    """Store the signed document and queue it for the study's township (same transaction)."""
    key = put_object(store, object_key(study.study_uid, report.revision, "signed.json"),
                     signed.to_json().encode())
    delivery = ReportDelivery(report_pk=report.id, site_id=study.site_id, created_at=now_utc(),
                              object_keys_json=json.dumps({"signed": key}))
    session.add(delivery)
    return delivery


READY_GRACE = timedelta(minutes=2)
"""A delivery whose renderings never got attached (a failure, an API that died right after
signing) is offered anyway after this long: the signed report always goes home."""


def add_objects(*, session: Session, delivery: ReportDelivery, keys: dict[str, str]) -> None:
    """Attach objects and offer the delivery to the edge."""
    current = json.loads(delivery.object_keys_json)
    current.update(keys)
    delivery.object_keys_json = json.dumps(current)
    delivery.ready_at = delivery.ready_at or now_utc()
    session.commit()


def mark_ready(*, session: Session, report_id: int) -> None:
    """Offer the delivery as it is (renderings could not be built); idempotent."""
    found = session.execute(select(ReportDelivery).where(ReportDelivery.report_pk == report_id)).scalar_one_or_none()
    if found is None:
        return
    found.ready_at = found.ready_at or now_utc()
    session.commit()


def pending_for_site(session: Session, site: Site) -> list[tuple[ReportDelivery, Report, Study, str]]:
    """Deliveries the site's edge has not confirmed yet, oldest first (critical ones first)."""
    rows = session.execute(
        select(ReportDelivery, Report, Study, User.username)
        .join(Report, Report.id == ReportDelivery.report_pk).join(Study, Study.id == Report.study_pk)
        .join(User, User.id == Report.author_user_id)
        .where(ReportDelivery.site_id == site.id, ReportDelivery.delivered_at.is_(None),
               or_(ReportDelivery.ready_at.is_not(None), ReportDelivery.created_at < now_utc() - READY_GRACE))
        .order_by(Report.critical.desc(), ReportDelivery.id)).all()
    return [(d, r, s, u) for d, r, s, u in rows]


def owned(session: Session, site: Site, delivery_id: int) -> tuple[ReportDelivery, Report, Study]:
    row = session.execute(select(ReportDelivery, Report, Study).join(Report, Report.id == ReportDelivery.report_pk)
                          .join(Study, Study.id == Report.study_pk)
                          .where(ReportDelivery.id == delivery_id)).one_or_none()
    if row is None or row[0].site_id != site.id:
        raise NotFound(f"no delivery {delivery_id}")
    return row[0], row[1], row[2]


def mark_delivered(*, session: Session, site: Site, delivery_id: int, detail: str) -> ReportDelivery:
    """The edge stored the report at the township (idempotent)."""
    delivery, report, study = owned(session, site, delivery_id)
    if delivery.delivered_at is None:
        now = now_utc()
        delivery.delivered_at = now
        _advance(session, study, report, StudyState.DELIVERED, now, actor=f"site:{site.name}", detail=detail)
        outbox.emit(session, Topic.REPORT_DELIVERED, _event(study, report))
        session.commit()
    return delivery


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """What ``mark_acknowledged`` recorded (or found recorded)."""

    first: bool
    """This call recorded it; false for a repeat (the edge delivers at least once)."""
    at: datetime
    by: str
    study_uid: str
    revision: int
    critical: bool


def mark_acknowledged(*, session: Session, site: Site, delivery_id: int, by: str,
                      at: datetime | None = None) -> Acknowledgement:
    """A technician of ``site`` saw or printed the report at ``at`` (their edge's clock, kept
    between the delivery's creation and now); idempotent, the first acknowledgement counts.
    Unprocessable if ``by`` is not a technician of the site."""
    delivery, report, study = owned(session, site, delivery_id)
    first = delivery.acknowledged_at is None
    if first:
        if not technicians.is_site_technician(session=session, site=site, username=by):
            raise Unprocessable(f"{by!r} is not a technician of site {site.name!r}")
        now = now_utc()
        when = min(max(_aware(at or now), _aware(delivery.created_at)), now)
        delivery.acknowledged_at, delivery.acknowledged_by = when, by[:128]
        if delivery.delivered_at is None:
            delivery.delivered_at = when
        _advance(session, study, report, StudyState.ACKNOWLEDGED, when, actor=by[:128],
                 detail=f"revision {report.revision}")
        outbox.emit(session, Topic.REPORT_ACKNOWLEDGED, _event(study, report))
        session.commit()
    assert delivery.acknowledged_at is not None
    return Acknowledgement(first=first, at=_aware(delivery.acknowledged_at), by=delivery.acknowledged_by,
                           study_uid=study.study_uid, revision=report.revision, critical=report.critical)


def _aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _advance(session: Session, study: Study, report: Report, state: StudyState, at: datetime, *,
             actor: str, detail: str) -> None:
    if report.kind == ReportKind.REPORT and study.state in (StudyState.SIGNED.value, StudyState.DELIVERED.value):
        study.state, study.updated_at = state.value, at
    add_transition(session, study_pk=study.id, state=state, at=at, actor=actor, detail=detail)


def _event(study: Study, report: Report) -> dict[str, Any]:
    return {"study_instance_uid": study.study_uid, "revision": report.revision, "kind": report.kind,
            "critical": report.critical}


RENDERINGS = ("sr", "pdf", "encapsulated_pdf")
"""The objects built after signing, next to the signed document."""
