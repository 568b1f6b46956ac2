"""Relay wake-ups through the broker, for databases without LISTEN/NOTIFY.

On PostgreSQL the transaction that schedules a later step sends a ``NOTIFY`` and every
relay listening wakes (:mod:`flask_geneva.relay`). MariaDB and MySQL have nothing like
it, and a relay that only polled would learn of a step scheduled by another process
(a web request, ``flask geneva resume``) on its next poll: up to a second late for a
short wait. There, when the broker is Redis, the committing process publishes a wake-up
on a Redis channel of its own after the commit, and each relay subscribes to it (in a
thread of its own, which wakes the relay as the local commit does).

The channel is named after the broker's namespace and the database, so relays of other
apps on the same Redis stay asleep; a wake-up that reaches a relay it was not meant for
costs it one look at the outbox. A wake-up is a hint only: one that is lost (Redis down,
a relay reconnecting) leaves the step to the relay's poll (``POLL_INTERVAL_SQLITE_S``),
as before. With RabbitMQ or the in-process broker there is no channel: the committing
process wakes its own relay, and the others poll.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker

from flask_geneva.databases import is_mysql

logger = logging.getLogger("flask_geneva.relay")

#: The last part of the wake-up channel's name.
CHANNEL_SUFFIX: Final = "geneva-outbox"
#: How long the subscriber waits for a message before it looks whether it should stop,
#: and how long it waits before it subscribes again after an error, in seconds.
LISTEN_TIMEOUT_S: Final = 1.0
RECONNECT_DELAY_S: Final = 1.0


class BrokerWakeups:
    """The wake-up channel of one app: announce new rows, or listen for them."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel

    @classmethod
    def for_app(cls, broker: Any, database_uri: Any) -> BrokerWakeups | None:
        """The channel of an app on ``database_uri`` with ``broker``; None where it is
        not needed (PostgreSQL, SQLite) or the broker is not Redis."""
        if database_uri is None or not isinstance(broker, RedisBroker):
            return None
        url = sa.engine.make_url(database_uri)
        if not is_mysql(url.get_backend_name()):
            return None
        database = f"{url.host or ''}:{url.port or ''}/{url.database or ''}"
        return cls(broker.client, f"{broker.namespace}:{CHANNEL_SUFFIX}:{database}")

    def announce(self) -> None:
        """Wake every relay subscribed (after a commit that wrote later rows); never
        raises: a lost wake-up only leaves the row to the relays' poll."""
        try:
            self.client.publish(self.channel, b"")
        except Exception:
            logger.debug("could not publish a relay wake-up on %s", self.channel, exc_info=True)

    def listen(self, wake: Any, stop: threading.Event) -> None:
        """Call ``wake()`` for each wake-up until ``stop`` is set (run it in a thread);
        subscribes again after an error."""
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                wake()  # rows announced while this subscriber was not there
                while not stop.is_set():
                    if pubsub.get_message(timeout=LISTEN_TIMEOUT_S) is not None:
                        wake()
            except Exception:
                logger.debug("relay wake-ups on %s interrupted", self.channel, exc_info=True)
                stop.wait(RECONNECT_DELAY_S)
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection
                    logger.debug("closing the wake-up subscription failed", exc_info=True)
