"""Operator actions: ``resume()``, ``cancel()``, ``pause()`` and ``skip()`` from outside a step.

Each one locks the workflow row, checks the state, acts, and leaves the commit to the
caller. A call the state does not allow raises :class:`~flask_geneva.InvalidStateError`
and changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from flask_geneva import transitions
from flask_geneva.errors import InvalidStateError
from flask_geneva.scheduling import enqueue_outbox, lock_execution, lock_workflow
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.timeutil import utcnow


def _describe(workflow: Any) -> str:
    return f"{workflow.workflow_class} #{workflow.id}"


def _lock(
    workflow: Any, action: str, allowed: tuple[WorkflowState, ...]
) -> tuple[Session, Any]:
    """Lock the workflow's row and check its state; returns the session and the locked
    instance (``workflow`` itself, unless ``workflow`` is not in a session)."""
    geneva = workflow._geneva
    session = sa.orm.object_session(workflow) or geneva.db.session
    if workflow.id is None:
        session.flush()
    locked = lock_workflow(session, geneva.Workflow, workflow.id)
    if locked is None:
        raise InvalidStateError(f"{_describe(workflow)} no longer exists")
    if locked.state not in allowed:
        allowed_text = " or ".join(state.value for state in allowed)
        raise InvalidStateError(
            f"cannot {action} {_describe(workflow)}: it is {locked.state}, and {action}() "
            f"needs it {allowed_text}"
        )
    return session, locked


def _done(session: Session, workflow: Any, locked: Any) -> None:
    """Flush the action; a caller's detached instance is told the new values too."""
    session.flush()
    if locked is not workflow:
        for attribute in sa.inspect(type(locked)).column_attrs:
            set_committed_value(workflow, attribute.key, getattr(locked, attribute.key))


def _scheduled_execution(session: Session, workflow: Any) -> Any:
    model = workflow._geneva.StepExecution
    execution_id = session.scalars(
        sa.select(model.id).where(
            model.workflow_id == workflow.id, model.state == StepState.SCHEDULED
        )
    ).first()
    if execution_id is None:
        return None
    return lock_execution(session, model, execution_id)


def cancel_workflow(workflow: Any) -> None:
    """Cancel a ready or paused workflow; its scheduled execution is canceled.

    A paused workflow with nothing scheduled (its step failed or paused itself) gets a
    canceled / canceled execution of the step ``resume()`` would have run, so the
    operator's action is in the history like ``skip()``'s.
    """
    session, locked = _lock(workflow, "cancel", (WorkflowState.READY, WorkflowState.PAUSED))
    now = utcnow()
    execution = _scheduled_execution(session, locked)
    if execution is not None:
        transitions.end_execution(execution, StepState.CANCELED, StepOutcome.CANCELED, now)
        transitions.withdraw(session, locked, execution)
    elif locked.next_step_name is not None:
        transitions.add_ended_execution(
            session, locked, locked.next_step_name, StepState.CANCELED, StepOutcome.CANCELED, now
        )
    transitions.cancel(locked, now)
    _done(session, workflow, locked)


def pause_workflow(workflow: Any) -> None:
    """Pause a ready workflow; its scheduled execution is kept and runs after resume()."""
    session, locked = _lock(workflow, "pause", (WorkflowState.READY,))
    now = utcnow()
    execution = _scheduled_execution(session, locked)
    if execution is not None:
        transitions.withdraw(session, locked, execution)
    transitions.pause_at(locked, locked.next_step_name, now)
    _done(session, workflow, locked)


def resume_workflow(workflow: Any) -> None:
    """Resume a paused workflow.

    A kept scheduled execution runs at its original time (at once if overdue); otherwise
    a new execution of ``next_step_name`` is scheduled now, which retries a failed step.
    """
    session, locked = _lock(workflow, "resume", (WorkflowState.PAUSED,))
    now = utcnow()
    execution = _scheduled_execution(session, locked)
    if execution is not None:
        locked.state = WorkflowState.READY
        locked.updated_at = now
        locked.next_step_name = execution.step_name
        enqueue_outbox(session, locked, execution, max(execution.scheduled_for, now), now=now)
        _done(session, workflow, locked)
        return
    step_name = locked.next_step_name
    if step_name is None:
        raise InvalidStateError(f"cannot resume {_describe(locked)}: it has no next step")
    _require_step(locked, step_name, "resume")
    transitions.schedule_again(session, locked, step_name, timedelta(0), now)
    _done(session, workflow, locked)


def skip_step(workflow: Any) -> None:
    """Skip the pending step of a ready or paused workflow and schedule the next one."""
    session, locked = _lock(workflow, "skip", (WorkflowState.READY, WorkflowState.PAUSED))
    now = utcnow()
    execution = _scheduled_execution(session, locked)
    step_name = execution.step_name if execution is not None else locked.next_step_name
    if step_name is None:
        raise InvalidStateError(f"cannot skip {_describe(locked)}: it has no pending step")
    _require_step(locked, step_name, "skip")
    if execution is not None:
        transitions.end_execution(execution, StepState.SKIPPED, StepOutcome.SKIPPED, now)
        transitions.withdraw(session, locked, execution)
        session.flush()
    else:
        transitions.add_ended_execution(
            session, locked, step_name, StepState.SKIPPED, StepOutcome.SKIPPED, now
        )
    locked.previous_step_name = step_name
    transitions.advance(session, locked, type(locked)._geneva_definition, step_name, now)
    _done(session, workflow, locked)


def _require_step(workflow: Any, step_name: str, action: str) -> None:
    cls = type(workflow)
    if not cls.is_defined():
        raise InvalidStateError(
            f"cannot {action} {_describe(workflow)}: its workflow class "
            f"{workflow.workflow_class!r} is no longer defined; cancel it instead"
        )
    if cls._geneva_definition.get_step(step_name) is None:
        raise InvalidStateError(
            f"cannot {action} {_describe(workflow)}: step {step_name!r} no longer exists in "
            f"{cls.__name__} (steps: {', '.join(cls.step_names())}); cancel it instead"
        )
