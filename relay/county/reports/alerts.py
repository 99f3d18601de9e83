"""Critical results (危急值): alert the township at once, escalate when nobody answers.

Run in rounds by a thread of the worker process. A round posts the webhook for each
signed critical report not yet notified, and escalates each one that nobody at the
township acknowledged within ``critical_escalate_minutes``: a ``critical.escalated``
event plus a POST to ``critical_escalation_url``, both naming the lead(s) the duty
roster has on duty at that moment (值班组长: username and display name). With no lead on
duty it escalates all the same and says so. Both marks are set only after the POST
succeeded, so a failed webhook is retried on the next round. Payloads carry
identifiers, never patient data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from relay.config import Settings
from relay.county.auth.service import now_utc
from relay.county.db.models import Report, ReportDelivery, Site, Study, User
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.reading.roster import leads_on_duty

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


NO_LEAD = "no lead on duty"
"""The escalation's ``note`` when the roster has no lead on duty at that moment."""


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


def _escalation(base: dict[str, Any], leads: list[User]) -> dict[str, Any]:
    named = [{"username": u.username, "display_name": u.display_name} for u in leads]
    return {**base, "leads": named, "note": "" if named else NO_LEAD}


def open_critical(*, session: Session) -> list[tuple[ReportDelivery, Study, str]]:
    """Critical results nobody at the township acknowledged yet, oldest first, with site name."""
    return [(d, s, site) for d, _r, s, site in sorted(_critical(session), key=lambda row: row[0].created_at)]


def _escalate(*, session: Session, settings: Settings, post: Post, delivery: ReportDelivery,
              payload: dict[str, Any], leads: list[User], now: datetime) -> bool:
    """POST the escalation, then mark whom it went to and emit the event; False: retry next round."""
    if settings.critical_escalation_url and not post(settings.critical_escalation_url, payload):
        return False
    delivery.escalated_at, delivery.escalated_to = now, ",".join(u.username for u in leads)
    outbox.emit(session, Topic.CRITICAL_ESCALATED, payload)
    return True


def alert_round(*, session: Session, settings: Settings, post: Post = http_post,
                now: datetime | None = None) -> tuple[int, int]:
    """One round; returns (notified, escalated)."""
    now = now or now_utc()
    notified = escalated = 0
    due = now - timedelta(minutes=settings.critical_escalate_minutes)
    leads: list[User] | None = None
    for delivery, report, study, site in _critical(session):
        if delivery.critical_notified_at is None and (
                not settings.critical_webhook_url
                or post(settings.critical_webhook_url, _payload("critical.result", delivery, report, study, site))):
            delivery.critical_notified_at, notified = now, notified + 1
        if delivery.escalated_at is None and delivery.created_at <= due:
            if leads is None:
                leads = leads_on_duty(session=session, at=now, zone=ZoneInfo(settings.timezone))
            payload = _escalation(_payload("critical.escalated", delivery, report, study, site), leads)
            if _escalate(session=session, settings=settings, post=post, delivery=delivery, payload=payload,
                         leads=leads, now=now):
                escalated += 1
                log.warning("critical result escalated study=%s site=%s revision=%d leads=%s", study.study_uid,
                            site, report.revision, delivery.escalated_to or "-")
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
