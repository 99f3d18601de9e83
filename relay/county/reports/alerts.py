"""Critical results (危急值): alert the township at once, escalate when nobody answers.

Run in rounds by a thread of the worker process. A round posts the webhook for each
signed critical report not yet notified, and escalates each one that nobody at the
township acknowledged within ``critical_escalate_minutes``: a ``critical.escalated``
event plus a POST to the county's on-duty lead. Both marks are set only after the
POST succeeded, so a failed webhook is retried on the next round. Payloads carry
identifiers, never patient data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from relay.config import Settings
from relay.county.auth.service import now_utc
from relay.county.db.models import Report, ReportDelivery, Site, Study
from relay.county.events import outbox
from relay.county.events.outbox import Topic

log = logging.getLogger(__name__)

ROUND_S = 30.0
"""Seconds between alert rounds."""

Post = Callable[[str, dict[str, Any]], bool]


def http_post(url: str, payload: dict[str, Any]) -> bool:
    try:
        return httpx.post(url, json=payload, timeout=10).is_success
    except httpx.HTTPError as exc:
        log.warning("critical-result webhook failed: %s", type(exc).__name__)
        return False


def _critical(session: Session) -> list[tuple[ReportDelivery, Report, Study, str]]:
    rows = session.execute(
        select(ReportDelivery, Report, Study, Site.name).join(Report, Report.id == ReportDelivery.report_pk)
        .join(Study, Study.id == Report.study_pk).join(Site, Site.id == ReportDelivery.site_id)
        .where(Report.critical.is_(True), ReportDelivery.acknowledged_at.is_(None))).all()
    return [(d, r, s, site) for d, r, s, site in rows]


def _payload(kind: str, delivery: ReportDelivery, report: Report, study: Study, site: str) -> dict[str, Any]:
    return {"event": kind, "study_instance_uid": study.study_uid, "site": site, "revision": report.revision,
            "signed_at": report.signed_at.isoformat() if report.signed_at else None,
            "delivery_id": delivery.id, "delivered": delivery.delivered_at is not None}


def alert_round(*, session: Session, settings: Settings, post: Post = http_post,
                now: datetime | None = None) -> tuple[int, int]:
    """One round; returns (notified, escalated)."""
    now = now or now_utc()
    notified = escalated = 0
    due = now - timedelta(minutes=settings.critical_escalate_minutes)
    for delivery, report, study, site in _critical(session):
        if delivery.critical_notified_at is None and (
                not settings.critical_webhook_url
                or post(settings.critical_webhook_url, _payload("critical.result", delivery, report, study, site))):
            delivery.critical_notified_at, notified = now, notified + 1
        if delivery.escalated_at is None and delivery.created_at <= due and (
                not settings.critical_escalation_url
                or post(settings.critical_escalation_url, _payload("critical.escalated", delivery, report, study, site))):
            delivery.escalated_at, escalated = now, escalated + 1
            outbox.emit(session, Topic.CRITICAL_ESCALATED, _payload("critical.escalated", delivery, report, study, site))
            log.warning("critical result escalated study=%s site=%s revision=%d", study.study_uid, site, report.revision)
        session.commit()
    return notified, escalated


def run_alerts(settings: Settings, sessions: sessionmaker[Session], stop: threading.Event) -> None:
    """Alert rounds until ``stop``; a failing round is logged and the next one tries again."""
    while not stop.is_set():
        try:
            with sessions() as session:
                alert_round(session=session, settings=settings)
        except Exception:
            log.exception("critical-result alert round failed")
        stop.wait(ROUND_S)
