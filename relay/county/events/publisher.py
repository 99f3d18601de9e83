"""Publish outbox events to RabbitMQ with pika: topic exchange, persistent, confirmed."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.orm import Session, sessionmaker

from relay.config import CountySettings
from relay.county.events import outbox

log = logging.getLogger(__name__)

EXCHANGE = "relay.events"
BATCH = 200
"""Events published per round (each confirmed before the batch is marked)."""
POLL_S = 1.0
"""Seconds between outbox rounds when there is nothing to publish."""
PRUNE_EVERY_S = 600.0
"""Seconds between retention rounds (deleting published events past the retention):
housekeeping, so rare; a round that found a full batch is followed by another at once."""
PRUNE_BATCH = 1000
"""Published events deleted per transaction: a backlog (say, the first round after an
upgrade) goes in short transactions, between which events keep being published."""
DEFAULT_RETENTION_HOURS: float = CountySettings.model_fields["outbox_retention_hours"].default


class EventPublisher:
    """Moves events from the outbox to the exchange; one per worker host is enough, more are safe."""

    def __init__(self, amqp_url: str, sessions: sessionmaker[Session], *,
                 retention_hours: float = DEFAULT_RETENTION_HOURS) -> None:
        """``retention_hours``: Settings.outbox_retention_hours (negative: keep every event)."""
        self.amqp_url = amqp_url
        self.sessions = sessions
        self.retention = timedelta(hours=retention_hours) if retention_hours >= 0 else None
        self._next_prune = 0.0
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _open(self) -> BlockingChannel:
        if self._channel is None or self._channel.is_closed:
            self._conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            self._channel = self._conn.channel()
            self._channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
            self._channel.confirm_delivery()  # basic_publish now raises unless the broker took it
        return self._channel

    def publish_pending(self) -> int:
        """Publish one batch; return how many events went out."""
        with self.sessions() as session:
            events = outbox.claim_unpublished(session, limit=BATCH)
            if not events:
                return 0
            channel = self._open()
            for event in events:
                channel.basic_publish(EXCHANGE, event.topic, event.payload.encode(), pika.BasicProperties(
                    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=f"relay-event-{event.id}", timestamp=int(event.created_at.timestamp())))
            outbox.mark_published(session, [e.id for e in events])
            session.commit()
        return len(events)

    def prune_published(self) -> int:
        """Delete one batch (PRUNE_BATCH) of events published longer than the retention ago."""
        if self.retention is None:
            return 0
        with self.sessions() as session:
            deleted = outbox.delete_published(session, older_than=self.retention, limit=PRUNE_BATCH)
            session.commit()
        if deleted:
            log.info("outbox retention: deleted %d published events", deleted)
        return deleted

    def _prune_when_due(self) -> None:
        """One retention batch if it is time; a failure waits for the next round."""
        if time.monotonic() < self._next_prune:
            return
        try:
            full = self.prune_published() == PRUNE_BATCH
        except Exception as exc:  # publishing must not stop for housekeeping
            log.warning("outbox retention failed (%s); retrying later", type(exc).__name__)
            full = False
        self._next_prune = time.monotonic() + (0.0 if full else PRUNE_EVERY_S)

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop``, deleting old published events now and then; a broker or
        database failure is retried after a pause."""
        while not stop.is_set():
            try:
                published = self.publish_pending()
            except Exception as exc:  # reconnect next round; events stay in the outbox
                log.warning("event publishing failed (%s); retrying", type(exc).__name__)
                self.close()
                published = 0
            self._prune_when_due()
            if published < BATCH:
                stop.wait(POLL_S)
        self.close()

    def close(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except Exception:
            log.debug("closing the event connection failed")
        self._conn = self._channel = None
