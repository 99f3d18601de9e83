"""Celery on RabbitMQ (or kombu's filesystem transport, embedded): the county's workers.

Tasks take primary keys, load fresh rows, and are safe to run twice. The Celery app
is built from Settings by the entry point; nothing here reads the environment.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from relay.config import Settings
from relay.county.db.engine import session_scope

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

INDEX_RETRY_BACKOFF_MAX_S = 300
"""Longest wait between retries of a failed indexing task, in seconds (store or DB down)."""
INDEX_MAX_ATTEMPTS = 20
"""Attempts (retries and redeliveries after a dead worker alike) before an indexing task is
dead-lettered for the administrator; with the backoff that is over an hour of trying.
The instance itself stays held: only its indexing waits for a person."""


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


def enqueue_index(app: Celery, settings: Settings, instance_id: int) -> None:
    """Ask a worker to index an instance. Call only after the row is committed."""
    app.send_task(INDEX_TASK, args=[instance_id], queue=queue_name(settings, "ingest"))


def _backoff_s(retries: int) -> int:
    return int(min(INDEX_RETRY_BACKOFF_MAX_S, 2 ** min(retries, 9)))


def enqueue_render(app: Celery, settings: Settings, instance_id: int) -> None:
    """Ask a render worker for an instance's thumbnail or ECG numbers (after indexing)."""
    app.send_task(RENDER_TASK, args=[instance_id], queue=queue_name(settings, "render"))


def enqueue_assign(app: Celery, settings: Settings, study_id: int) -> None:
    """Ask for a reader for a study that went onto the reading queue (after that commit)."""
    app.send_task(ASSIGN_TASK, args=[study_id], queue=queue_name(settings, "assign"))


def enqueue_deliver(app: Celery, settings: Settings, report_id: int) -> None:
    """Ask for a signed report's SR and PDF to be built and attached (after the sign commit)."""
    app.send_task(DELIVER_TASK, args=[report_id], queue=queue_name(settings, "deliver"))


ENQUEUE = {INDEX_TASK: enqueue_index, RENDER_TASK: enqueue_render, ASSIGN_TASK: enqueue_assign,
           DELIVER_TASK: enqueue_deliver}
"""How to send each task again (the administrator's dead-letter retry)."""


def _guarded(county: Any, task: Task, name: str, item_id: int, work: Callable[[Any], Any],
             on_dead: Callable[[Any], None] | None = None) -> Any:
    """Run ``work(session)`` under the attempt cap; on failure, back off and retry.

    Returns None, without running, once the work is dead-lettered; ``on_dead(session)``
    then leaves what the users should see instead (run at every later delivery too, so
    it must be idempotent).
    """
    from relay.county.tasks import attempts

    key = str(item_id)
    try:
        with session_scope(county.sessions) as session:
            if not attempts.begin(session=session, task=name, key=key, cap=INDEX_MAX_ATTEMPTS):
                _after_dead(session, name, key, on_dead)
                return None
        with session_scope(county.sessions) as session:
            result = work(session)
        with session_scope(county.sessions) as session:
            attempts.done(session=session, task=name, key=key)
        return result
    except Exception as exc:
        _note_failure(county, name, key, exc)
        delay = _backoff_s(task.request.retries)
        log.warning("%s id=%d failed (%s), retry in %ds", name, item_id, type(exc).__name__, delay)
        raise task.retry(exc=exc, countdown=delay) from exc


def _after_dead(session: Any, name: str, key: str, on_dead: Callable[[Any], None] | None) -> None:
    """Leave the dead letter's note; a failure is logged, not retried (the work is dead)."""
    if on_dead is None:
        return
    try:
        on_dead(session)
        session.commit()
    except Exception as exc:
        session.rollback()
        log.error("%s key=%s: could not record the dead letter's note (%s)", name, key, type(exc).__name__)


