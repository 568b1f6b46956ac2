"""One workflow's page: every step of its class beside its executions, what is due next,
and the operator actions its state allows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.machine import allowed_actions
from flask_geneva.queries.health_panel import OVERDUE_GRACE
from flask_geneva.queries.signals import (
    SignalList,
    Waiting,
    held_signal,
    pending_signals,
    signal_runs,
    signals_taken,
    timed_out,
    waiting_of,
    wake_time,
    workflow_signals,
)
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.timeutil import as_utc, utcnow

#: The most executions the workflow page loads (the newest ones).
HISTORY_LIMIT: Final = 1000
#: Operator actions each workflow state allows, in the order they are offered.
#: The operator actions each state allows, as the state machine says.
ACTIONS_BY_STATE: Final[dict[str, tuple[str, ...]]] = {
    state.value: tuple(action.value for action in allowed_actions(state))
    for state in WorkflowState
    if allowed_actions(state)
}


@dataclass(frozen=True)
class Attempt:
    """One execution of a step, numbered among the executions of that step (1, 2, ...)."""

    execution: Any
    attempt: int


@dataclass
class StepRow:
    """One step of the workflow page: the definition beside its executions."""

    name: str
    #: 1-based position in the class; None for a step the code no longer has.
    position: int | None
    #: The DSL's :class:`~flask_geneva.dsl.StepDefinition`; None when no longer defined.
    definition: Any | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def defined(self) -> bool:
        """False when executions exist for a step the class no longer has."""
        return self.definition is not None

    @property
    def latest(self) -> Any | None:
        """The step's newest execution."""
        return self.attempts[-1].execution if self.attempts else None


@dataclass(frozen=True)
class Due:
    """What happens next to a workflow, and whether it is late.

    ``kind`` is ``"scheduled"`` (a step waits for its time), ``"waiting"`` (a step waits
    for a signal), ``"running"`` (a step is in progress), ``"paused"`` (waits for
    ``resume()``) or ``"done"`` (finished/canceled).

    A waiting step is never overdue while it waits: only once a signal woke it (its
    message is due now) or its timeout ended, and then only past :data:`OVERDUE_GRACE`.
    """

    kind: str
    step_name: str | None
    execution: Any | None
    #: When the scheduled step is due, or when the running step started. For a waiting
    #: step, when its message is due: at once after a matching signal, else at the end
    #: of its timeout (None: only a signal can wake it).
    at: datetime | None
    #: Past due by more than OVERDUE_GRACE (scheduled), or running past the threshold.
    overdue: bool
    #: Past the housekeeping threshold: housekeeping will recover the execution.
    stuck: bool
    #: The signal the step waits for (also on a paused workflow's kept execution).
    waiting: Waiting | None = None
    #: A paused workflow without a kept execution whose step waits for a signal: that
    #: step's :class:`~flask_geneva.waiting.SignalWait` (resume makes it wait again).
    resume_wait: Any | None = None
    #: Free pending signals named as the waited signal (``waiting`` or ``resume_wait``):
    #: after resume the step takes one at once (or checks it, with a predicate).
    pending_signals: int = 0
    #: A paused workflow's held signal (its step took it): resume runs the step with it.
    held_signal: Any | None = None
    #: The waited step's matcher has a predicate: a pending signal is checked, not
    #: simply taken.
    checks: bool = False

    @property
    def woken(self) -> bool:
        """A waiting step whose message is due before its timeout ends: a signal came."""
        if self.waiting is None or self.at is None:
            return False
        return self.waiting.until is None or self.at < self.waiting.until


@dataclass(frozen=True)
class OperatorAction:
    """An operator action the workflow's state allows, with its CLI command."""

    name: str
    command: str


@dataclass(frozen=True)
class WorkflowDetail:
    """Everything the workflow page shows."""

    workflow: Any
    #: False when the workflow's class is no longer defined in the code.
    class_defined: bool
    steps: list[StepRow]
    #: Executions of steps the code no longer has, grouped by step name.
    removed_steps: list[StepRow]
    #: The loaded executions, oldest first (the newest :data:`HISTORY_LIMIT`).
    executions: list[Any]
    #: How many executions the workflow has had in all.
    execution_total: int
    due: Due
    actions: list[OperatorAction]
    #: The workflow's newest signals (SPEC section 11), newest first.
    signals: SignalList = field(default_factory=lambda: SignalList([], truncated=False))
    #: ``{execution id: the signal it ran with, or None}`` for the loaded executions.
    signal_runs: dict[Any, Any] = field(default_factory=dict)

    def signal_id(self, execution: Any) -> Any:
        """The id of the signal ``execution`` ran with (or holds), or None."""
        return self.signal_runs.get(execution.id)

    def timed_out(self, execution: Any) -> bool:
        """Whether ``execution`` waited for a signal and its timeout ended it."""
        return timed_out(execution, self.signal_id(execution))

    @property
    def paused_by_timeout(self) -> Any | None:
        """The execution whose timeout paused the workflow (``on_timeout="pause"``), or
        None when the workflow is not paused by a timeout."""
        if str(self.workflow.state) != WorkflowState.PAUSED.value or not self.executions:
            return None
        last = self.executions[-1]
        if str(last.outcome) == "canceled" and self.timed_out(last):
            return last
        return None

    @property
    def history_truncated(self) -> bool:
        """True when older executions were left out of ``executions``."""
        return self.execution_total > len(self.executions)


