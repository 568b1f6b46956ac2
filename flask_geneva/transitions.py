"""State transitions shared by the executor and the operator actions.

Each function changes rows already locked by its caller and leaves the commit to it.
"""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from flask_geneva.scheduling import drop_outbox, schedule_step
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.text import bounded_backtrace, bounded_error_message


def end_execution(
    execution: Any,
    state: StepState,
    outcome: StepOutcome,
    now: datetime,
    error: BaseException | None = None,
) -> None:
    """Give an execution its final state and outcome (and the error, if any)."""
    execution.state = state
    execution.outcome = outcome
    execution.finished_at = now
    if error is not None:
        record_error(execution, error)


def record_error(execution: Any, error: BaseException) -> None:
    """Keep the error class, message and backtrace of a failed attempt."""
    error_type = type(error)
    name = error_type.__qualname__
    if error_type.__module__ not in ("builtins", "__main__"):
        name = f"{error_type.__module__}.{name}"
    execution.error_class_name = name[:255]
    execution.error_message = bounded_error_message(str(error))
    execution.error_backtrace = bounded_backtrace(
        "".join(traceback.format_exception(error_type, error, error.__traceback__))
    )


def set_workflow_state(workflow: Any, state: WorkflowState, now: datetime) -> None:
    """Change the workflow's state; entering finished, canceled or paused stamps the time."""
    workflow.state = state
    workflow.updated_at = now
    if state in (WorkflowState.FINISHED, WorkflowState.CANCELED, WorkflowState.PAUSED):
        workflow.transitioned_at = now


def advance(
    session: Session,
    workflow: Any,
    definition: Any,
    after_step: str,
    now: datetime,
) -> Any:
    """Schedule the step after ``after_step`` (with its wait), or finish the workflow.

    Returns the new execution, or None when the workflow finished.
    """
    workflow.current_step_name = None
    following = definition.step_after(after_step)
    if following is None:
        workflow.next_step_name = None
        set_workflow_state(workflow, WorkflowState.FINISHED, now)
        return None
    set_workflow_state(workflow, WorkflowState.READY, now)
    return schedule_step(session, workflow, following.name, now + following.wait, now=now)


def schedule_again(
    session: Session, workflow: Any, step_name: str, wait: timedelta, now: datetime
) -> Any:
    """Schedule ``step_name`` once more after ``wait``; the workflow is ready."""
    workflow.current_step_name = None
    set_workflow_state(workflow, WorkflowState.READY, now)
    return schedule_step(session, workflow, step_name, now + wait, now=now)


def pause_at(workflow: Any, step_name: str | None, now: datetime) -> None:
    """Pause the workflow; ``resume()`` will run ``step_name``."""
    workflow.current_step_name = None
    workflow.next_step_name = step_name
    set_workflow_state(workflow, WorkflowState.PAUSED, now)


def cancel(workflow: Any, now: datetime) -> None:
    """Cancel the workflow: nothing more runs."""
    workflow.current_step_name = None
    workflow.next_step_name = None
    set_workflow_state(workflow, WorkflowState.CANCELED, now)


def finish(workflow: Any, now: datetime) -> None:
    """Finish the workflow now."""
    workflow.current_step_name = None
    workflow.next_step_name = None
    set_workflow_state(workflow, WorkflowState.FINISHED, now)


def withdraw(session: Session, workflow: Any, execution: Any) -> None:
    """Take a scheduled execution's message out of the outbox."""
    drop_outbox(session, workflow._geneva.OutboxMessage, execution.id)


def add_ended_execution(
    session: Session,
    workflow: Any,
    step_name: str,
    state: StepState,
    outcome: StepOutcome,
    now: datetime,
) -> Any:
    """Record an execution that ends as it is created (an operator skip of a failed step)."""
    geneva = workflow._geneva
    workflow.execution_count = (workflow.execution_count or 0) + 1
    execution = geneva.StepExecution(
        workflow_id=workflow.id,
        sequence=workflow.execution_count,
        step_name=step_name,
        state=state,
        outcome=outcome,
        scheduled_for=now,
        finished_at=now,
        created_at=now,
    )
    session.add(execution)
    return execution
