"""The example Grafana dashboard and Prometheus rules use only metrics /metrics really exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from relay.county.app import create_app
from relay.county.db.engine import session_scope
from relay.county.edges.schemas import HeartbeatIn
from relay.county.edges.service import record_heartbeat
from relay.county.reading import service
from relay.county.jobs import enqueue_index
from tests.county.test_reading import principal, queue_studies
from tests.county.test_public_surface import scrape_text

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
METRIC = re.compile(r"\b(relay_[a-z0-9_]+)\b")


def _referenced() -> set[str]:
    dashboard = json.loads((GRAFANA / "county-relay.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr:\s*(.+)", (GRAFANA / "relay-alerts.yml").read_text(encoding="utf-8"))
    return {name for e in exprs for name in METRIC.findall(e)}


def test_every_metric_the_dashboard_and_alerts_use_is_in_a_real_scrape(county):
    (uid, _other) = queue_studies(county, 2)
    with session_scope(county.sessions) as s:
        service.claim(session=s, principal=principal(county, "dr.wang"), study_uid=uid)
    with county.sessions() as s:
        from relay.county.db.models import Site

        site = s.query(Site).filter(Site.name == "township-a").one()
        record_heartbeat(session=s, site=site, beat=HeartbeatIn(
            edge_time=datetime.now(UTC), spool_instances=2, spool_bytes=10, oldest_unsent_age_s=5.0,
            goodput_bps=1e6, disk_free_bytes=10**10, version="test"))
    enqueue_index(county.celery, county.settings, 1)
    with TestClient(create_app(county)) as client:
        body = scrape_text(client, county)
    exported = {s.name for family in text_string_to_metric_families(body) for s in family.samples}
    referenced = _referenced()
    assert len(referenced) >= 15
    assert referenced <= exported, sorted(referenced - exported)
    assert {"relay_tat_stage_seconds_bucket", "relay_work_queue_messages", "relay_edge_alarm"} <= exported
