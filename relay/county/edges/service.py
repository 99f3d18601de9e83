"""Rules of the edge fleet: record heartbeats, list every site's health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import EdgeHealth, Site
from relay.county.db.upsert import insert_ignore
from relay.county.edges.schemas import EdgeOut, HeartbeatIn

SILENT_AFTER = timedelta(minutes=10)
"""An edge with no heartbeat for this long is shown as silent (edges beat every minute)."""


def _utc(value: datetime) -> datetime:
    """An edge's clock reading; one without a zone is taken as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_heartbeat(*, session: Session, site: Site, beat: HeartbeatIn) -> float:
    """Keep the latest heartbeat of ``site``; return the clock offset in seconds."""
    now = now_utc()
    values = beat.model_dump()
    values.update(site_id=site.id, received_at=now, edge_time=_utc(beat.edge_time),
                  clock_offset_s=(now - _utc(beat.edge_time)).total_seconds())
    row_id, inserted = insert_ignore(session, EdgeHealth, values, keys=["site_id"])
    if not inserted:
        row = session.get(EdgeHealth, row_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
    session.commit()
    return float(values["clock_offset_s"])


SPOOL_ALARM_AFTER = timedelta(minutes=60)
"""Default age of the oldest unsent instance that raises an alarm (RELAY_EDGE_SPOOL_ALARM_MINUTES)."""


def fleet(*, session: Session, now: datetime | None = None,
          spool_alarm_after: timedelta = SPOOL_ALARM_AFTER) -> list[EdgeOut]:
    """Every registered, unrevoked site with its latest health; silent edges and edges whose
    oldest unsent instance is older than ``spool_alarm_after`` carry an alarm."""
    now = now or now_utc()
    rows = session.execute(
        select(Site, EdgeHealth).outerjoin(EdgeHealth, EdgeHealth.site_id == Site.id)
        .where(Site.revoked_at.is_(None)).order_by(Site.name)).all()
    return [_edge_out(site, health, now, spool_alarm_after) for site, health in rows]


def alarms(*, silent: bool, oldest_unsent_age_s: float | None, last_heartbeat_at: datetime | None,
           now: datetime, spool_alarm_after: timedelta) -> list[str]:
    """The alarms of one edge. The spool age is as the edge last reported it, aged by the
    time since (a silent edge's spool keeps getting older)."""
    out = ["silent"] if silent else []
    if oldest_unsent_age_s is not None and last_heartbeat_at is not None:
        age = oldest_unsent_age_s + (now - last_heartbeat_at).total_seconds()
        if age > spool_alarm_after.total_seconds():
            out.append("spool_stale")
    return out


def _edge_out(site: Site, health: EdgeHealth | None, now: datetime, spool_alarm_after: timedelta) -> EdgeOut:
    if health is None:
        return EdgeOut(site=site.name, display_name=site.display_name, last_heartbeat_at=None,
                       silent=True, spool_stale=False, alarms=["silent"], clock_offset_s=None,
                       spool_instances=None, spool_bytes=None, oldest_unsent_age_s=None, goodput_bps=None,
                       disk_free_bytes=None, version=None, last_error=None)
    seen = health.received_at
    silent = now - seen > SILENT_AFTER
    raised = alarms(silent=silent, oldest_unsent_age_s=health.oldest_unsent_age_s, last_heartbeat_at=seen,
                    now=now, spool_alarm_after=spool_alarm_after)
    return EdgeOut(site=site.name, display_name=site.display_name, last_heartbeat_at=seen,
                   silent=silent, spool_stale="spool_stale" in raised, alarms=raised,
                   clock_offset_s=health.clock_offset_s,
                   spool_instances=health.spool_instances, spool_bytes=health.spool_bytes,
                   oldest_unsent_age_s=health.oldest_unsent_age_s, goodput_bps=health.goodput_bps,
                   disk_free_bytes=health.disk_free_bytes, version=health.version,
                   last_error=health.last_error)
