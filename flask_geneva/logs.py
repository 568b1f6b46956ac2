"""Logging with workflow and step context, on the ``flask_geneva`` logger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import MutableMapping
from typing import Any

logger = logging.getLogger("flask_geneva")


class WorkflowLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with ``[Class #id hero=Type:id step=name]`` and adds the same
    fields (``workflow_class``, ``workflow_id``, ``hero``, ``step_name``,
    ``execution_id``) to each record, for structured log handlers."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        context = dict(self.extra or {})
        parts = [f"{context.get('workflow_class')} #{context.get('workflow_id')}"]
        if context.get("hero"):
            parts.append(f"hero={context['hero']}")
        if context.get("step_name"):
            parts.append(f"step={context['step_name']}")
        extra = dict(kwargs.get("extra") or {})
        extra.update(context)
        kwargs["extra"] = extra
        return f"[{' '.join(parts)}] {msg}", kwargs


def workflow_logger(workflow: Any, execution: Any = None) -> WorkflowLoggerAdapter:
    """A logger for ``workflow``; inside a step it carries the running step too."""
    running = execution or workflow.__dict__.get("_geneva_running")
    hero = None
    if workflow.hero_type is not None:
        hero = f"{workflow.hero_type}:{workflow.hero_id}"
    return WorkflowLoggerAdapter(
        logger,
        {
            "workflow_class": workflow.workflow_class or type(workflow).__name__,
            "workflow_id": workflow.id,
            "hero": hero,
            "step_name": running.step_name if running is not None else None,
            "execution_id": running.id if running is not None else None,
        },
    )


class OutageLog:
    """Logs a failure that repeats (the broker or the database is down) once per outage.

    The first failure of an outage is one warning naming the error and what happens
    meanwhile; later ones go to the debug level (with their traceback); the first success
    after it is one info line. So a web app whose broker is down logs one warning, not
    one per request.
    """

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def in_outage(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException, meanwhile: str) -> None:
        """Record a failure: a warning if it starts an outage, else a debug line."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        summary = f"{type(error).__name__}: {error}".splitlines()[0]
        if first:
            self.log.warning(
                "%s failed (%s); %s. Until it works again further failures are logged at "
                "debug level only",
                self.what,
                summary,
                meanwhile,
            )
        else:
            self.log.debug("%s failed again (%s)", self.what, summary, exc_info=error)

    def succeeded(self) -> None:
        """Record a success: one info line if it ends an outage."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self.log.info("%s works again after %.0f s", self.what, time.monotonic() - since)
