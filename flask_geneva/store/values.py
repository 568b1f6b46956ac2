"""The values a store's callers and the store pass each other, and how a failed
attempt's error is kept."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flask_geneva.text import bounded_backtrace, bounded_error_message
from flask_geneva.waiting import SignalWait


@dataclass(frozen=True)
class MessageOptions:
    """How a workflow's step messages are sent (``step_job_options``)."""

    queue_name: str
    priority: int = 0
    time_limit_ms: int | None = None
    #: The class's steps that wait for a signal, by name.
    signal_waits: Mapping[str, SignalWait] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Target:
    """The rows a plan is applied to: the workflow, the execution that ends (None when
    an operator's action records a new one for ``step_name``), and the workflow's
    execution count as read under its lock."""

    workflow_id: Any
    execution_id: Any | None
    step_name: str | None
    execution_count: int


@dataclass(frozen=True)
class LockedStates:
    """What a lock of an execution reads: its state, its workflow's execution count, and
    whose execution it is."""

    execution_state: str
    execution_count: int
    workflow_id: Any


@dataclass
class Applied:
    """What applying a plan wrote."""

    #: The id of the execution the plan scheduled (or claimed at once), if any.
    new_execution_id: Any = None
    #: The workflow's columns as written, by attribute name.
    workflow_values: dict[str, Any] = field(default_factory=dict)
    #: With ``claim_next``: the workflow's whole row as it now is (keyed by column).
    workflow_row: Any = None


#: How many of the newest workflows a worker's warm-up reads to learn their hero classes.
HERO_SAMPLE: Final = 100

#: The workflow columns ``create()`` sets (by attribute name); the others take their
#: defaults.
WORKFLOW_INSERT_KEYS: Final = (
    "workflow_class", "hero_type", "hero_id", "data", "state", "allow_multiple_flag",
    "execution_count", "next_step_name", "created_at", "updated_at", "transitioned_at",
)  # fmt: skip


def error_fields(error: BaseException | None) -> dict[str, Any]:
    """The columns that keep a failed attempt's error class, message and backtrace."""
    if error is None:
        return {"error_class_name": None, "error_message": None, "error_backtrace": None}
    error_type = type(error)
    name = error_type.__qualname__
    if error_type.__module__ not in ("builtins", "__main__"):
        name = f"{error_type.__module__}.{name}"
    return {
        "error_class_name": name[:255],
        "error_message": bounded_error_message(_text_of(error)),
        "error_backtrace": bounded_backtrace(
            "".join(traceback.format_exception(error_type, error, error.__traceback__))
        ),
    }


def _text_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in when the exception cannot say what it is."""
    try:
        return str(error)
    except Exception as failure:  # an exception whose __str__ raises
        return f"<str() of the {type(error).__name__} raised {type(failure).__name__}>"
