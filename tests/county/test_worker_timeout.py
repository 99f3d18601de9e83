"""A task that outlives the broker's consumer timeout (issue 13, row 8).

RabbitMQ closes the channel of a consumer that holds an unacknowledged message longer
than ``consumer_timeout`` (30 min by default, checked about once a minute). The worker's
hard task time limit (600 s, relay.county.jobs) keeps every task below it. Should a broker
be configured with a shorter timeout, what happens was found here: Celery treats the
closed channel as unrecoverable and the worker process exits (CRITICAL in its log); the
message goes back to the queue. Its supervisor (compose ``restart: unless-stopped``, or
systemd) starts it again, and the redelivered task completes. So: a private broker with a
5 s timeout, an index task held on a stalled object store past it; the worker exits, is
started again as a supervisor would; the instance ends indexed and rendered exactly once
and the new worker serves the next task. Lost 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.linkemu import LinkEmulator
from relay.config import Settings
from relay.county.context import County
from relay.county.dead_letters import attempts
from relay.county.db.models import ReadingItem, RenderResult, Study, StudyTransition
from relay.county.jobs import INDEX_TASK, enqueue_index
from tests.county.test_index import ingest
from tests.factories import encode, make_dataset, make_site
from tests.processes import RelayProcess, base_env, wait_for
from tests.servers import PrivateRabbit, SeaweedFS

CONSUMER_TIMEOUT_MS = 5000


@pytest.fixture
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit(config=f"consumer_timeout = {CONSUMER_TIMEOUT_MS}")
    yield node
    node.stop()


def _count(county: County, model: type) -> int:
    with county.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_a_task_held_past_the_consumer_timeout_completes_once_and_the_worker_goes_on(
        county: County, settings: Settings, seaweed: SeaweedFS, rabbit: PrivateRabbit, tmp_path: Path) -> None:
    private = County(settings.model_copy(update={"broker_url": rabbit.url}))
    site_id, _ = make_site(county)
    first = ingest(county, encode(make_dataset()), site_id=site_id)
    host, s3_port = seaweed.endpoint.split(":")
    with LinkEmulator(host, int(s3_port), rate_bps=None, delay_s=0.0) as link:
        store_url = settings.resolved_store_url.replace(seaweed.endpoint, f"127.0.0.1:{link.listen_port}")
        env = base_env(data_dir=str(tmp_path / "var"), database_url=settings.resolved_database_url,
                       broker_url=rabbit.url, queue_prefix=settings.queue_prefix, store_url=store_url)
        worker = RelayProcess("worker", ["worker", "--concurrency", "1"], env=env, cwd=tmp_path, logdir=tmp_path)
        try:
            wait_for("the worker ready", lambda: " ready." in worker.log(), timeout=120, procs=[worker])
            link.stall()
            enqueue_index(private.celery, private.settings, first)

            def started() -> bool:
                with county.sessions() as s:
                    return attempts.attempts(session=s, task=INDEX_TASK, key=str(first)) >= 1

            wait_for("the index task to start", started, timeout=60, procs=[worker])
            wait_for("the broker to close the channel of the held task",
                     lambda: "PRECONDITION_FAILED" in worker.log(), timeout=180)
            link.unstall()
            wait_for("the worker to exit on it", lambda: worker.proc.poll() is not None, timeout=120)
            assert "Unrecoverable error: PreconditionFailed" in worker.log()
            worker.stop()
            # the supervisor starts it again
            worker = RelayProcess("worker-again", ["worker", "--concurrency", "1"], env=env, cwd=tmp_path,
                                  logdir=tmp_path)
            wait_for("the held instance indexed and rendered",
                     lambda: _count(county, RenderResult) == 1 and _count(county, Study) == 1,
                     timeout=180, procs=[worker])
            second = ingest(county, encode(make_dataset()), site_id=site_id)
            enqueue_index(private.celery, private.settings, second)
            wait_for("the worker to serve the next task", lambda: _count(county, RenderResult) == 2,
                     timeout=180, procs=[worker])
        finally:
            worker.stop()
            private.close()
    assert _count(county, Study) == 2
    assert _count(county, StudyTransition) == 4  # arrived + queued, once per study
    assert _count(county, ReadingItem) == 2


def test_the_hard_task_time_limit_stays_below_rabbitmqs_default_consumer_timeout(settings: Settings) -> None:
    """Why the case above does not happen with the broker's defaults."""
    from relay.county.jobs import make_celery

    rabbitmq_default_consumer_timeout_s = 30 * 60
    assert make_celery(settings).conf.task_time_limit < rabbitmq_default_consumer_timeout_s
