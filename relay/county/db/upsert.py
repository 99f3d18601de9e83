"""Insert-if-absent on a natural key, for PostgreSQL and SQLite alike.

At-least-once delivery means every task may run twice and two workers may race on
the same study: a unique constraint decides, and the loser simply reads the row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.county.db.models import Base


def insert_ignore(
    session: Session, model: type[Base], values: dict[str, Any], *, keys: list[str]
) -> tuple[int, bool]:
    """Insert ``values`` unless a row with the same ``keys`` exists; return (id, inserted)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    new_id = session.execute(stmt.returning(model.id)).scalar_one_or_none()  # type: ignore[attr-defined]
    if new_id is not None:
        return int(new_id), True
    where = [getattr(model, k) == values[k] for k in keys]
    existing = session.execute(select(model.id).where(*where)).scalar_one()  # type: ignore[attr-defined]
    return int(existing), False
