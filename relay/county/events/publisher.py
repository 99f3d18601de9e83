"""Publish outbox events to RabbitMQ with pika: topic exchange, persistent, confirmed."""

from __future__ import annotations

import logging
import threading

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.orm import Session, sessionmaker

from relay.county.events import outbox

log = logging.getLogger(__name__)

EXCHANGE = "relay.events"
BATCH = 200
"""Events published per round (each confirmed before the batch is marked)."""
POLL_S = 1.0
"""Seconds between outbox rounds when there is nothing to publish."""


class EventPublisher:
    """Moves events from the outbox to the exchange; one per worker host is enough, more are safe."""

    def __init__(self, amqp_url: str, sessions: sessionmaker[Session]) -> None:
        self.amqp_url = amqp_url
        self.sessions = sessions
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

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop``; a broker or database failure is retried after a pause."""
        while not stop.is_set():
            try:
                if self.publish_pending() == BATCH:
                    continue
            except Exception as exc:  # reconnect next round; events stay in the outbox
                log.warning("event publishing failed (%s); retrying", type(exc).__name__)
                self.close()
            stop.wait(POLL_S)
        self.close()

    def close(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except Exception:
            log.debug("closing the event connection failed")
        self._conn = self._channel = None
