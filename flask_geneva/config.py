"""The ``GENEVA_*`` configuration keys and their defaults.

Every key is read once, in :meth:`flask_geneva.Geneva.init_app`, with
``app.config.setdefault``; changing ``app.config`` afterwards has no effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask_geneva.errors import ConfigurationError

#: The broker used when ``GENEVA_BROKER_URL`` is not set: Dramatiq's in-process broker.
DEFAULT_BROKER_URL = "memory://"

DEFAULTS: Mapping[str, Any] = {
    "GENEVA_BROKER_URL": DEFAULT_BROKER_URL,
    # None: on when the broker is memory:// and the app is not testing (see embedded_default).
    "GENEVA_EMBEDDED_WORKER": None,
    "GENEVA_DEFAULT_QUEUE": "geneva",
    "GENEVA_RELAY_IN_WORKERS": True,
    "GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER": timedelta(days=30),
    "GENEVA_STUCK_IN_PROGRESS_THRESHOLD": timedelta(hours=1),
    "GENEVA_STUCK_SCHEDULED_THRESHOLD": timedelta(minutes=15),
    "GENEVA_STUCK_RECOVERY_ACTION": "reattempt",
    "GENEVA_HOUSEKEEPING_BATCH_SIZE": 1000,
    "GENEVA_UI_URL_PREFIX": "/geneva",
    "GENEVA_UI_ACCESS": None,
    "GENEVA_UI_HERO_URL": None,
    "GENEVA_EMBEDDED_WORKER_THREADS": 4,
    "GENEVA_RELAY_GRACE_PERIOD": timedelta(seconds=10),
    "GENEVA_RELAY_REPUBLISH_AFTER": timedelta(seconds=60),
    "GENEVA_WORKER_IDLE_TIMEOUT_MS": 100,
    "GENEVA_INLINE_STEPS": 10,
    "GENEVA_MAX_SIGNAL_PAYLOAD": 64 * 1024,
}

RECOVERY_ACTIONS = ("reattempt", "cancel")


@dataclass(frozen=True)
class GenevaConfig:
    """The configuration of one app, as read by ``init_app``."""

    broker_url: str
    #: Whether this app runs worker threads and the relay in its own process (the
    #: ``GENEVA_EMBEDDED_WORKER`` key, with ``None`` resolved by :func:`embedded_default`).
    embedded_worker: bool
    default_queue: str
    relay_in_workers: bool
    delete_completed_workflows_after: timedelta | None
    stuck_in_progress_threshold: timedelta
    stuck_scheduled_threshold: timedelta
    stuck_recovery_action: str
    housekeeping_batch_size: int
    ui_url_prefix: str | None
    ui_access: Callable[[], bool] | None
    #: ``callable(hero_type, hero_id) -> str | None``: a link to the app's page for a hero.
    ui_hero_url: Callable[[str, str], str | None] | None
    embedded_worker_threads: int
    relay_grace_period: timedelta
    relay_republish_after: timedelta
    worker_idle_timeout_ms: int
    inline_steps: int
    #: The largest signal payload, in bytes of its JSON text.
    max_signal_payload: int = 64 * 1024

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], *, testing: bool = False) -> GenevaConfig:
        """Build and validate the configuration from ``app.config``; ``testing`` is the
        app's ``TESTING`` flag (it decides what ``GENEVA_EMBEDDED_WORKER=None`` means)."""
        action = config["GENEVA_STUCK_RECOVERY_ACTION"]
        if action not in RECOVERY_ACTIONS:
            raise ConfigurationError(
                f"GENEVA_STUCK_RECOVERY_ACTION must be one of {RECOVERY_ACTIONS}, got {action!r}"
            )
        batch = _whole_number(
            config["GENEVA_HOUSEKEEPING_BATCH_SIZE"], "GENEVA_HOUSEKEEPING_BATCH_SIZE"
        )
        if batch < 1:
            raise ConfigurationError(
                f"GENEVA_HOUSEKEEPING_BATCH_SIZE must be at least 1, got {batch}"
            )
        access = config["GENEVA_UI_ACCESS"]
        if access is not None and not callable(access):
            raise ConfigurationError(
                "GENEVA_UI_ACCESS must be a callable returning a bool, or None"
            )
        hero_url = config["GENEVA_UI_HERO_URL"]
        if hero_url is not None and not callable(hero_url):
            raise ConfigurationError(
                "GENEVA_UI_HERO_URL must be a callable(hero_type, hero_id) returning a URL "
                "or None, or None"
            )
        prefix = config["GENEVA_UI_URL_PREFIX"]
        if prefix is not None and not str(prefix).startswith("/"):
            raise ConfigurationError(
                f"GENEVA_UI_URL_PREFIX must start with '/', got {prefix!r}"
            )
        threads = _whole_number(
            config["GENEVA_EMBEDDED_WORKER_THREADS"], "GENEVA_EMBEDDED_WORKER_THREADS"
        )
        if threads < 1:
            raise ConfigurationError(
                f"GENEVA_EMBEDDED_WORKER_THREADS must be at least 1, got {threads}"
            )
        broker_url = str(config["GENEVA_BROKER_URL"])
        embedded = config["GENEVA_EMBEDDED_WORKER"]
        if embedded is not None and not isinstance(embedded, bool):
            raise ConfigurationError(
                f"GENEVA_EMBEDDED_WORKER must be True, False or None (on when the broker is "
                f"memory:// and the app is not testing), got {embedded!r}"
            )
        return cls(
            broker_url=broker_url,
            embedded_worker=(
                embedded_default(broker_url, testing=testing) if embedded is None else embedded
            ),
            default_queue=str(config["GENEVA_DEFAULT_QUEUE"]),
            relay_in_workers=bool(config["GENEVA_RELAY_IN_WORKERS"]),
            delete_completed_workflows_after=_optional_timedelta(
                config["GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER"],
                "GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER",
            ),
            stuck_in_progress_threshold=_timedelta(
                config["GENEVA_STUCK_IN_PROGRESS_THRESHOLD"], "GENEVA_STUCK_IN_PROGRESS_THRESHOLD"
            ),
            stuck_scheduled_threshold=_timedelta(
                config["GENEVA_STUCK_SCHEDULED_THRESHOLD"], "GENEVA_STUCK_SCHEDULED_THRESHOLD"
            ),
            stuck_recovery_action=action,
            housekeeping_batch_size=batch,
            ui_url_prefix=prefix,
            ui_access=access,
            ui_hero_url=hero_url,
            embedded_worker_threads=threads,
            relay_grace_period=_timedelta(
                config["GENEVA_RELAY_GRACE_PERIOD"], "GENEVA_RELAY_GRACE_PERIOD"
            ),
            relay_republish_after=_timedelta(
                config["GENEVA_RELAY_REPUBLISH_AFTER"], "GENEVA_RELAY_REPUBLISH_AFTER"
            ),
            worker_idle_timeout_ms=_positive_int(
                config["GENEVA_WORKER_IDLE_TIMEOUT_MS"], "GENEVA_WORKER_IDLE_TIMEOUT_MS"
            ),
            inline_steps=_non_negative_int(config["GENEVA_INLINE_STEPS"], "GENEVA_INLINE_STEPS"),
            max_signal_payload=_positive_int(
                config["GENEVA_MAX_SIGNAL_PAYLOAD"], "GENEVA_MAX_SIGNAL_PAYLOAD"
            ),
        )


def _whole_number(value: Any, key: str) -> int:
    """``int(value)``, or an error naming ``key`` when the value is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a whole number, got {value!r}") from None
def embedded_default(broker_url: str, *, testing: bool) -> bool:
    """What ``GENEVA_EMBEDDED_WORKER=None`` (the default) means: run the worker in the app
    process when the broker is the in-process ``memory://`` one (nothing else could read
    it) and the app is not testing (tests run steps with the testing helpers, or start
    workers of their own)."""
    return is_memory_broker(broker_url) and not testing


def is_memory_broker(broker_url: str) -> bool:
    """Whether ``GENEVA_BROKER_URL`` names Dramatiq's in-process broker."""
    return broker_url.startswith("memory://")


def _timedelta(value: Any, key: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise ConfigurationError(f"{key} must be a timedelta or a number of seconds, got {value!r}")


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} must be a whole number ≥ 1, got {value!r}")
    return value


def _non_negative_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{key} must be a whole number ≥ 0, got {value!r}")
    return value


def _optional_timedelta(value: Any, key: str) -> timedelta | None:
    return None if value is None else _timedelta(value, key)
