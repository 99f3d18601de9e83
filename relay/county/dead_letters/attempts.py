"""Count attempts of a unit of work and give up, visibly, past a cap.

Celery's ``task_reject_on_worker_lost`` puts a message back when its worker dies; a
message that kills every worker would loop forever (Celery #4976). Counting in the
database works on any broker (RabbitMQ, the embedded filesystem transport) and
leaves the dead letters where the administrator can list and retry them.
"""

from __future__ import annotations

import logging


from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import TaskAttempt

log = logging.getLogger(__name__)


def begin(*, session: Session, task: str, key: str, cap: int) -> bool:
    """Count one more attempt (committed at once); False if the work is dead-lettered."""
    now = now_utc()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(TaskAttempt).values(task=task, key=key, attempts=1, first_attempt_at=now,
                                      last_attempt_at=now, last_error="")
    stmt = stmt.on_conflict_do_update(
        index_elements=["task", "key"],
        set_={"attempts": TaskAttempt.attempts + 1, "last_attempt_at": now})
    attempts, dead_at = session.execute(
        stmt.returning(TaskAttempt.attempts, TaskAttempt.dead_at)).one()
    if dead_at is None and attempts > cap:
        session.execute(update(TaskAttempt).where(TaskAttempt.task == task, TaskAttempt.key == key)
                        .values(dead_at=now))
        log.error("dead-lettered task=%s key=%s after %d attempts", task, key, attempts - 1)
    session.commit()
    return dead_at is None and attempts <= cap


def failed(*, session: Session, task: str, key: str, error: str) -> None:
    """Remember why the last attempt failed (error class and message, no patient data)."""
    session.execute(update(TaskAttempt).where(TaskAttempt.task == task, TaskAttempt.key == key)
                    .values(last_error=error[:2000]))
    session.commit()


def done(*, session: Session, task: str, key: str) -> None:
    """The work succeeded: forget its attempts."""
    session.execute(delete(TaskAttempt).where(TaskAttempt.task == task, TaskAttempt.key == key))
    session.commit()


def attempts(*, session: Session, task: str, key: str) -> int:
    row = session.execute(select(TaskAttempt.attempts).where(
        TaskAttempt.task == task, TaskAttempt.key == key)).scalar_one_or_none()
    return int(row or 0)


def dead_letters(*, session: Session) -> list[TaskAttempt]:
    return list(session.execute(select(TaskAttempt).where(TaskAttempt.dead_at.is_not(None))
                                .order_by(TaskAttempt.dead_at.desc())).scalars())


def revive(*, session: Session, task_attempt_id: int) -> TaskAttempt | None:
    """Give a dead letter a fresh set of attempts; the caller enqueues it again."""
    row = session.get(TaskAttempt, task_attempt_id)
    if row is None or row.dead_at is None:
        return None
    row.attempts, row.dead_at, row.last_attempt_at = 0, None, now_utc()
    session.commit()
    return row


