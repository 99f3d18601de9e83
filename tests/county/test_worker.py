"""The county worker under failure: capped attempts, and a child killed mid-task."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pika
import pytest
from sqlalchemy import func, select

from bench.linkemu import LinkEmulator
from relay.county.db.engine import session_scope
from relay.county.db.models import ReadingItem, RenderResult, Study, StudyTransition, TaskAttempt
from relay.county.dead_letters import attempts
from relay.county.jobs import (ASSIGN_TASK, DELIVER_TASK, INDEX_TASK, RENDER_TASK, ROUTES, enqueue_index,
                               enqueue_render, queue_name)
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.factories import encode, make_dataset, make_site
from tests.processes import RelayProcess, base_env, wait_for


def test_work_past_its_attempt_cap_is_dead_lettered_and_can_be_revived(county):
    with session_scope(county.sessions) as s:
        assert [attempts.begin(session=s, task="t", key="7", cap=2) for _ in range(3)] == [True, True, False]
        assert attempts.begin(session=s, task="t", key="7", cap=2) is False  # stays dead
        attempts.failed(session=s, task="t", key="7", error="builtins.RuntimeError")
        (dead,) = attempts.dead_letters(session=s)
        assert (dead.task, dead.key, dead.last_error) == ("t", "7", "builtins.RuntimeError")
        attempts.revive(session=s, task_attempt_id=dead.id)
        assert attempts.begin(session=s, task="t", key="7", cap=2) is True
        attempts.done(session=s, task="t", key="7")
        assert attempts.attempts(session=s, task="t", key="7") == 0


@pytest.mark.parametrize("task", [ASSIGN_TASK, DELIVER_TASK])
def test_the_admin_retry_of_a_dead_assign_or_deliver_task_sends_it_to_its_queue(county, amqp_url, task):
    from fastapi.testclient import TestClient

    from relay.county.app import create_app
    from tests.county.test_reports import login

    with session_scope(county.sessions) as s:
        for _ in range(3):
            attempts.begin(session=s, task=task, key="42", cap=1)
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        (dead,) = client.get("/api/dead-letters", headers=admin).json()
        assert (dead["task"], dead["key"]) == (task, "42")
        assert client.post(f"/api/dead-letters/{dead['id']}/retry", headers=admin).status_code == 202
        assert client.get("/api/dead-letters", headers=admin).json() == []
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        waiting = conn.channel().queue_declare(queue_name(county.settings, ROUTES[task]), passive=True)
    finally:
        conn.close()
    assert waiting.method.message_count == 1


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _stalled_store_url(s3_url: str, seaweed, port: int) -> str:
    return s3_url.replace(seaweed.endpoint, f"127.0.0.1:{port}")


def _index_case(county, instance_id):
    enqueue_index(county.celery, county.settings, instance_id)
    return INDEX_TASK, f"indexed instance_id={instance_id} "


def _render_case(county, instance_id):
    index(county, instance_id)  # indexed here; the worker only renders
    enqueue_render(county.celery, county.settings, instance_id)
    return RENDER_TASK, f"rendered instance_id={instance_id} "


def _done(county) -> bool:
    with county.sessions() as s:
        return s.scalar(select(func.count()).select_from(Study)) == 1 and \
            s.scalar(select(func.count()).select_from(RenderResult)) == 1 and \
            s.scalar(select(func.count()).select_from(TaskAttempt)) == 0


@pytest.mark.parametrize("case", [_index_case, _render_case], ids=["index", "render"])
def test_a_worker_child_killed_mid_task_is_redelivered_and_completes_once(county, settings, seaweed, tmp_path,
                                                                          case):
    site_id, _ = make_site(county)
    instance_id = ingest(county, encode(make_dataset()), site_id=site_id)
    host, s3_port = seaweed.endpoint.split(":")
    with LinkEmulator(host, int(s3_port), rate_bps=None, delay_s=0.0) as link:
        env = base_env(data_dir=str(tmp_path / "var"), database_url=settings.resolved_database_url,
                       broker_url=settings.resolved_broker_url, queue_prefix=settings.queue_prefix,
                       store_url=_stalled_store_url(settings.resolved_store_url, seaweed, link.listen_port))
        worker = RelayProcess("worker", ["worker", "--concurrency", "1"], env=env, cwd=tmp_path,
                              logdir=tmp_path)
        try:
            link.stall()
            task, done_line = case(county, instance_id)

            def started() -> bool:
                with county.sessions() as s:
                    return attempts.attempts(session=s, task=task, key=str(instance_id)) == 1

            wait_for("the task to start and hang on the stalled store", started, timeout=60, procs=[worker])
            (child,) = _children(worker.proc.pid)
            os.kill(child, signal.SIGKILL)
            time.sleep(0.5)
            link.unstall()
            # Indexing goes on to rendering: either way the instance ends indexed and rendered.
            wait_for("the redelivered task to complete", lambda: _done(county), timeout=90, procs=[worker])
        finally:
            worker.stop()
    log = worker.log()
    assert "SIGKILL" in log or "signal 9" in log, log[-3000:]
    assert log.count(done_line) == 1
    with county.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StudyTransition)) == 2
        assert s.scalar(select(func.count()).select_from(ReadingItem)) == 1
        assert s.scalar(select(func.count()).select_from(RenderResult)) == 1