def operator_actions(workflow: Any) -> list[OperatorAction]:
    """The actions the workflow's state allows, each with its ``flask geneva`` command."""
    return [
        OperatorAction(name, f"flask geneva {name} {workflow.id}")
        for name in (action.value for action in allowed_actions(str(workflow.state)))
    ]


def workflow_detail(
    geneva: Any,
    workflow: Any,
    *,
    stuck_in_progress_threshold: timedelta,
    stuck_scheduled_threshold: timedelta,
    now: datetime | None = None,
    history_limit: int = HISTORY_LIMIT,
) -> WorkflowDetail:
    """Gather the workflow page: steps beside executions, what is due, the actions."""
    now = now or utcnow()
    model = geneva.StepExecution
    newest = list(
        geneva.db.session.scalars(
            sa.select(model)
            .where(model.workflow_id == workflow.id)
            .order_by(model.sequence.desc())
            .limit(history_limit)
        )
    )
    executions = list(reversed(newest))
    total = max(workflow.execution_count or 0, len(executions))
    cls = type(workflow)
    class_defined = bool(cls.is_defined())
    definitions = cls.steps() if class_defined else []
    steps = [StepRow(name=d.name, position=i, definition=d) for i, d in enumerate(definitions, 1)]
    by_name = {row.name: row for row in steps}
    removed: dict[str, StepRow] = {}
    attempt_numbers: dict[str, int] = {}
    # Attempt numbers count from the first loaded execution; with a truncated history they
    # are relative to what is shown (flagged by history_truncated).
    for execution in executions:
        name = execution.step_name
        attempt_numbers[name] = attempt_numbers.get(name, 0) + 1
        row = by_name.get(name)
        if row is None:
            row = removed.setdefault(name, StepRow(name=name, position=None, definition=None))
        row.attempts.append(Attempt(execution, attempt_numbers[name]))
    active = next(
        (
            e
            for e in reversed(executions)
            if e.state in (StepState.SCHEDULED.value, StepState.IN_PROGRESS.value)
        ),
        None,
    )
    return WorkflowDetail(
        workflow=workflow,
        class_defined=class_defined,
        steps=steps,
        removed_steps=list(removed.values()),
        executions=executions,
        execution_total=total,
        due=_due(
            geneva,
            workflow,
            active,
            now,
            stuck_in_progress_threshold=stuck_in_progress_threshold,
            stuck_scheduled_threshold=stuck_scheduled_threshold,
        ),
        actions=operator_actions(workflow),
        signals=workflow_signals(geneva, workflow),
        signal_runs=signal_runs(executions, signals_taken(geneva, executions)),
    )


def _due(
    geneva: Any,
    workflow: Any,
    active: Any | None,
    now: datetime,
    *,
    stuck_in_progress_threshold: timedelta,
    stuck_scheduled_threshold: timedelta,
) -> Due:
    state = str(workflow.state)
    if active is not None and active.state == StepState.IN_PROGRESS.value:
        started = as_utc(active.started_at)
        late = started is not None and now - started > stuck_in_progress_threshold
        return Due("running", active.step_name, active, started, overdue=late, stuck=late)
    waiting = waiting_of(active)
    if state == WorkflowState.PAUSED.value:
        at = as_utc(active.scheduled_for) if active is not None else None
        step_name = active.step_name if active is not None else workflow.next_step_name
        step_wait = None
        if step_name and type(workflow).is_defined():
            step_wait = type(workflow)._geneva_definition.signal_waits.get(step_name)
        held = held_signal(geneva, workflow) if active is None else None
        resume_wait = step_wait if active is None and held is None else None
        name = waiting.signal if waiting is not None else getattr(resume_wait, "name", None)
        return Due(
            "paused", workflow.next_step_name, active, at, overdue=False, stuck=False,
            waiting=waiting, resume_wait=resume_wait, held_signal=held,
            pending_signals=0 if name is None else pending_signals(geneva, workflow, name),
            checks=step_wait is not None and step_wait.matcher.predicate is not None,
        )  # fmt: skip
    if active is not None and waiting is not None:
        # Its outbox row says when it runs; housekeeping goes by the end of the timeout.
        at = wake_time(geneva, active)
        until = waiting.until
        return Due(
            "waiting",
            active.step_name,
            active,
            at,
            overdue=at is not None and now - at > OVERDUE_GRACE,
            stuck=until is not None and now - until > stuck_scheduled_threshold,
            waiting=waiting,
        )
    if active is not None:
        at = as_utc(active.scheduled_for)
        return Due(
            "scheduled",
            active.step_name,
            active,
            at,
            overdue=at is not None and now - at > OVERDUE_GRACE,
            stuck=at is not None and now - at > stuck_scheduled_threshold,
        )
    if state in (WorkflowState.READY.value, WorkflowState.PERFORMING.value):
        # Ongoing, yet nothing scheduled or running: should not happen; show it plainly.
        return Due("scheduled", workflow.next_step_name, None, None, overdue=True, stuck=False)
    return Due("done", None, None, None, overdue=False, stuck=False)
