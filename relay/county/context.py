"""The county's dependencies, built once in an entry point and passed down.

Connections are opened lazily, on first use, so that a Celery parent process can
fork its children before any socket or pool exists.
"""

from __future__ import annotations

import threading
from functools import cached_property

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from relay.config import CountySettings
from relay.county.db.engine import make_engine, make_sessionmaker
from relay.county.jobs import make_celery
from relay.county.storage import ObjectStore, open_store


class County:
    """Settings plus lazily opened engine, session factory, object store and Celery app."""

    def __init__(self, settings: CountySettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    @cached_property
    def engine(self) -> Engine:
        with self._lock:
            return make_engine(self.settings.resolved_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def store(self) -> ObjectStore:
        with self._lock:
            return open_store(self.settings.resolved_store_url)

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.settings)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
