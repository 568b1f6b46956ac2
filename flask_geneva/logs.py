"""Logging with workflow and step context, on the ``flask_geneva`` logger.

Everything geneva logs that came from data (step errors, hero ids, step and class
names, the content of malformed step messages) is escaped and bounded before any
handler sees it: :class:`SafeLogFilter` sits on each of geneva's loggers, so one log
record is one line, free of terminal escapes, and no value adds more than
:data:`~flask_geneva.text.MAX_LOGGED_VALUE_LENGTH` characters to it.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from flask_geneva.text import (
    MAX_ERROR_BACKTRACE_LENGTH,
    MAX_LOGGED_VALUE_LENGTH,
    cut,
    printable,
)

logger = logging.getLogger("flask_geneva")

#: The loggers geneva writes to; each carries a :class:`SafeLogFilter`. (A logger's
#: filters see only the records made on it, not those of its children.)
GENEVA_LOGGERS: Final = (
    "flask_geneva",
    "flask_geneva.ui",
    "flask_geneva.relay",
    "flask_geneva.housekeeping",
)


def safe_log_text(value: Any) -> str:
    """``str(value)`` escaped (:func:`~flask_geneva.text.printable`) and bounded."""
    text = str(value)
    if len(text) > MAX_LOGGED_VALUE_LENGTH:
        text = cut(text, MAX_LOGGED_VALUE_LENGTH)
    return printable(text)


class _SafeArgument:
    """A log argument that formats as its escaped, bounded text (``%s`` and ``%r``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return safe_log_text(self.value)

    def __repr__(self) -> str:
        return safe_log_text(repr(self.value))


def _safe_argument(value: Any) -> Any:
    # Numbers stay themselves, so that %d and %.1f still format them.
    if value is None or isinstance(value, numbers.Number):
        return value
    return _SafeArgument(value)


class SafeLogFilter(logging.Filter):
    """Escapes control characters in, and bounds, what data puts into a log record.

    The arguments of the message (``logger.warning("failed: %s", error)``) format as
    escaped text cut to :data:`~flask_geneva.text.MAX_LOGGED_VALUE_LENGTH`; the message
    template, written in code, is left as it is. A traceback (``exc_info``) keeps its
    line breaks but has other control characters escaped and is cut like a stored
    backtrace. The record is changed in place and always passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_geneva_safe", False):
            return True
        record._geneva_safe = True
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: _safe_argument(value) for key, value in args.items()}
        elif args:
            record.args = tuple(_safe_argument(value) for value in args)
        if not isinstance(record.msg, str):
            record.msg = _SafeArgument(record.msg)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            lines = cut(text, MAX_ERROR_BACKTRACE_LENGTH).split("\n")
            record.exc_text = "\n".join(printable(line) for line in lines)
        return True


_FILTER: Final = SafeLogFilter()
for _name in GENEVA_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


class WorkflowLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with ``[Class #id hero=Type:id step=name]`` and adds the same
    fields (``workflow_class``, ``workflow_id``, ``hero``, ``step_name``,
    ``execution_id``) to each record, for structured log handlers. The fields that come
    from data are escaped and bounded like every logged value."""

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
        hero = safe_log_text(f"{workflow.hero_type}:{workflow.hero_id}")
    step_name = running.step_name if running is not None else None
    return WorkflowLoggerAdapter(
        logger,
        {
            "workflow_class": safe_log_text(workflow.workflow_class or type(workflow).__name__),
            "workflow_id": workflow.id,
            "hero": hero,
            "step_name": None if step_name is None else safe_log_text(step_name),
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
