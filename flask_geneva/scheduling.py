"""Scheduling a step: an execution row plus an outbox row, in the caller's transaction.

After the transaction commits, the committing process publishes the rows that are due at
once (the fast path, :mod:`flask_geneva.publishing`); the relay publishes the rest when
their time comes, and anything the fast path missed. Locking helpers live here too: the
lock order is always the workflow row, then the step-execution row.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from flask_geneva.publishing import PendingMessage, published_marks, remember_for_commit
from flask_geneva.states import StepState
from flask_geneva.timeutil import utcnow

logger = logging.getLogger("flask_geneva")

#: The PostgreSQL NOTIFY channel that wakes relays when a later step is scheduled.
NOTIFY_CHANNEL: Final = "geneva_outbox"


def is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_workflow(session: Session, workflow_model: Any, workflow_id: Any) -> Any:
    """Lock one workflow row and load it fresh; ``None`` when it does not exist.

    PostgreSQL takes a row lock (``FOR UPDATE``). SQLite has no row locks: a write to the
    row starts the transaction as a writer, which serialises it against every other.
    """
    if is_sqlite(session):
        table = workflow_model.__table__
        # A write that changes nothing: it takes the lock, and a refused action leaves
        # the row exactly as it was.
        session.execute(
            sa.update(table).where(table.c.id == workflow_id).values(state=table.c.state)
        )
    return session.scalars(
        sa.select(workflow_model)
        .where(workflow_model.id == workflow_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock_workflow_and_execution(
    session: Session, geneva: Any, execution_id: Any
) -> tuple[Any, Any] | None:
    """Lock an execution's workflow row, then the execution row, in one statement.

    ``FROM geneva_workflows JOIN geneva_step_executions ... FOR UPDATE`` locks the rows in
    that order (workflow first), and on a wait PostgreSQL re-reads both locked rows, so
    what comes back is current. Returns ``(workflow, execution)``, or None when the
    execution does not exist.
    """
    from flask_geneva.statements import hot_path

    return hot_path(geneva).lock_objects_for(session, execution_id)


def lock_execution(session: Session, execution_model: Any, execution_id: Any) -> Any:
    """Lock one step-execution row (after its workflow's) and load it fresh."""
    return session.scalars(
        sa.select(execution_model)
        .where(execution_model.id == execution_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def schedule_step(
    session: Session,
    workflow: Any,
    step_name: str,
    run_at: datetime,
    *,
    now: datetime | None = None,
) -> Any:
    """Add a ``scheduled`` execution of ``step_name`` and its outbox row. Does not commit."""
    geneva = workflow._geneva
    now = now or utcnow()
    workflow.execution_count = (workflow.execution_count or 0) + 1
    workflow.next_step_name = step_name  # before the flush: one UPDATE of the workflow
    execution = geneva.StepExecution(
        workflow_id=workflow.id,
        sequence=workflow.execution_count,
        step_name=step_name,
        state=StepState.SCHEDULED,
        scheduled_for=run_at,
        created_at=now,
    )
    session.add(execution)
    session.flush()
    enqueue_outbox(session, workflow, execution, run_at, now=now)
    return execution


def enqueue_outbox(
    session: Session, workflow: Any, execution: Any, available_at: datetime, *, now: datetime
) -> None:
    """Write the outbox row for ``execution`` and arrange its publication after commit."""
    geneva = workflow._geneva
    state = current_app.extensions["geneva"]
    workflow_class = type(workflow) if type(workflow).is_defined() else None
    queue_name, priority, time_limit_ms = state.message_options_for(workflow_class)
    published_at, publish_count = published_marks(available_at, now)
    session.add(
        geneva.OutboxMessage(
            execution_id=execution.id,
            workflow_id=workflow.id,
            queue_name=queue_name,
            priority=priority,
            time_limit_ms=time_limit_ms,
            available_at=available_at,
            published_at=published_at,
            publish_count=publish_count,
            created_at=now,
        )
    )
    announce(
        session, state, execution.id, workflow.id, queue_name, priority, time_limit_ms,
        available_at, now,
    )


def announce(
    session: Session,
    state: Any,
    execution_id: Any,
    workflow_id: Any,
    queue_name: str,
    priority: int,
    time_limit_ms: int | None,
    available_at: datetime,
    now: datetime,
) -> None:
    """Arrange the publication of an execution whose outbox row this session wrote: at
    once after commit when it is due, else by a relay (woken by a NOTIFY on PostgreSQL)."""
    pending = PendingMessage(
        state, execution_id, queue_name, priority, time_limit_ms, available_at, now, workflow_id
    )
    remember_for_commit(session, pending)
    if available_at > now and is_postgresql(session):
        # Delivered at commit, and only then: relays listening wake for the new due time.
        session.execute(
            sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(available_at.timestamp())))
        )


def drop_outbox(session: Session, outbox_model: Any, execution_id: Any) -> None:
    """Delete the outbox rows of an execution that is no longer waiting to be published."""
    table = outbox_model.__table__  # a plain DELETE: no ORM bulk-delete bookkeeping
    session.execute(sa.delete(table).where(table.c.execution_id == execution_id))
