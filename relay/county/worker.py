"""The county's Celery tasks, bound to a County by the worker's entry point.

Tasks take primary keys, load fresh rows, and are safe to run twice. The app, its queues
and the ``enqueue_*`` calls are in relay.county.jobs; nothing here reads the environment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery, Task, signals
from sqlalchemy.orm import Session

from relay.config import CountySettings
from relay.county.audit.checkpoint import run_checkpoints
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.county.flows import attach_renderings
from relay.county.orders.matching import on_new_study
from relay.county.jobs import (ASSIGN_TASK, DELIVER_TASK, INDEX_TASK, QUEUES, RENDER_TASK, enqueue_assign,
                               enqueue_render, queue_name)
from relay.county.previews.service import record_given_up, render_instance
from relay.county.reading.assign import assign_study
from relay.county.reports.delivery import mark_ready
from relay.county.studies.service import index_instance
from relay.county.dead_letters import attempts

log = logging.getLogger(__name__)

INDEX_RETRY_BACKOFF_MAX_S = 300
"""Longest wait between retries of a failed indexing task, in seconds (store or DB down)."""
INDEX_MAX_ATTEMPTS = 20
"""Attempts (retries and redeliveries after a dead worker alike) before an indexing task is
dead-lettered for the administrator; with the backoff that is over an hour of trying.
The instance itself stays held: only its indexing waits for a person."""


def _backoff_s(retries: int) -> int:
    return int(min(INDEX_RETRY_BACKOFF_MAX_S, 2 ** min(retries, 9)))


def _guarded(county: County, task: Task, name: str, item_id: int, work: Callable[[Session], Any],
             on_dead: Callable[[Session], None] | None = None) -> Any:
    """Run ``work(session)`` under the attempt cap; on failure, back off and retry.

    Returns None, without running, once the work is dead-lettered; ``on_dead(session)``
    then leaves what the users should see instead (run at every later delivery too, so
    it must be idempotent).
    """
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


def _after_dead(session: Session, name: str, key: str, on_dead: Callable[[Session], None] | None) -> None:
    """Leave the dead letter's note; a failure is logged, not retried (the work is dead)."""
    if on_dead is None:
        return
    try:
        on_dead(session)
        session.commit()
    except Exception as exc:
        session.rollback()
        log.error("%s key=%s: could not record the dead letter's note (%s)", name, key, type(exc).__name__)


def register_tasks(app: Celery, county: County) -> None:
    """Bind the tasks to ``county``."""
    match_orders = on_new_study(ZoneInfo(county.settings.timezone))

    @app.task(name=INDEX_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def index_instance_task(self: Task, instance_id: int) -> None:
        started = time.perf_counter()
        result = _guarded(county, self, INDEX_TASK, instance_id, lambda session: index_instance(
            session=session, store=county.store, instance_id=instance_id, on_new_study=match_orders))
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


def start_audit_checkpoints(settings: CountySettings, county: County) -> None:
    """Sign audit checkpoints every RELAY_AUDIT_CHECKPOINT_MINUTES in the worker's main process
    once its pool is up. Every worker runs the round; the round's unique key in
    ``audit_checkpoints`` lets exactly one of them write it."""
    stop = threading.Event()

    def _start(**_kwargs: Any) -> None:
        threading.Thread(target=run_checkpoints, args=(settings, county.sessions, stop),
                         name="audit-checkpoints", daemon=True).start()

    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(lambda **_k: stop.set(), weak=False)


def _enqueue_assign_or_wait(app: Celery, settings: CountySettings, study_pk: int) -> None:
    """Enqueue the study's assignment; if the broker refuses, the periodic round assigns it."""
    try:
        enqueue_assign(app, settings, study_pk)
    except Exception as exc:
        log.warning("enqueue assign study_id=%d failed (%s); the assignment round will take it",
                    study_pk, type(exc).__name__)


def _note_failure(county: County, name: str, key: str, exc: Exception) -> None:
    """Record the error class (not its message: SQL errors can carry patient values)."""
    try:
        with session_scope(county.sessions) as session:
            attempts.failed(session=session, task=name, key=key,
                            error=f"{type(exc).__module__}.{type(exc).__name__}")
    except Exception:  # the database may be what failed; the retry still happens
        log.debug("could not record failure of %s", key)


def worker_argv(settings: CountySettings, *, concurrency: int, loglevel: str,
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
