"""Celery on RabbitMQ (or kombu's filesystem transport, embedded): the county's workers.

Tasks take primary keys, load fresh rows, and are safe to run twice. The Celery app
is built from Settings by the entry point; nothing here reads the environment.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from kombu import Exchange, Queue

from relay.config import Settings
from relay.county.db.engine import session_scope

log = logging.getLogger(__name__)

INDEX_TASK = "relay.index_instance"

INDEX_RETRY_BACKOFF_MAX_S = 300
"""Longest wait between retries of a failed indexing task, in seconds (store or DB down)."""
INDEX_MAX_RETRIES = 50
"""Retries before an indexing task gives up and logs an error; with the backoff this is
hours. The instance stays held and unindexed (a dead-letter view is issue 4's)."""


EMBEDDED_POLL_S = 0.1
"""Polling interval of the embedded filesystem broker, in seconds (kombu's default is 1 s,
which with prefetch 1 made every indexing task wait up to a second)."""


def queue_name(settings: Settings, kind: str) -> str:
    """Name of one of the county's queues: ``<prefix>.<kind>`` (ingest, render, ...)."""
    return f"{settings.queue_prefix}.{kind}"


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url:
        # Publisher confirms: a publish returns only once RabbitMQ has taken the message,
        # so a broker restart cannot make an acknowledged upload's task vanish.
        return {"confirm_publish": True}
    folder = settings.broker_folder
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
            "store_processed": False,
            # The filesystem transport polls; with prefetch 1 every task waits one poll.
            "polling_interval": EMBEDDED_POLL_S}


def make_celery(settings: Settings) -> Celery:
    """The Celery app with the settings production depends on (see ARCHITECTURE.md)."""
    app = Celery("relay", broker=settings.resolved_broker_url, set_as_current=False)
    ingest = queue_name(settings, "ingest")
    app.conf.update(
        # Ack after the task has run: a worker crash redelivers instead of losing it.
        task_acks_late=True,
        # A child killed mid-task (OOM, kill -9) puts the message back rather than acking it.
        task_reject_on_worker_lost=True,
        # One message in hand per process: a crash strands at most one, and a long
        # task does not hold others hostage.
        worker_prefetch_multiplier=1,
        task_queues=[Queue(ingest, Exchange(ingest, type="direct"), routing_key=ingest, durable=True)],
        task_default_queue=ingest,
        task_routes={INDEX_TASK: {"queue": ingest, "routing_key": ingest}},
        task_default_delivery_mode="persistent",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Tasks here take seconds; RabbitMQ's consumer_timeout (30 min) must never be reached.
        task_time_limit=600,
        task_soft_time_limit=540,
    )
    return app


def enqueue_index(app: Celery, settings: Settings, instance_id: int) -> None:
    """Ask a worker to index an instance. Call only after the row is committed."""
    app.send_task(INDEX_TASK, args=[instance_id], queue=queue_name(settings, "ingest"))


def register_tasks(app: Celery, county: Any) -> None:
    """Bind the tasks to ``county`` (a relay.county.context.County)."""
    from relay.county.studies.service import index_instance

    @app.task(name=INDEX_TASK, bind=True, max_retries=INDEX_MAX_RETRIES)
    def index_instance_task(self: Task, instance_id: int) -> None:
        started = time.perf_counter()
        try:
            with session_scope(county.sessions) as session:
                result = index_instance(session=session, store=county.store, instance_id=instance_id)
        except Exception as exc:
            delay = min(INDEX_RETRY_BACKOFF_MAX_S, 2 ** min(self.request.retries, 9))
            log.warning("index instance_id=%d failed (%s), retry %d in %ds", instance_id,
                        type(exc).__name__, self.request.retries + 1, delay)
            raise self.retry(exc=exc, countdown=delay) from exc
        ms = (time.perf_counter() - started) * 1000
        if result is None:
            log.warning("index instance_id=%d: no such instance", instance_id)
            return
        log.info("indexed instance_id=%d study=%s new_study=%s already=%s ms=%.1f", instance_id,
                 result.study_uid, result.new_study, result.already_indexed, ms)


def worker_argv(settings: Settings, *, concurrency: int, loglevel: str) -> list[str]:
    """Arguments for ``app.worker_main``: the county's queues, no gossip/mingle chatter."""
    return ["worker", "-Q", queue_name(settings, "ingest"), "--concurrency", str(concurrency),
            "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"relay-{settings.queue_prefix}@%h"]
