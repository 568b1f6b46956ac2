"""The Dramatiq broker named by ``GENEVA_BROKER_URL``.

Dramatiq's Redis consumers poll (there is no blocking pop in its fetch script): an idle
consumer sleeps between fetches for up to the worker's timeout, which therefore bounds
how long a step message can wait for an idle worker. Geneva's Redis broker polls its
queues (the step queues, and those of any other actor declared on it) every
``GENEVA_WORKER_IDLE_TIMEOUT_MS`` at most, and leaves everything else on the worker's own
timeout (Dramatiq's default is a second): the delay queues, which geneva never uses (its
waits live in the database), and the worker threads' checks for a shutdown. Polling
those at the step queues' pace doubled an idle worker process's CPU (15 % of a core at
10 ms instead of 7.5 %).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name

from flask_geneva.errors import ConfigurationError, SetupError


class GenevaRedisBroker(RedisBroker):
    """A :class:`~dramatiq.brokers.redis.RedisBroker` whose step-queue consumers poll
    every ``idle_timeout_ms`` at most, whatever the worker's timeout."""

    def __init__(self, *, idle_timeout_ms: int, **parameters: Any) -> None:
        super().__init__(**parameters)
        #: The longest an idle consumer of a queue (not a delay queue) sleeps, in ms.
        self.idle_timeout_ms = idle_timeout_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer of ``queue_name``; one of a queue (not of a delay or dead-letter
        queue) polls every :attr:`idle_timeout_ms` at most, whatever ``timeout`` says."""
        if q_name(queue_name) == queue_name:  # not a delay (.DQ) or dead-letter queue
            timeout = self.idle_timeout_ms
        return super().consume(queue_name, prefetch, timeout)


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
