"""Fixtures over real servers: PostgreSQL, RabbitMQ, SeaweedFS's S3 gateway.

A server that cannot be reached makes the test fail with the reason; nothing skips.
Isolation: one PostgreSQL database and one queue prefix per test run, migrated once,
tables emptied after each test that used them; one S3 bucket per run.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from relay.config import Settings
from relay.county.context import County
from relay.county.db.migrate import upgrade
from relay.county.db.models import Base
from tests.servers import SeaweedFS, start_seaweedfs

PG_ADMIN_DSN = os.environ.get("RELAY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("RELAY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_dicom"
RUN_ID = uuid.uuid4().hex[:10]


def _reachable(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"server {host}:{port} is not reachable ({exc}); tests need it running")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head."""
    _reachable("127.0.0.1", 5432)
    name = f"relay_test_{RUN_ID}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def amqp_url() -> str:
    _reachable("127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, amqp_url: str, seaweed: SeaweedFS) -> Settings:
    """County settings on the real servers; a queue prefix of this run's own."""
    return Settings(data_dir=tmp_path / "var", database_url=pg_url, broker_url=amqp_url,
                    store_url=seaweed.s3_url, queue_prefix=f"relaytest{RUN_ID}")


@pytest.fixture
def county(settings: Settings) -> Iterator[County]:
    """A County on the real servers; its tables are emptied after the test."""
    c = County(settings)
    yield c
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with c.engine.begin() as conn:
        # Test-only cleanup: audit_events and audit_checkpoints refuse TRUNCATE (triggers,
        # migration 0028). The test role is a superuser, and replica mode skips triggers for
        # this one transaction; production never does this.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    _purge_queues(settings)
    c.close()


def _purge_queues(settings: Settings) -> None:
    from relay.county.jobs import QUEUES, queue_name

    import pika

    params = pika.URLParameters(AMQP_URL)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        for kind in QUEUES:
            try:
                ch.queue_purge(queue_name(settings, kind))
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()  # the queue did not exist yet
    finally:
        conn.close()


@pytest.fixture(scope="session")
def samples() -> list[dict[str, str]]:
    """The committed sample instances (sample_dicom/manifest.json), with absolute paths."""
    entries = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
    items = entries["files"] if isinstance(entries, dict) else entries
    return [{**e, "abspath": str(SAMPLES / e["path"])} for e in items]
