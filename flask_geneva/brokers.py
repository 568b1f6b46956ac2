"""The Dramatiq broker named by ``GENEVA_BROKER_URL``.

Dramatiq's Redis consumers poll (there is no blocking pop in its fetch script): an idle
consumer sleeps between fetches, for up to the worker's timeout, so a message published
to an idle worker waits for the end of that sleep (tens of milliseconds on average at a
100 ms timeout). Geneva's Redis broker gives its queues a *wake channel* instead: each
message published to a queue (not a delay queue) also pushes a token onto a short Redis
list beside it (``<namespace>:geneva-wake:<queue>``, cut back to
:data:`WAKE_TOKENS_KEPT` whenever it grows to twice that), and an idle consumer of that
queue, rather than sleeping, waits on that list with a blocking pop for up to
``GENEVA_WORKER_IDLE_TIMEOUT_MS``. A message therefore reaches
an idle worker within a Redis round trip, and an idle worker asks Redis for work about
ten times a second. Tokens cannot be lost between a fetch that found nothing and the
wait (they stay in the list), and a stale token costs one empty fetch. Everything else
stays on the worker's own timeout: the delay queues (geneva never delays messages: its
waits live in the database) and the worker threads' checks for a shutdown.
"""

from __future__ import annotations

import time
from typing import Any, Final

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from flask_geneva.errors import ConfigurationError, SetupError

#: How many wake tokens a queue's wake list keeps (enough for every idle consumer).
WAKE_TOKENS_KEPT: Final = 64
#: How long a consumer whose prefetch is full waits before it looks again (seconds): it
#: must not take a wake token another process's idle consumer could use.
FULL_PREFETCH_PAUSE: Final = 0.005
#: The longest one blocking wait on a wake list (seconds), whatever the idle timeout:
#: below redis-py's default socket timeout (5 s) and far below Dramatiq's heartbeat
#: timeout (a consumer's fetch is its heartbeat).
WAKE_WAIT_MAX: Final = 1.0


class GenevaRedisBroker(RedisBroker):
    """A :class:`~dramatiq.brokers.redis.RedisBroker` whose queues have a wake channel:
    an idle consumer of a step queue waits for a published message's token (up to
    ``idle_timeout_ms``) instead of sleeping between polls."""

    def __init__(self, *, idle_timeout_ms: int, **parameters: Any) -> None:
        super().__init__(**parameters)
        #: The longest an idle consumer of a queue (not a delay queue) waits, in ms.
        self.idle_timeout_ms = idle_timeout_ms

    def wake_key(self, queue_name: str) -> str:
        """The Redis list that wakes ``queue_name``'s idle consumers."""
        return f"{self.namespace}:geneva-wake:{queue_name}"

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        """Enqueue ``message`` and, unless it is delayed, wake an idle consumer."""
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:
            key = self.wake_key(enqueued.queue_name)
            try:
                # One call; the list is cut back only once it is twice as long as kept
                # (while every consumer is busy, nobody takes the tokens).
                if self.client.lpush(key, b"1") > 2 * WAKE_TOKENS_KEPT:
                    self.client.ltrim(key, 0, WAKE_TOKENS_KEPT - 1)
            except redis.RedisError:  # the message is in; consumers look again soon
                self.logger.debug("could not push the wake token for %r", key, exc_info=True)
        return enqueued

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer of ``queue_name``. One of a queue (not of a delay or dead-letter
        queue) waits on the queue's wake list when idle, up to :attr:`idle_timeout_ms`."""
        if q_name(queue_name) != queue_name:  # a delay (.DQ) or dead-letter queue
            return super().consume(queue_name, prefetch, timeout)
        # Asked for no timeout, Dramatiq's consumer never sleeps: the wait is ours.
        inner = super().consume(queue_name, prefetch, 0)
        return WakeableConsumer(
            inner, self.client, self.wake_key(queue_name), self.idle_timeout_ms / 1000
        )


class WakeableConsumer(Consumer):
    """Wraps a Redis consumer that never sleeps: when a fetch finds nothing, it waits on
    the queue's wake list (a blocking pop) for up to ``idle_seconds``."""

    def __init__(self, inner: Consumer, client: Any, wake_key: str,
                 idle_seconds: float) -> None:
        self.inner = inner
        self.client = client
        self.wake_key = wake_key
        self.idle_seconds = idle_seconds
        #: What the wrapped consumer would have slept (for the worker's tests): none.
        self.timeout = round(idle_seconds * 1000)

    def __next__(self) -> MessageProxy | None:
        message = next(self.inner)
        if message is not None:
            return message
        prefetch = getattr(self.inner, "prefetch", None)
        outstanding = getattr(self.inner, "outstanding_message_count", 0)
        if prefetch is not None and outstanding >= prefetch:
            time.sleep(FULL_PREFETCH_PAUSE)  # no room for a message: leave the tokens
            return None
        try:
            self.client.blpop([self.wake_key], timeout=min(self.idle_seconds, WAKE_WAIT_MAX))
        except redis.TimeoutError:
            pass  # a socket timeout below the wait: fetch again, as after the wait
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
        return None

    def ack(self, message: MessageProxy) -> None:
        self.inner.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self.inner.nack(message)

    def requeue(self, messages: Any) -> None:
        self.inner.requeue(messages)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_broker(url: str, *, idle_timeout_ms: int) -> dramatiq.Broker:
    """Build the Dramatiq broker named by ``GENEVA_BROKER_URL``."""
    if url.startswith("memory://"):
        return StubBroker()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return GenevaRedisBroker(url=url, idle_timeout_ms=idle_timeout_ms)
    if url.startswith(("amqp://", "amqps://")):
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError as error:  # pragma: no cover - depends on the install
            raise SetupError(
                "GENEVA_BROKER_URL is amqp:// but pika is not installed: "
                "pip install 'flask-geneva[rabbitmq]'"
            ) from error
        return RabbitmqBroker(url=url)
    raise ConfigurationError(
        f"GENEVA_BROKER_URL must start with redis://, rediss://, unix://, amqp://, amqps:// "
        f"or memory://, got {url!r}"
    )


def broker_problem(broker: dramatiq.Broker) -> str | None:
    """Why ``broker`` cannot be reached now (one line), or None when it answers.

    Asks the server once (a Redis ``PING``, a RabbitMQ connection); the in-process
    broker always answers.
    """
    try:
        if isinstance(broker, RedisBroker):
            broker.client.ping()
        elif not isinstance(broker, StubBroker):
            getattr(broker, "connection")  # noqa: B009 - opening it is the check (RabbitMQ)
    except Exception as error:
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
