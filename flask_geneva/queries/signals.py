"""What a workflow waits for, and its signals (SPEC section 11), for the UI and the CLI.

A step *waits* while its execution is ``scheduled`` with ``waiting_for`` set; it waits
since the execution was created, until ``scheduled_for`` (the end of its timeout; ``NULL``
without one). Its outbox row, when it has one, says when it runs: at once when a matching
signal woke it, at the deadline otherwise. ``waiting_for`` stays on the row after the
step ran, as a record; only a scheduled execution waits *now*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.states import StepState
from flask_geneva.text import excerpt
from flask_geneva.timeutil import as_utc

#: The most signals the workflow page lists (the newest).
SIGNAL_LIMIT: Final = 100
#: The most characters of a signal's payload the lists show.
PAYLOAD_EXCERPT_LENGTH: Final = 200


@dataclass(frozen=True)
class Waiting:
    """A step that waits for a signal now."""

    execution: Any
    #: The name of the signal it waits for.
    signal: str
    #: When it started waiting (the execution's ``created_at``).
    since: datetime | None
    #: When its timeout ends (``scheduled_for``); None: it waits without one.
    until: datetime | None


@dataclass(frozen=True)
class SignalList:
    """A workflow's newest signals, and whether older ones were left out."""

    signals: list[Any]
    truncated: bool

    @property
    def pending(self) -> int:
        """How many of the listed signals are pending (free or held)."""
        return sum(1 for signal in self.signals if str(signal.state) == "pending")


def waits_now(execution: Any | None) -> bool:
    """Whether ``execution`` is a step waiting for a signal now."""
    return (
        execution is not None
        and str(execution.state) == StepState.SCHEDULED.value
        and execution.waiting_for is not None
    )


def waiting_of(execution: Any | None) -> Waiting | None:
    """What ``execution`` (a workflow's active one) waits for, or None when it does not."""
    if execution is None or not waits_now(execution):
        return None
    return Waiting(
        execution=execution,
        signal=execution.waiting_for,
        since=as_utc(execution.created_at),
        until=as_utc(execution.scheduled_for),
    )


def wake_time(geneva: Any, execution: Any) -> datetime | None:
    """When the execution's message is due (its outbox row's ``available_at``), or None
    when it has none. Uses ``geneva_outbox_execution``."""
    outbox = geneva.OutboxMessage.__table__
    return as_utc(
        geneva.db.session.scalar(
            sa.select(sa.func.min(outbox.c.available_at)).where(
                outbox.c.execution_id == execution.id
            )
        )
    )


def workflow_signals(geneva: Any, workflow: Any, limit: int = SIGNAL_LIMIT) -> SignalList:
    """The workflow's newest ``limit`` signals, newest first (``geneva_signals_pending``
    and the idempotency index both start with ``workflow_id``)."""
    model = geneva.WorkflowSignal
    rows = list(
        geneva.db.session.scalars(
            sa.select(model)
            .where(model.workflow_id == workflow.id)
            .order_by(model.id.desc())
            .limit(limit + 1)
        )
    )
    return SignalList(rows[:limit], truncated=len(rows) > limit)


def payload_text(payload: Any) -> str:
    """A signal's payload as compact JSON text (as the database gave it back)."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)


def payload_excerpt(payload: Any, limit: int = PAYLOAD_EXCERPT_LENGTH) -> str:
    """The start of :func:`payload_text` (``…`` marks a cut); ``null`` for no payload."""
    return excerpt(payload_text(payload), limit)


def signal_status(signal: Any) -> str:
    """``pending``, ``held`` (pending, taken by a step that has not ended yet) or
    ``consumed``."""
    state = str(signal.state)
    if state == "pending" and signal.execution_id is not None:
        return "held"
    return state
