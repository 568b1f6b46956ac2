"""Helpers that run workflows synchronously in tests.

Every helper commits like a worker would, refreshes the workflow before it returns, and
lets an exception from a step propagate after its outcome is saved. Like a worker, each
step runs in an app context of its own, so with a fresh ``db.session`` and a workflow
instance loaded fresh from the database: attributes that a step sets on ``self`` are gone
in the next step, exactly as in production::

    from flask_geneva.testing import speedrun_workflow, perform_next_step, perform_step
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app

from flask_geneva import machine
from flask_geneva.errors import (
    InvalidStateError,
    StepLimitReachedError,
    UnknownStepError,
    WaitingForSignalError,
)
from flask_geneva.executor import execute_step
from flask_geneva.runs import message_options
from flask_geneva.states import FINAL_STATES, StepOutcome, StepState, WorkflowState
from flask_geneva.store import Target, store_for
from flask_geneva.timeutil import utcnow

__all__ = ["perform_next_step", "perform_step", "speedrun_workflow"]


def _session(workflow: Any) -> Any:
    return sa.orm.object_session(workflow) or workflow._geneva.db.session()


def _run_like_a_worker(workflow: Any, execution_id: Any, timeout_elapsed: bool = False) -> bool:
    """Run one execution the way a worker does: in an app context (and session) of its
    own. False when it waits for a signal that has not arrived (nothing ran)."""
    with current_app.app_context():
        result = execute_step(
            workflow._geneva, execution_id, ignore_schedule=True, reraise=True,
            timeout_elapsed=timeout_elapsed,
        )  # fmt: skip
    return result is None or result.outcome != "waiting"


def _waiting_error(workflow: Any, execution_id: Any, helper: str) -> WaitingForSignalError:
    session = _session(workflow)
    execution = session.get(workflow._geneva.StepExecution, execution_id)
    name = execution.waiting_for if execution is not None else None
    step_name = execution.step_name if execution is not None else workflow.next_step_name
    call = (
        f"perform_step(wf, {step_name!r}, timeout_elapsed=True)"
        if helper == "perform_step"
        else f"{helper}(wf, timeout_elapsed=True)"
    )
    return WaitingForSignalError(
        f"{workflow.workflow_class} #{workflow.id}: step {step_name!r} waits "
        f"for the signal {name!r}, which has not arrived; send it with "
        f"wf.signal({name!r}, ...) first, or call {call} to "
        f"run it as its timeout would"
    )


def _scheduled_id(session: Any, workflow: Any) -> Any:
    model = workflow._geneva.StepExecution
    return session.scalar(
        sa.select(model.id).where(
            model.workflow_id == workflow.id, model.state == StepState.SCHEDULED
        )
    )


def perform_next_step(workflow: Any, *, timeout_elapsed: bool = False) -> Any:
    """Run the workflow's scheduled execution now, ignoring its wait. Returns the workflow.

    A step that waits for a signal runs with the oldest matching one; when none has
    arrived it raises :class:`~flask_geneva.WaitingForSignalError` (a ``ValueError``)
    naming the signal, unless ``timeout_elapsed`` is True: then it runs as its timeout
    would (``on_timeout``).
    """
    if not _perform_next(workflow, timeout_elapsed=timeout_elapsed):
        raise _waiting_error(workflow, _scheduled_id(_session(workflow), workflow),
                             "perform_next_step")
    return workflow


def _perform_next(workflow: Any, *, timeout_elapsed: bool = False) -> bool:
    """Run the scheduled execution; False when it waits for a signal (nothing ran)."""
    session = _session(workflow)
    session.commit()
    session.refresh(workflow)
    if workflow.state != WorkflowState.READY:
        raise InvalidStateError(
            f"{workflow.workflow_class} #{workflow.id} is {workflow.state}; "
            f"perform_next_step() needs a ready workflow"
        )
    execution_id = _scheduled_id(session, workflow)
    if execution_id is None:
        raise InvalidStateError(
            f"{workflow.workflow_class} #{workflow.id} has no scheduled step execution"
        )
    try:
        ran = _run_like_a_worker(workflow, execution_id, timeout_elapsed)
    finally:
        session.expire_all()
        session.refresh(workflow)
    return ran


def perform_step(workflow: Any, step_name: str, *, timeout_elapsed: bool = False) -> Any:
    """Cancel what is scheduled, then run ``step_name`` now. Returns the workflow.

    :raises ValueError: the workflow's class has no step of that name (the message lists
        its steps), or the step waits for a signal that has not arrived
        (:class:`~flask_geneva.WaitingForSignalError`; ``timeout_elapsed=True`` runs it
        as its timeout would).
    """
    cls = type(workflow)
    names = cls.step_names() if cls.is_defined() else []
    if step_name not in names:
        raise UnknownStepError(
            f"{workflow.workflow_class} has no step {step_name!r}; "
            f"its steps are: {', '.join(names) or 'none'}"
        )
    session = _session(workflow)
    session.commit()
    store = store_for(workflow._geneva, session)
    locked = store.lock_workflow(session, workflow.id)
    if locked.state not in (WorkflowState.READY, WorkflowState.PAUSED):
        session.rollback()
        raise InvalidStateError(
            f"{workflow.workflow_class} #{workflow.id} is {locked.state}; "
            f"perform_step() needs a ready or paused workflow"
        )
    now = utcnow()
    kept = store.scheduled_execution(session, locked.id)
    # What is scheduled is canceled, and the workflow goes on with step_name, now.
    replaced = machine.Transition(
        machine.Move.REPEAT, StepState.CANCELED, StepOutcome.CANCELED, reason="perform_step()"
    )
    applied = store.apply(
        session,
        Target(locked.id, kept.id if kept is not None else None, step_name,
               locked.execution_count or 0),
        machine.plan(replaced if kept is not None else machine.Transition(machine.Move.REPEAT),
                     step_name, None),
        now,
        options=message_options(type(locked)),
    )  # fmt: skip
    session.commit()
    execution_id = applied.new_execution_id
    try:
        ran = _run_like_a_worker(workflow, execution_id, timeout_elapsed)
    finally:
        session.expire_all()
        session.refresh(workflow)
    if not ran:
        raise _waiting_error(workflow, execution_id, "perform_step")
    return workflow


def speedrun_workflow(workflow: Any, max_iterations: int = 100) -> Any:
    """Run steps synchronously, ignoring waits, until the workflow is finished, canceled
    or paused, or waits for a signal that has not arrived. Returns the workflow.

    :raises RuntimeError: when ``max_iterations`` steps ran and it is still going.
    """
    session = _session(workflow)
    session.commit()
    session.refresh(workflow)
    for _ in range(max_iterations):
        if workflow.state in FINAL_STATES or workflow.state == WorkflowState.PAUSED:
            return workflow
        if not _perform_next(workflow):
            return workflow  # it waits for a signal
    if workflow.state in FINAL_STATES or workflow.state == WorkflowState.PAUSED:
        return workflow
    raise StepLimitReachedError(
        f"{workflow.workflow_class} #{workflow.id} is still {workflow.state} after "
        f"{max_iterations} steps (next: {workflow.next_step_name!r}); raise max_iterations "
        f"or look for a step that reattempts forever"
    )
