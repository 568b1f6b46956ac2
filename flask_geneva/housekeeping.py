"""Housekeeping: delete old finished workflows and recover stuck step executions.

Run it with ``flask geneva housekeeping``, or schedule the Dramatiq actor
``app.extensions["geneva"].housekeeping_actor`` (for example every few minutes).

* **Cleanup** deletes finished and canceled workflows (with their executions) whose
  ``transitioned_at`` is older than ``GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER``, in
  batches of ``GENEVA_HOUSEKEEPING_BATCH_SIZE``; never an ongoing one.
* **Recovery** finds executions stuck ``in_progress`` (by ``started_at``, past
  ``GENEVA_STUCK_IN_PROGRESS_THRESHOLD``: their worker died) or overdue ``scheduled`` (by
  ``scheduled_for``, past ``GENEVA_STUCK_SCHEDULED_THRESHOLD``: their message was lost),
  leaving the kept execution of a paused workflow alone. With ``"reattempt"`` the
  execution ends completed / recovered and the same step is scheduled again; with
  ``"cancel"`` it ends canceled / recovered and the workflow is canceled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from flask_geneva import machine
from flask_geneva.runs import message_options
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.store import Target, store_for
from flask_geneva.timeutil import utcnow

logger = logging.getLogger("flask_geneva.housekeeping")


@dataclass(frozen=True)
class HousekeepingResult:
    """What one housekeeping run did."""

    deleted_workflows: int
    recovered_in_progress: int
    recovered_scheduled: int

    @property
    def recovered(self) -> int:
        return self.recovered_in_progress + self.recovered_scheduled

    def as_dict(self) -> dict[str, int]:
        return {
            "deleted_workflows": self.deleted_workflows,
            "recovered_in_progress": self.recovered_in_progress,
            "recovered_scheduled": self.recovered_scheduled,
        }


def run_housekeeping(now: datetime | None = None) -> HousekeepingResult:
    """Run cleanup and recovery for the current app; needs an app context."""
    from flask_geneva.extension import require_state

    state = require_state()
    config = state.config
    now = now or utcnow()
    deleted = 0
    if config.delete_completed_workflows_after is not None:
        deleted = delete_completed_workflows(
            state.geneva,
            older_than=now - config.delete_completed_workflows_after,
            batch_size=config.housekeeping_batch_size,
        )
    # Overdue scheduled ones first, so a run never recovers what it just rescheduled.
    scheduled = recover_stuck_executions(
        state.geneva,
        StepState.SCHEDULED,
        older_than=now - config.stuck_scheduled_threshold,
        action=config.stuck_recovery_action,
        batch_size=config.housekeeping_batch_size,
    )
    in_progress = recover_stuck_executions(
        state.geneva,
        StepState.IN_PROGRESS,
        older_than=now - config.stuck_in_progress_threshold,
        action=config.stuck_recovery_action,
        batch_size=config.housekeeping_batch_size,
    )
    result = HousekeepingResult(deleted, in_progress, scheduled)
    logger.info(
        "housekeeping: deleted %d workflow(s), recovered %d in progress and %d scheduled",
        deleted,
        in_progress,
        scheduled,
    )
    return result


def delete_completed_workflows(geneva: Any, *, older_than: datetime, batch_size: int) -> int:
    """Delete finished and canceled workflows that transitioned before ``older_than``,
    with their executions, outbox rows and signals."""
    session = geneva.db.session
    workflows = geneva.Workflow.__table__
    executions = geneva.StepExecution.__table__
    outbox = geneva.OutboxMessage.__table__
    signals = geneva.WorkflowSignal.__table__
    total = 0
    while True:
        # On PostgreSQL a concurrent run skips the rows this one is deleting; on SQLite
        # runs take turns. Either way each deletion is counted once (by rowcount).
        ids = list(
            session.scalars(
                sa.select(workflows.c.id)
                .where(
                    workflows.c.state.in_([WorkflowState.FINISHED, WorkflowState.CANCELED]),
                    workflows.c.transitioned_at < older_than,
                )
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            session.commit()
            return total
        session.execute(sa.delete(outbox).where(outbox.c.workflow_id.in_(ids)))
        session.execute(sa.delete(executions).where(executions.c.workflow_id.in_(ids)))
        session.execute(sa.delete(signals).where(signals.c.workflow_id.in_(ids)))
        deleted = session.execute(
            sa.delete(workflows).where(
                workflows.c.id.in_(ids),
                workflows.c.state.in_([WorkflowState.FINISHED, WorkflowState.CANCELED]),
            )
        )
        session.commit()
        total += deleted.rowcount
        if len(ids) < batch_size:
            return total


def recover_stuck_executions(
    geneva: Any,
    state: StepState,
    *,
    older_than: datetime,
    action: str,
    batch_size: int,
) -> int:
    """Recover executions stuck in ``state`` since before ``older_than``; returns the count."""
    session = geneva.db.session
    model = geneva.StepExecution
    workflow_model = geneva.Workflow
    since = model.started_at if state == StepState.IN_PROGRESS else model.scheduled_for
    recovered = 0
    passed_over: set[Any] = set()  # rows that changed meanwhile or failed: not again
    # Executions this pass schedules again are created after it started: never take them
    # for stuck ones (with ``older_than`` in the future they would look overdue at once,
    # and the pass would go on recovering its own work for ever).
    pass_started = utcnow()
    while True:
        candidates = session.execute(
            sa.select(model.id, model.workflow_id)
            .join(workflow_model, workflow_model.id == model.workflow_id)
            .where(
                model.state == state,
                since < older_than,
                model.created_at < pass_started,
                workflow_model.state != WorkflowState.PAUSED,
                model.id.not_in(passed_over) if passed_over else sa.true(),
            )
            .order_by(since)
            .limit(batch_size)
        ).all()
        session.rollback()
        if not candidates:
            return recovered
        for execution_id, workflow_id in candidates:
            try:
                done = _recover_one(
                    session, geneva, execution_id, workflow_id, state, older_than, action
                )
            except sa.exc.SQLAlchemyError:
                session.rollback()
                logger.exception("could not recover step execution %s", execution_id)
                done = False
            if done:
                recovered += 1
            else:
                passed_over.add(execution_id)
        if len(candidates) < batch_size:
            return recovered


def _recover_one(
    session: Any,
    geneva: Any,
    execution_id: Any,
    workflow_id: Any,
    state: StepState,
    older_than: datetime,
    action: str,
) -> bool:
    store = store_for(geneva, session)
    workflow = store.lock_workflow(session, workflow_id)
    locked = store.lock_states(session, execution_id)
    if (
        workflow is None
        or locked is None
        or locked.workflow_id != workflow_id
        or locked.execution_state != state
        or workflow.state == WorkflowState.PAUSED
    ):
        session.rollback()
        return False
    execution = session.get(geneva.StepExecution, execution_id, populate_existing=True)
    since = execution.started_at if state == StepState.IN_PROGRESS else execution.scheduled_for
    if since is None or since >= older_than:
        session.rollback()
        return False
    now = utcnow()
    step_name = execution.step_name
    store.apply(
        session,
        Target(workflow_id, execution_id, step_name, workflow.execution_count or 0),
        machine.plan(machine.recovery(action), step_name, None),
        now,
        options=message_options(type(workflow)),
    )
    session.commit()
    logger.warning(
        "recovered %s execution %s of %s #%s (%s)",
        state,
        execution_id,
        workflow.workflow_class,
        workflow_id,
        action,
    )
    return True
