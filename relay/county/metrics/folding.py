"""The worker's periodic job that folds the counters' pending deltas (migration 0022), so
that a scrape of /metrics never has to write."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from relay.county.metrics import repository

log = logging.getLogger(__name__)

FOLD_S = 30.0
"""Seconds between two folds. Between them a scrape adds the pending deltas itself (exact
either way); folding keeps that addition to about 30 seconds of changes."""


def fold_once(sessions: sessionmaker[Session]) -> None:
    """Fold the pending deltas now, in one committed transaction."""
    with sessions() as session:
        repository.fold(session)
        session.commit()


def run_folding(sessions: sessionmaker[Session], stop: threading.Event, *, every_s: float = FOLD_S) -> None:
    """Fold every ``every_s`` seconds until ``stop`` is set (a thread of the worker)."""
    while not stop.is_set():
        try:
            fold_once(sessions)
        except Exception as exc:  # the database may be away: try again at the next round
            log.warning("metrics fold failed (%s)", type(exc).__name__)
        stop.wait(every_s)
