"""Administrators' dashboards on a year of history: p95 of every JSON endpoint an admin page calls.

A fresh PostgreSQL database (created here, dropped at the end) is migrated to head and
seeded with ``--studies`` studies (default 1,000,000) arriving evenly over the last
``--days`` days (default 365: 2,740 a day, the top of a county's 500-3,000) from 30
townships: CT/DX/ECG/US/MR, 5 % STAT, 10 % urgent, 15 readers, and stage times drawn
from log-normal laws (edge to county ~5 min, waiting for a reader ~10 min STAT / 30 min
urgent / 90 min routine, opened ~2 min, reading ~7 min, back to the township ~1 min,
acknowledged ~30 min). Milestones later than now are not reached yet (the last hours are
open), and 0.3 % of studies were never assigned (they are the live SLA breaches).
Seeding is set-based SQL (``generate_series`` into an unlogged scratch table, then
``INSERT ... SELECT`` into patients, studies with their milestone columns, every
transition row, one instance per study and the reading items), with the milestone
triggers bypassed during the load since the columns are written from the same numbers as
the transitions; the /metrics counters (migration 0022) are then recounted from the tables,
as the migration back-fills them. Then ``VACUUM ANALYZE``.

The county app (reader_portal's create_app, the real one) runs under uvicorn on a free
loopback port and is called over HTTP with an administrator's bearer token,
``--requests`` times per endpoint, in turn:

- ``GET /api/tat?group_by=site|modality|priority|reader|day|week|all``, default window
  (7 days) and ``since`` = 30 days ago;
- ``GET /api/sla/breaches``, ``GET /api/readers/workload``, ``GET /api/edges``;
- ``GET /metrics`` (what Prometheus scrapes; no target in the issue, reported apart).

Peer, same run: the SQL of ``/api/tat?group_by=site`` over 30 days run bare with
psycopg (the database floor of the heaviest dashboard query). Target: p95 <= 300 ms.

    .venv/bin/python -m bench.dashboard [--studies 1000000] [--requests 40] [--days 365] [--explain]
                                        [--only metrics]

``--only metrics`` times ``GET /metrics`` alone (p50/p95 over HTTP) and skips the peer query.

The work of a TAT query grows with the studies in its window, not with the history: a
30-day window holds ~82k studies at 365 days, ~41k at 730.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.dialects import postgresql

from bench.common import fresh_database, pct, serve_app
from relay.config import Settings
from relay.county.auth import service as auth
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.metrics import repository as metrics_repository
from relay.county.metrics.collector import TAT_BUCKETS_S
from relay.county.tat import repository, service
from relay.dicom.vocab import Role

TARGET_MS = 300.0
N_SITES, N_READERS = 30, 15
ZONE = "Asia/Shanghai"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def setup_people(county: County) -> None:
    """Townships (real credentials), readers and the administrator who calls the API."""
    with session_scope(county.sessions) as s:
        for i in range(N_SITES):
            auth.create_site(session=s, name=f"township-{i + 1:02d}")
        for i in range(N_READERS):
            auth.create_user(session=s, username=f"dr.{i + 1:02d}", password="bench-password-1",
                             role=Role.RADIOLOGIST)
        auth.create_user(session=s, username="bench-admin", password="bench-password-1", role=Role.ADMIN)
        s.commit()


def _lognormal(median_s: str, sigma: float = 0.6) -> str:
    """SQL for a log-normal draw (Box-Muller), as an interval."""
    z = "sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())"
    return f"make_interval(secs => exp(ln({median_s}) + {sigma} * {z}))"


SEED_SQL = [
    """SELECT setseed(0.20261123)""",
    # One row per study: its attributes and every milestone as if nothing were still under way.
    f"""CREATE UNLOGGED TABLE seed AS
        SELECT i, arrived,
               1 + (i * 7919) % {N_SITES} AS site_id,
               (ARRAY['CT','DX','DX','ECG','ECG','US','CT','DX','MR','US'])[1 + (i * 31) % 10] AS modality,
               CASE WHEN i % 20 = 0 THEN 'stat' WHEN i % 10 = 3 THEN 'urgent' ELSE 'routine' END AS priority,
               1 + (i * 13) % {N_READERS} AS reader,
               i % 333 = 7 AS stuck
        FROM (SELECT i, now() - make_interval(secs => (%(n)s - i) * %(days)s * 86400.0 / %(n)s) AS arrived
              FROM generate_series(1::bigint, %(n)s) AS i) g""",
    f"""CREATE UNLOGGED TABLE times AS
        SELECT s.*, arrived - {_lognormal('300')} AS edge,
               arrived + CASE priority WHEN 'stat' THEN {_lognormal('600')}
                                       WHEN 'urgent' THEN {_lognormal('1800')}
                                       ELSE {_lognormal('5400')} END AS assigned,
               {_lognormal('120')} AS d_open, {_lognormal('420')} AS d_read,
               {_lognormal('60')} AS d_deliver, {_lognormal('1800')} AS d_ack
        FROM seed s""",
    """CREATE UNLOGGED TABLE m AS
        SELECT i, arrived, site_id, modality, priority, reader, edge,
               CASE WHEN NOT stuck AND assigned <= now() THEN assigned END AS assigned,
               CASE WHEN NOT stuck AND assigned + d_open <= now() THEN assigned + d_open END AS reading,
               CASE WHEN NOT stuck AND assigned + d_open + d_read <= now() THEN assigned + d_open + d_read END AS signed,
               CASE WHEN NOT stuck AND assigned + d_open + d_read + d_deliver <= now()
                    THEN assigned + d_open + d_read + d_deliver END AS delivered,
               CASE WHEN NOT stuck AND assigned + d_open + d_read + d_deliver + d_ack <= now()
                    THEN assigned + d_open + d_read + d_deliver + d_ack END AS acknowledged
        FROM times""",
    """INSERT INTO patients (id, patient_id, issuer, name, birth_date, sex)
       SELECT i, 'P' || i, 'site:township-' || lpad(site_id::text, 2, '0'), '', '', '' FROM m""",
    """INSERT INTO studies (id, study_uid, patient_pk, site_id, accession_number, study_date, study_time,
                           description, modalities, priority, state, created_at, updated_at,
                           tat_edge_at, tat_arrived_at, tat_assigned_at, tat_reading_at, tat_signed_at,
                           tat_delivered_at, tat_acknowledged_at, tat_reader)
       SELECT i, '2.25.77.' || i, i, site_id, 'A' || i, to_char(arrived, 'YYYYMMDD'), '', '', modality, priority,
              CASE WHEN acknowledged IS NOT NULL THEN 'acknowledged' WHEN delivered IS NOT NULL THEN 'delivered'
                   WHEN signed IS NOT NULL THEN 'signed' WHEN reading IS NOT NULL THEN 'reading'
                   WHEN assigned IS NOT NULL THEN 'assigned' ELSE 'queued' END,
              arrived, coalesce(acknowledged, delivered, signed, reading, assigned, arrived),
              edge, arrived, assigned, reading, signed, delivered, acknowledged,
              CASE WHEN signed IS NOT NULL THEN 'dr.' || lpad(reader::text, 2, '0') END
       FROM m""",
    """INSERT INTO study_transitions (study_pk, state, at, actor, detail)
       SELECT i, t.state, t.at, t.actor, '' FROM m, LATERAL (VALUES
         ('arrived', arrived, ''), ('queued', arrived, ''), ('assigned', assigned, 'auto'),
         ('reading', reading, 'dr.' || lpad(reader::text, 2, '0')),
         ('signed', signed, 'dr.' || lpad(reader::text, 2, '0')),
         ('delivered', delivered, 'site'), ('acknowledged', acknowledged, 'tech')) AS t(state, at, actor)
       WHERE t.at IS NOT NULL ORDER BY t.at""",
    """INSERT INTO instances (sop_uid, sha256, sop_class_uid, study_uid, series_uid, transfer_syntax_uid,
                             object_key, size, site_id, priority, calling_ae, edge_received_at, received_at,
                             indexed_at, late)
       SELECT '2.25.77.' || i || '.1', md5(i::text) || md5((-i)::text), '1.2.840.10008.5.1.4.1.1.2',
              '2.25.77.' || i, '2.25.77.' || i || '.0', '1.2.840.10008.1.2.1', 'seed/' || i, 500000, site_id,
              priority, 'MODALITY', edge, arrived, arrived, false FROM m""",
    """INSERT INTO reading_items (study_pk, priority_rank, queued_at, assigned_user_id, assigned_at)
       SELECT m.i, CASE m.priority WHEN 'stat' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END, m.arrived,
              CASE WHEN m.assigned IS NOT NULL THEN u.id END, m.assigned
       FROM m JOIN users u ON u.username = 'dr.' || lpad(m.reader::text, 2, '0')""",
    # Edge heartbeats: most edges fine, two silent for 30 min, one with a day-old spool.
    """INSERT INTO edge_health (site_id, received_at, edge_time, clock_offset_s, spool_instances, spool_bytes,
                               oldest_unsent_age_s, goodput_bps, disk_free_bytes, version, last_error)
       SELECT id, now() - CASE WHEN id IN (3, 17) THEN interval '30 min' ELSE interval '20 s' END, now(), 0.4,
              CASE WHEN id = 5 THEN 4200 ELSE id % 4 END, (id % 4) * 500000,
              CASE WHEN id = 5 THEN 86400 WHEN id % 4 > 0 THEN 12 END, 2.5e6, 80e9, '1.0', ''
       FROM sites""",
    "SELECT setval(pg_get_serial_sequence('patients', 'id'), (SELECT max(id) FROM patients))",
    "SELECT setval(pg_get_serial_sequence('studies', 'id'), (SELECT max(id) FROM studies))",
    "DROP TABLE seed, times, m",
]


def seed(dsn: str, n: int, days: int = 365) -> None:
    with psycopg.connect(dsn) as conn:
        # The milestone columns are written from the same numbers as the transitions; the
        # triggers that keep them in production would only rewrite each study row again.
        conn.execute("SET session_replication_role = replica")
        for sql in SEED_SQL:
            t0 = time.perf_counter()
            conn.execute(sql.replace("%(n)s", str(n)).replace("%(days)s", str(days)))  # type: ignore[arg-type]
            log(f"  {sql.split()[0]} {' '.join(sql.split()[1:4])[:50]}: {time.perf_counter() - t0:.1f} s")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in ("studies", "study_transitions", "instances", "reading_items")}
    log(f"seeded {counts}")


def cases(now: datetime) -> list[tuple[str, str, dict[str, str]]]:
    month = (now - timedelta(days=30)).isoformat()
    out: list[tuple[str, str, dict[str, str]]] = []
    for window, extra in (("7 d", {}), ("30 d", {"since": month})):
        for group in service.GROUPS:
            out.append((f"TAT by {group}, {window}", "/api/tat", {"group_by": group, **extra}))
    out += [("SLA breaches, live", "/api/sla/breaches", {}), ("readers' workload", "/api/readers/workload", {}),
            ("edge fleet", "/api/edges", {}), ("/metrics (Prometheus scrape)", "/metrics", {})]
    return out


METRICS_TOKEN = "bench-metrics-token"
"""The scraper's token of the benchmark's county (/metrics needs one, RELAY_METRICS_TOKEN)."""


def measure(base: str, token: str, n: int, now: datetime,
            only: str | None = None) -> list[tuple[str, list[float], int]]:
    headers = {"Authorization": f"Bearer {token}"}
    results = []
    chosen = [c for c in cases(now) if only is None or c[1] == f"/{only}"]
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for label, path, params in chosen:
            times, size = [], 0
            for k in range(n + 2):
                t0 = time.perf_counter()
                scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"} if path == "/metrics" else None
                r = client.get(path, params=params, headers=scraper)
                elapsed = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                if k >= 2:  # the first two warm the connection pool and the plan cache
                    times.append(elapsed)
                size = len(r.content)
            log(f"{label}: p50 {statistics.median(times):.0f} ms, p95 {pct(times, 95):.0f} ms ({size} bytes)")
            results.append((label, times, size))
    return results


def peer(dsn: str, n: int, now: datetime, explain: bool) -> list[float]:
    """The SQL of /api/tat?group_by=site over 30 days, bare (with the work_mem the app sets)."""
    stmt = repository.stage_percentiles_statement(since=now - timedelta(days=30), until=now, group_by="site",
                                                  zone=ZONE, stages=service.STAGES)
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
    times = []
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET work_mem = '{repository.DASHBOARD_WORK_MEM}'")  # type: ignore[arg-type]
        if explain:
            for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql):  # type: ignore[arg-type]
                print(row[0])
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute(sql).fetchall()  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40, help="requests per endpoint")
    parser.add_argument("--days", type=int, default=365,
                        help="the history spans this many days (365: 2,740 studies a day for 1M, the top of a county's range)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the peer query")
    parser.add_argument("--only", choices=["metrics"], default=None,
                        help="time only GET /metrics (no dashboard endpoints, no peer query)")
    args = parser.parse_args()
    from reader_portal.app import create_app

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp, fresh_database("relay_bench_dash") as (url, dsn):
        settings = Settings(data_dir=Path(tmp) / "var", database_url=url, broker_url=None,
                            log_level="WARNING", timezone=ZONE, metrics_token=METRICS_TOKEN)
        county = County(settings)
        try:
            setup_people(county)
            t0 = time.perf_counter()
            seed(dsn, args.studies, args.days)
            with session_scope(county.sessions) as s:  # the seed bypassed the counting triggers
                metrics_repository.rebuild_counters_unchecked(s, buckets_s=TAT_BUCKETS_S)
                s.commit()
            seeding = time.perf_counter() - t0
            log(f"seeding took {seeding:.0f} s")
            now = datetime.now(UTC)
            with serve_app(create_app(county)) as base:
                r = httpx.post(f"{base}/api/auth/token", data={"username": "bench-admin", "password": "bench-password-1"})
                r.raise_for_status()
                results = measure(base, str(r.json()["access_token"]), args.requests, now, args.only)
            floor = [] if args.only else peer(dsn, args.requests, now, args.explain)
        finally:
            county.close()
    report(args, results, floor, seeding, time.perf_counter() - started)


def report(args: argparse.Namespace, results: list[tuple[str, list[float], int]], floor: list[float],
           seeding: float, took: float) -> None:
    cmd = f".venv/bin/python -m bench.dashboard --studies {args.studies} --requests {args.requests} --days {args.days}"
    cmd += f" --only {args.only}" if args.only else ""
    print(f"\n`{cmd}` (seeding {seeding:.0f} s, total {took:.0f} s; 2-core machine shared with other jobs)\n")
    print("| endpoint | p50 ms | p95 ms | target p95 ≤ 300 ms |")
    print("| --- | --- | --- | --- |")
    for label, times, _size in results:
        p95 = pct(times, 95)
        verdict = "—" if label.startswith("/metrics") else ("met" if p95 <= TARGET_MS else "**missed**")
        print(f"| {label} | {statistics.median(times):.0f} | {p95:.0f} | {verdict} |")
    if floor:
        print(f"| peer: the SQL of TAT by site, 30 d, bare (psycopg) | {statistics.median(floor):.0f} | "
              f"{pct(floor, 95):.0f} | |")


if __name__ == "__main__":
    main()