def register_tasks(app: Celery, county: Any) -> None:
    """Bind the tasks to ``county`` (a relay.county.context.County)."""
    from relay.county.previews.service import record_given_up, render_instance
    from relay.county.reading.assign import assign_study
    from relay.county.reports.delivery import attach_renderings, mark_ready
    from relay.county.studies.service import index_instance

    @app.task(name=INDEX_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def index_instance_task(self: Task, instance_id: int) -> None:
        started = time.perf_counter()
        result = _guarded(county, self, INDEX_TASK, instance_id, lambda session: index_instance(
            session=session, store=county.store, instance_id=instance_id))
        if result is None:
            log.warning("index instance_id=%d: no such instance or dead-lettered", instance_id)
            return
        # Also when already indexed: a retry after a failed enqueue must still reach render.
        enqueue_render(app, county.settings, instance_id)
        if result.queued_study_pk is not None:
            _enqueue_assign_or_wait(app, county.settings, result.queued_study_pk)
        log.info("indexed instance_id=%d study=%s new_study=%s already=%s ms=%.1f", instance_id,
                 result.study_uid, result.new_study, result.already_indexed,
                 (time.perf_counter() - started) * 1000)

    @app.task(name=RENDER_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def render_instance_task(self: Task, instance_id: int) -> None:
        started = time.perf_counter()
        result = _guarded(county, self, RENDER_TASK, instance_id, lambda session: render_instance(
            session=session, store=county.store, instance_id=instance_id),
            on_dead=lambda session: record_given_up(session=session, instance_id=instance_id,
                                                    attempts=INDEX_MAX_ATTEMPTS))
        log.info("rendered instance_id=%d ok=%s ms=%.1f", instance_id,
                 None if result is None else result.ok, (time.perf_counter() - started) * 1000)

    @app.task(name=ASSIGN_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def assign_study_task(self: Task, study_id: int) -> None:
        reader = _guarded(county, self, ASSIGN_TASK, study_id, lambda session: assign_study(
            session=session, settings=county.settings, study_id=study_id))
        log.info("assign study_id=%d reader=%s", study_id, reader or "-")

    @app.task(name=DELIVER_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def deliver_report_task(self: Task, report_id: int) -> None:
        started = time.perf_counter()
        # Dead-lettered: the signed report still goes home, without its SR and PDF.
        keys = _guarded(county, self, DELIVER_TASK, report_id, lambda _session: attach_renderings(county, report_id),
                        on_dead=lambda session: mark_ready(session=session, report_id=report_id))
        log.info("deliver report_id=%d objects=%s ms=%.1f", report_id, sorted(keys or {}),
                 (time.perf_counter() - started) * 1000)


def start_audit_checkpoints(settings: Settings, county: Any) -> None:
    """Sign audit checkpoints every RELAY_AUDIT_CHECKPOINT_MINUTES in the worker's main process
    once its pool is up. Every worker runs the round; the round's unique key in
    ``audit_checkpoints`` lets exactly one of them write it."""
    import threading

    from celery import signals

    from relay.county.audit.checkpoint import run_checkpoints

    stop = threading.Event()

    def _start(**_kwargs: Any) -> None:
        threading.Thread(target=run_checkpoints, args=(settings, county.sessions, stop),
                         name="audit-checkpoints", daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def _enqueue_assign_or_wait(app: Celery, settings: Settings, study_pk: int) -> None:
    """Enqueue the study's assignment; if the broker refuses, the periodic round assigns it."""
    try:
        enqueue_assign(app, settings, study_pk)
    except Exception as exc:
        log.warning("enqueue assign study_id=%d failed (%s); the assignment round will take it",
                    study_pk, type(exc).__name__)


def _note_failure(county: Any, name: str, key: str, exc: Exception) -> None:
    """Record the error class (not its message: SQL errors can carry patient values)."""
    from relay.county.tasks import attempts

    try:
        with session_scope(county.sessions) as session:
            attempts.failed(session=session, task=name, key=key,
                            error=f"{type(exc).__module__}.{type(exc).__name__}")
    except Exception:  # the database may be what failed; the retry still happens
        log.debug("could not record failure of %s", key)


def worker_argv(settings: Settings, *, concurrency: int, loglevel: str,
                queues: tuple[str, ...] = QUEUES) -> list[str]:
    """Arguments for ``app.worker_main``: the chosen queues, no gossip/mingle chatter, and a
    node name unique on the host (it carries the pid): two workers with one name cannot both
    start, RabbitMQ gives the node's pidbox queue to one connection only."""
    unknown = set(queues) - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queues {sorted(unknown)}; the county has {list(QUEUES)}")
    names = ",".join(queue_name(settings, q) for q in queues)
    return ["worker", "-Q", names, "--concurrency", str(concurrency),
            "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"relay-{settings.queue_prefix}-{os.getpid()}@%h"]
