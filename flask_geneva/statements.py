"""The step hot path as prebuilt Core statements.

A worker claims and finishes steps all day long; building SQL for it each time (and
running it through the ORM's unit of work) cost more CPU than the database work itself.
The statements here are built once per :class:`~flask_geneva.Geneva` with bound
parameters, so SQLAlchemy's compiled cache serves every later call.

On PostgreSQL the writes of one phase go out as **one** statement: data-modifying CTEs
(``WITH started AS (UPDATE ...), withdrawn AS (DELETE ...) UPDATE ...``). Each CTE that
must follow another reads from it, which fixes the order PostgreSQL runs them in (the
next execution is inserted only after the finished one has left the one-active index).
Elsewhere (SQLite) the same writes go out one statement at a time, in that order.

What the statements write is what :mod:`flask_geneva.transitions` writes through the ORM
for the same outcome; the executor uses them only for the common outcomes (a claim whose
preconditions passed, a body that returned normally, and in a worker's inline run the
claim of the next step within that finalize, or giving such a claim back) and the ORM
path for the rest.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva.publishing import published_marks
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.timeutil import utcnow

_TIMESTAMP = sa.DateTime(timezone=True)


@dataclass(frozen=True)
class LockedStates:
    """What the finalize lock reads: the execution's state, the workflow's count, and
    whose execution it is."""

    execution_state: str
    execution_count: int
    workflow_id: Any


class HotPath:
    """The prebuilt statements of one Geneva's step hot path."""

    def __init__(self, geneva: Any) -> None:
        self.uuid_keys = bool(geneva.uuid_primary_keys)
        workflow_model, execution_model = geneva.Workflow, geneva.StepExecution
        workflows = workflow_model.__table__
        executions = execution_model.__table__
        outbox = geneva.OutboxMessage.__table__
        key_type = executions.c.id.type

        def param(name: str, type_: Any) -> Any:
            return sa.bindparam(name, type_=type_)

        execution_id = param("hp_execution_id", key_type)
        workflow_id = param("hp_workflow_id", key_type)
        now = param("hp_now", _TIMESTAMP)

        # SQLite has no row locks: a write that changes nothing takes the database's
        # write lock first (see scheduling.lock_workflow).
        owner = sa.select(executions.c.workflow_id).where(executions.c.id == execution_id)
        self._sqlite_lock = (
            sa.update(workflows)
            .where(workflows.c.id == owner.scalar_subquery())
            .values(state=workflows.c.state)
        )
        #: The workflow and the execution as ORM objects, locked (workflow row first).
        self._lock_objects = (
            sa.select(workflow_model, execution_model)
            .select_from(workflow_model)
            .join(execution_model, execution_model.workflow_id == workflow_model.id)
            .where(execution_model.id == execution_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        self._lock_states = (
            sa.select(executions.c.state, workflows.c.execution_count, workflows.c.id)
            .select_from(workflows.join(executions, executions.c.workflow_id == workflows.c.id))
            .where(executions.c.id == execution_id)
            .with_for_update()
        )

        # The claim: in_progress, performing, out of the outbox.
        start_execution = (
            sa.update(executions)
            .where(executions.c.id == execution_id)
            .values(
                state=StepState.IN_PROGRESS,
                started_at=now,
                message_id=param("hp_message_id", executions.c.message_id.type),
            )
        )
        withdraw = sa.delete(outbox).where(outbox.c.execution_id == execution_id)
        perform_workflow = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.PERFORMING,
                current_step_name=param("hp_step_name", workflows.c.current_step_name.type),
                updated_at=now,
            )
        )
        self._claim_steps = (start_execution, perform_workflow, withdraw)
        self._claim_combined = perform_workflow.add_cte(
            start_execution.returning(executions.c.id).cte("started"),
            withdraw.returning(outbox.c.id).cte("withdrawn"),
        )

        # The finalize of a step that returned: completed, then the next step or the end.
        step_name = param("hp_step_name", workflows.c.previous_step_name.type)
        next_step = param("hp_next_step", executions.c.step_name.type)
        sequence = param("hp_sequence", executions.c.sequence.type)
        run_at = param("hp_run_at", _TIMESTAMP)
        complete = (
            sa.update(executions)
            .where(executions.c.id == execution_id)
            .values(state=StepState.COMPLETED, outcome=StepOutcome.SUCCESS, finished_at=now)
        )
        self._finish_workflow = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.FINISHED,
                current_step_name=None,
                next_step_name=None,
                previous_step_name=step_name,
                updated_at=now,
                transitioned_at=now,
            )
        )
        advance = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.READY,
                current_step_name=None,
                next_step_name=next_step,
                previous_step_name=step_name,
                execution_count=sequence,
                updated_at=now,
            )
        )
        new_id = param("hp_new_id", key_type)
        execution_values: dict[str, Any] = {
            "workflow_id": workflow_id,
            "sequence": sequence,
            "step_name": next_step,
            "state": sa.literal(StepState.SCHEDULED, executions.c.state.type),
            "scheduled_for": run_at,
            "created_at": now,
        }
        if self.uuid_keys:
            execution_values["id"] = new_id
        outbox_values: dict[str, Any] = {
            "workflow_id": workflow_id,
            "queue_name": param("hp_queue_name", outbox.c.queue_name.type),
            "priority": param("hp_priority", outbox.c.priority.type),
            "time_limit_ms": param("hp_time_limit_ms", outbox.c.time_limit_ms.type),
            "available_at": run_at,
            # A step due at once is the committing process's to publish (the fast path):
            # its row counts as published from the start (see publishing.published_marks).
            "published_at": param("hp_published_at", _TIMESTAMP),
            "publish_count": param("hp_publish_count", outbox.c.publish_count.type),
            "created_at": now,
        }
        self._complete = complete
        self._insert_execution = sa.insert(executions).values(execution_values)
        self._insert_outbox = sa.insert(outbox).values(execution_id=new_id, **outbox_values)
        self._advance = advance
        # On PostgreSQL the finalize is one statement, its lock included: ``locked`` takes
        # the workflow's row, then the execution's (and re-reads them on a wait), and
        # finds nothing when the execution is no longer in progress (housekeeping
        # recovered it); every later CTE reads from the one before it, so nothing is
        # written then, and the statement returns no row.
        locked = (
            sa.select(
                executions.c.id.label("id"),
                (workflows.c.execution_count + 1).label("sequence"),
            )
            .select_from(workflows.join(executions, executions.c.workflow_id == workflows.c.id))
            .where(
                executions.c.id == execution_id,
                executions.c.state == sa.literal(StepState.IN_PROGRESS, executions.c.state.type),
            )
            .with_for_update()
            .cte("locked")
        )
        completed = (
            sa.update(executions)
            .where(executions.c.id == sa.select(locked.c.id).scalar_subquery())
            .values(state=StepState.COMPLETED, outcome=StepOutcome.SUCCESS, finished_at=now)
            .returning(executions.c.id)
            .cte("completed")
        )
        went_through = sa.exists(sa.select(completed.c.id))
        self._complete_and_finish = (
            self._finish_workflow.where(went_through)
            .add_cte(locked, completed)
            .returning(workflows.c.id)
        )
        scheduled_values = dict(execution_values)
        scheduled_values["sequence"] = sa.select(locked.c.sequence).scalar_subquery()
        inserted = _insert_after(executions, scheduled_values, completed, "scheduled")
        queued = (
            sa.insert(outbox)
            .from_select(
                ["execution_id", *outbox_values],
                sa.select(
                    inserted.c.id, *(_labelled(k, v) for k, v in outbox_values.items())
                ).select_from(inserted),
            )
            .returning(outbox.c.id)
            .cte("queued")
        )
        self._complete_and_advance = (
            advance.where(went_through)
            .values(execution_count=workflows.c.execution_count + 1)
            .add_cte(locked, completed, inserted, queued)
            .returning(sa.select(inserted.c.id).scalar_subquery())
        )
        # The finalize of a step that returned, when the worker runs the next step
        # itself at once (an inline run): the next execution is inserted already in
        # progress and the workflow stays performing; no outbox row, no second claim.
        claimed: dict[str, Any] = {
            "state": sa.literal(StepState.IN_PROGRESS, executions.c.state.type),
            "started_at": now,
            "message_id": param("hp_message_id", executions.c.message_id.type),
        }
        continued_values = {**scheduled_values, **claimed}
        started = _insert_after(executions, continued_values, completed, "started")
        self._continue = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.PERFORMING,
                current_step_name=next_step,
                next_step_name=next_step,
                previous_step_name=step_name,
                execution_count=sequence,
                updated_at=now,
            )
        )
        #: The workflow's columns as they are once an inline run continues: the next
        #: step's workflow object is built from them, current under the lock.
        self.workflow_columns = tuple(workflows.c)
        self._complete_and_continue = (
            self._continue.where(went_through)
            .values(execution_count=workflows.c.execution_count + 1)
            .add_cte(locked, completed, started)
            .returning(
                sa.select(started.c.id).scalar_subquery().label("hp_started_id"),
                *self.workflow_columns,
            )
        )
        self._insert_started = sa.insert(executions).values({**execution_values, **claimed})
        self._continue_returning = self._continue.returning(*self.workflow_columns)
        # Giving back a claim whose body never started: scheduled again, the workflow
        # ready, and an outbox row (run one at a time, after the lock: a rare path).
        self._unclaim = (
            sa.update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.state == sa.literal(StepState.IN_PROGRESS, executions.c.state.type),
            )
            .values(state=StepState.SCHEDULED, started_at=None, message_id=None)
        )
        self._ready_again = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(state=WorkflowState.READY, current_step_name=None, updated_at=now)
        )
        self._requeue = sa.insert(outbox).values(execution_id=execution_id, **outbox_values)
        # A workflow's first step (create()): the execution and its outbox row.
        first = sa.insert(executions).values(execution_values).returning(executions.c.id).cte(
            "scheduled"
        )
        self._schedule_combined = sa.insert(outbox).from_select(
            ["execution_id", *outbox_values],
            sa.select(first.c.id, *(_labelled(k, v) for k, v in outbox_values.items())),
        ).returning(outbox.c.execution_id)

    def warm_up(self, session: Session) -> None:
        """Run each statement once on ids that match nothing, then roll back, so that a
        worker's first steps do not pay for compiling them (several ms each)."""
        nothing = uuid.UUID(int=0) if self.uuid_keys else -1
        now = utcnow()
        options: dict[str, Any] = {
            "run_at": now, "now": now, "queue_name": "", "priority": 0, "time_limit_ms": None,
        }  # fmt: skip
        try:
            self.lock_objects_for(session, nothing)
            self.claim(session, nothing, nothing, "", now, None)
            self.complete_and_finish(session, nothing, nothing, "", now)
            self.complete_and_advance(session, nothing, nothing, "", next_step="", **options)
            self.complete_and_continue(
                session, nothing, nothing, "", next_step="", now=now, message_id=None
            )
        finally:
            session.rollback()

    def lock_states(self, session: Session, execution_id: Any) -> LockedStates | None:
        """Lock the execution's workflow row, then its row; None if it does not exist."""
        connection = session.connection()
        params = {"hp_execution_id": execution_id}
        if connection.dialect.name == "sqlite":
            connection.execute(self._sqlite_lock, params)
        row = connection.execute(self._lock_states, params).one_or_none()
        if row is None:
            return None
        return LockedStates(str(row[0]), int(row[1] or 0), row[2])

    def lock_objects_for(self, session: Session, execution_id: Any) -> tuple[Any, Any] | None:
        """The locked ``(workflow, execution)`` as ORM objects, loaded fresh."""
        params = {"hp_execution_id": execution_id}
        if session.get_bind().dialect.name == "sqlite":
            session.connection().execute(self._sqlite_lock, params)
        row = session.execute(self._lock_objects, params).one_or_none()
        return None if row is None else (row[0], row[1])

    def claim(
        self,
        session: Session,
        execution_id: Any,
        workflow_id: Any,
        step_name: str,
        now: datetime,
        message_id: str | None,
    ) -> None:
        """Mark the execution in progress and the workflow performing; drop the outbox row."""
        connection = session.connection()
        params = {
            "hp_execution_id": execution_id,
            "hp_workflow_id": workflow_id,
            "hp_step_name": step_name,
            "hp_now": now,
            "hp_message_id": message_id,
        }
        if connection.dialect.name == "postgresql":
            connection.execute(self._claim_combined, params)
            return
        for statement in self._claim_steps:
            connection.execute(statement, params)

    def complete_and_finish(
        self, session: Session, execution_id: Any, workflow_id: Any, step_name: str, now: datetime
    ) -> bool:
        """The execution completed and it was the last step: the workflow is finished.

        Returns False, having written nothing, when the execution is no longer in
        progress (housekeeping recovered it while the step ran).
        """
        connection = session.connection()
        params = {
            "hp_execution_id": execution_id,
            "hp_workflow_id": workflow_id,
            "hp_step_name": step_name,
            "hp_now": now,
        }
        if connection.dialect.name == "postgresql":
            return connection.execute(self._complete_and_finish, params).first() is not None
        locked = self.lock_states(session, execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return False
        connection.execute(self._complete, params)
        connection.execute(self._finish_workflow, params)
        return True

    def complete_and_advance(
        self,
        session: Session,
        execution_id: Any,
        workflow_id: Any,
        step_name: str,
        *,
        next_step: str,
        run_at: datetime,
        now: datetime,
        queue_name: str,
        priority: int,
        time_limit_ms: int | None,
    ) -> Any:
        """The execution completed: schedule ``next_step`` (execution and outbox rows) and
        make the workflow ready. Returns the new execution's id, or None, having written
        nothing, when the execution is no longer in progress."""
        connection = session.connection()
        params = self._scheduling_params(
            workflow_id, next_step, run_at, now, queue_name, priority, time_limit_ms
        )
        params.update(hp_execution_id=execution_id, hp_step_name=step_name)
        if connection.dialect.name == "postgresql":
            row = connection.execute(self._complete_and_advance, params).first()
            if row is None:
                return None
            return params.get("hp_new_id", row[0])
        locked = self.lock_states(session, execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return None
        params["hp_sequence"] = locked.execution_count + 1
        connection.execute(self._complete, params)
        new_id = self._insert_scheduled(connection, params)
        connection.execute(self._advance, params)
        return new_id

    def complete_and_continue(
        self,
        session: Session,
        execution_id: Any,
        workflow_id: Any,
        step_name: str,
        *,
        next_step: str,
        now: datetime,
        message_id: str | None,
    ) -> tuple[Any, sa.RowMapping] | None:
        """The execution completed and the caller runs ``next_step`` itself, now: insert
        its execution already ``in_progress`` (the claim, in this same transaction) and
        keep the workflow performing. Returns the new execution's id and the workflow's
        row as it now is (keyed by :attr:`workflow_columns`), or None, having written
        nothing, when the execution is no longer in progress."""
        connection = session.connection()
        params: dict[str, Any] = {
            "hp_execution_id": execution_id,
            "hp_workflow_id": workflow_id,
            "hp_step_name": step_name,
            "hp_next_step": next_step,
            "hp_run_at": now,
            "hp_now": now,
            "hp_message_id": message_id,
        }
        if self.uuid_keys:
            params["hp_new_id"] = uuid.uuid4()
        if connection.dialect.name == "postgresql":
            row = connection.execute(self._complete_and_continue, params).first()
            if row is None:
                return None
            return params.get("hp_new_id", row[0]), row._mapping
        locked = self.lock_states(session, execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return None
        params["hp_sequence"] = locked.execution_count + 1
        connection.execute(self._complete, params)
        inserted = connection.execute(self._insert_started, params)
        if not self.uuid_keys:
            params["hp_new_id"] = _inserted_key(inserted)
        workflow_row = connection.execute(self._continue_returning, params).one()
        return params["hp_new_id"], workflow_row._mapping

    def give_back(
        self,
        session: Session,
        execution_id: Any,
        workflow_id: Any,
        *,
        now: datetime,
        queue_name: str,
        priority: int,
        time_limit_ms: int | None,
    ) -> bool:
        """Undo the claim of an execution whose body never started: ``scheduled`` again
        (due now), with an outbox row, the workflow ``ready``. False, having written
        nothing, when it is no longer in progress, or is not ``workflow_id``'s (the
        claim's commit failed and SQLite gave its id to another workflow's execution)."""
        connection = session.connection()
        locked = self.lock_states(session, execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return False
        if locked.workflow_id != workflow_id:
            return False
        params = self._scheduling_params(
            workflow_id, "", now, now, queue_name, priority, time_limit_ms
        )
        params["hp_execution_id"] = execution_id
        connection.execute(self._unclaim, params)
        connection.execute(self._ready_again, params)
        connection.execute(self._requeue, params)
        return True

    def schedule(
        self,
        session: Session,
        workflow_id: Any,
        *,
        step_name: str,
        sequence: int,
        run_at: datetime,
        now: datetime,
        queue_name: str,
        priority: int,
        time_limit_ms: int | None,
    ) -> Any:
        """Add a ``scheduled`` execution of ``step_name`` and its outbox row (the workflow
        row is the caller's to update). Returns the new execution's id."""
        connection = session.connection()
        params = self._scheduling_params(
            workflow_id, step_name, run_at, now, queue_name, priority, time_limit_ms
        )
        params["hp_sequence"] = sequence
        if connection.dialect.name == "postgresql":
            new_id = connection.execute(self._schedule_combined, params).scalar_one()
            return params.get("hp_new_id", new_id)
        return self._insert_scheduled(connection, params)

    def _scheduling_params(
        self,
        workflow_id: Any,
        step_name: str,
        run_at: datetime,
        now: datetime,
        queue_name: str,
        priority: int,
        time_limit_ms: int | None,
    ) -> dict[str, Any]:
        """The parameters of a new scheduled execution and its outbox row."""
        params: dict[str, Any] = {
            "hp_workflow_id": workflow_id,
            "hp_next_step": step_name,
            "hp_run_at": run_at,
            "hp_now": now,
            "hp_queue_name": queue_name,
            "hp_priority": priority,
            "hp_time_limit_ms": time_limit_ms,
        }
        params["hp_published_at"], params["hp_publish_count"] = published_marks(run_at, now)
        if self.uuid_keys:
            params["hp_new_id"] = uuid.uuid4()
        return params

    def _insert_scheduled(self, connection: sa.Connection, params: dict[str, Any]) -> Any:
        """Insert the execution, then its outbox row, one statement each; the new id."""
        inserted = connection.execute(self._insert_execution, params)
        if not self.uuid_keys:
            params["hp_new_id"] = _inserted_key(inserted)
        connection.execute(self._insert_outbox, params)
        return params["hp_new_id"]


def _inserted_key(result: Any) -> Any:
    key = result.inserted_primary_key
    assert key is not None
    return key[0]


def _insert_after(table: sa.Table, values: dict[str, Any], after: Any, name: str) -> Any:
    """``INSERT INTO table ... SELECT values FROM after RETURNING id`` as the CTE ``name``:
    it inserts one row for each row ``after`` returned (none when it wrote nothing)."""
    columns = sa.select(*(_labelled(k, v) for k, v in values.items())).select_from(after)
    return table.insert().from_select(list(values), columns).returning(table.c.id).cte(name)


def _labelled(name: str, value: Any) -> Any:
    """A value for an ``INSERT ... SELECT`` column list, labelled like its column."""
    return value.label(name)


def hot_path(geneva: Any) -> HotPath:
    """The :class:`HotPath` of ``geneva``, built on first use."""
    built: HotPath | None = geneva.__dict__.get("_hot_path")
    if built is None:
        built = geneva.__dict__["_hot_path"] = HotPath(geneva)
    return built
