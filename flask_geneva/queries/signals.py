"""What a workflow waits for, and its signals (SPEC section 11), for the UI and the CLI.

A step *waits* while its execution is ``scheduled`` with ``waiting_for`` set; it waits
since the execution was created, until ``scheduled_for`` (the end of its timeout; ``NULL``
without one). Its outbox row, when it has one, says when it runs: at once when a matching
signal woke it, at the deadline otherwise. ``waiting_for`` stays on the row after the
step ran, as a record; only a scheduled execution waits *now*.

An execution that waited and ended (or runs) without taking a signal *timed out*: no
``geneva_signals`` row names it, and no retry after it ran with a signal it held (a
retry of a step that holds a signal runs without waiting: ``waiting_for`` NULL, and the
signal's ``execution_id`` moves on to it). Two ends are not timeouts: an operator's
cancel or skip while it waited (it never started) and a precondition that ended it
when a signal woke it (it started and ended at once, before its deadline; the signal
stays pending).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.states import SignalState, StepState, WorkflowState
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


#: What ``signal_status`` calls a pending signal of a workflow that ended.
KEPT: Final = "kept"
#: The ended workflow states: no step takes a signal any more.
_ENDED: Final = (WorkflowState.FINISHED.value, WorkflowState.CANCELED.value)


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


def signal_status(signal: Any, workflow_state: Any = None) -> str:
    """``pending`` (no step has taken it), ``held`` (pending, taken by a step whose
    attempt has not ended: a retry runs with it), ``consumed``, or ``kept`` (still
    stored as pending, but ``workflow_state`` is finished or canceled: no step will take
    it; for example the step that took it called ``cancel()``)."""
    state = str(signal.state)
    if state == SignalState.PENDING.value and str(workflow_state) in _ENDED:
        return KEPT
    if state == SignalState.PENDING.value and signal.execution_id is not None:
        return "held"
    return state


def signals_taken(geneva: Any, executions: list[Any]) -> dict[Any, Any]:
    """``{execution id: signal id}`` for the executions among ``executions`` that a
    stored signal names (``execution_id``: the step that holds or consumed it). One query,
    by workflow (``geneva_signals_pending`` starts with ``workflow_id``)."""
    ids = [e.id for e in executions]
    if not ids:
        return {}
    model = geneva.WorkflowSignal
    rows = geneva.db.session.execute(
        sa.select(model.execution_id, model.id).where(
            model.workflow_id.in_({e.workflow_id for e in executions}),
            model.execution_id.in_(ids),
        )
    )
    return {execution_id: signal_id for execution_id, signal_id in rows}


def signal_runs(executions: list[Any], taken: dict[Any, Any]) -> dict[Any, Any]:
    """``{execution id: the id of the signal it ran with, or None}`` for ``executions``
    (one workflow's, any order); ``taken`` from :func:`signals_taken`.

    A signal names the latest attempt that holds it, so an earlier attempt of the same
    step (a failure that was reattempted, a pause that was resumed) ran with the signal
    of the retry that followed it without waiting."""
    runs: dict[Any, Any] = {}
    after: Any = None
    for execution in sorted(executions, key=lambda e: e.sequence, reverse=True):
        signal_id = taken.get(execution.id)
        if (
            signal_id is None
            and after is not None
            and after.step_name == execution.step_name
            and after.waiting_for is None
        ):
            signal_id = runs.get(after.id)
        runs[execution.id] = signal_id
        after = execution
    return runs


def timed_out(execution: Any, signal_id: Any) -> bool:
    """Whether ``execution`` waited for a signal and its timeout ended it (or ran it,
    ``on_timeout="run"``): it started without one. ``signal_id``: what
    :func:`signal_runs` says it ran with."""
    if execution.waiting_for is None or signal_id is not None:
        return False
    if str(execution.state) == StepState.SCHEDULED.value or execution.started_at is None:
        return False  # still waiting, or ended by an operator while it waited
    started, finished = as_utc(execution.started_at), as_utc(execution.finished_at)
    deadline = as_utc(execution.scheduled_for)
    # A precondition that ended it when a signal woke it ended it at once, before any
    # deadline.
    woken_and_ended = started == finished and (
        deadline is None or finished is None or finished < deadline
    )
    return not woken_and_ended


def pending_signals(geneva: Any, workflow: Any, name: str) -> int:
    """How many free pending signals named ``name`` the workflow has (none held)."""
    model = geneva.WorkflowSignal
    return int(
        geneva.db.session.scalar(
            sa.select(sa.func.count())
            .select_from(model)
            .where(
                model.workflow_id == workflow.id,
                model.name == name,
                model.state == SignalState.PENDING,
                model.execution_id.is_(None),
            )
        )
        or 0
    )


def held_signal(geneva: Any, workflow: Any) -> Any | None:
    """The id of the pending signal a step of the workflow holds (took, and its attempt
    did not end well), or None: a retry or a resume runs with it, without waiting."""
    model = geneva.WorkflowSignal
    return geneva.db.session.scalar(
        sa.select(model.id)
        .where(
            model.workflow_id == workflow.id,
            model.state == SignalState.PENDING,
            model.execution_id.is_not(None),
        )
        .limit(1)
    )
