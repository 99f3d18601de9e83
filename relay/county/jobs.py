"""Celery on RabbitMQ (or kombu's filesystem transport, embedded): the county's app
factory, its queues, and the ``enqueue_*`` calls a service or route makes after its commit.

A leaf: it imports no county domain, so any of them can enqueue work; the tasks
themselves are bound in relay.county.worker. Nothing here reads the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from relay.config import CountySettings
from relay.county.errors import Unavailable

log = logging.getLogger(__name__)

INDEX_TASK = "relay.index_instance"
RENDER_TASK = "relay.render_instance"
ASSIGN_TASK = "relay.assign_study"
DELIVER_TASK = "relay.deliver_report"
QUEUES = ("ingest", "render", "assign", "deliver")
"""The county's queues; each can be served by its own workers (`relay worker --queues`):
ingest (index an instance), render (thumbnail, ECG numbers), assign (give a queued study
to a reader), deliver (build a signed report's SR and PDF for the township)."""
ROUTES = {INDEX_TASK: "ingest", RENDER_TASK: "render", ASSIGN_TASK: "assign", DELIVER_TASK: "deliver"}
"""The queue each task runs on."""

EMBEDDED_POLL_S = 0.1
"""Polling interval of the embedded filesystem broker, in seconds (kombu's default is 1 s,
which with prefetch 1 made every indexing task wait up to a second)."""


def queue_name(settings: CountySettings, kind: str) -> str:
    """Name of one of the county's queues: ``<prefix>.<kind>`` (ingest, render, ...)."""
    return f"{settings.queue_prefix}.{kind}"


def _transport_options(settings: CountySettings) -> dict[str, Any]:
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


def make_celery(settings: CountySettings) -> Celery:
    """The Celery app with the settings production depends on (see docs/ARCHITECTURE.md)."""
    app = Celery("relay", broker=settings.resolved_broker_url, set_as_current=False)
    names = {kind: queue_name(settings, kind) for kind in QUEUES}
    ingest = names["ingest"]
    app.conf.update(
        # Ack after the task has run: a worker crash redelivers instead of losing it.
        task_acks_late=True,
        # A child killed mid-task (OOM, kill -9) puts the message back rather than acking it.
        task_reject_on_worker_lost=True,
        # One message in hand per process: a crash strands at most one, and a long
        # task does not hold others hostage.
        worker_prefetch_multiplier=1,
        task_queues=[Queue(n, Exchange(n, type="direct"), routing_key=n, durable=True)  # type: ignore[no-untyped-call]
                     for n in names.values()],
        task_default_queue=ingest,
        task_routes={task: {"queue": names[kind], "routing_key": names[kind]} for task, kind in ROUTES.items()},
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


def enqueue_index(app: Celery, settings: CountySettings, instance_id: int) -> None:
    """Ask a worker to index an instance. Call only after the row is committed."""
    app.send_task(INDEX_TASK, args=[instance_id], queue=queue_name(settings, "ingest"))


def enqueue_render(app: Celery, settings: CountySettings, instance_id: int) -> None:
    """Ask a render worker for an instance's thumbnail or ECG numbers (after indexing)."""
    app.send_task(RENDER_TASK, args=[instance_id], queue=queue_name(settings, "render"))


def enqueue_assign(app: Celery, settings: CountySettings, study_id: int) -> None:
    """Ask for a reader for a study that went onto the reading queue (after that commit)."""
    app.send_task(ASSIGN_TASK, args=[study_id], queue=queue_name(settings, "assign"))


def enqueue_deliver(app: Celery, settings: CountySettings, report_id: int) -> None:
    """Ask for a signed report's SR and PDF to be built and attached (after the sign commit)."""
    app.send_task(DELIVER_TASK, args=[report_id], queue=queue_name(settings, "deliver"))


ENQUEUE = {INDEX_TASK: enqueue_index, RENDER_TASK: enqueue_render, ASSIGN_TASK: enqueue_assign,
           DELIVER_TASK: enqueue_deliver}
"""How to send each task again (the administrator's dead-letter retry)."""


def enqueue_committed(app: Celery, settings: CountySettings, instance_ids: Iterable[int]) -> None:
    """Enqueue indexing of committed instances; a failure is a 503 so the edge sends again
    (the resend is a duplicate whose indexing is enqueued again: nothing is lost)."""
    for instance_id in instance_ids:
        try:
            enqueue_index(app, settings, instance_id)
        except Exception as exc:
            log.error("enqueue failed instance_id=%d: %s", instance_id, type(exc).__name__)
            raise Unavailable("work queue unavailable; instance held, send again") from exc
