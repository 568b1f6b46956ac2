"""The SQL a store writes with, built once per :class:`~flask_geneva.Geneva`.

Every statement takes bound parameters named ``hp_*``, so SQLAlchemy compiles it once
and serves every later call from its compiled cache. The names say what each one does;
:mod:`flask_geneva.store.postgresql` adds the combined forms PostgreSQL runs in one
round trip.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from flask_geneva.states import StepState, WorkflowState
from flask_geneva.timeutil import timestamp_type

TIMESTAMP = timestamp_type()


def param(name: str, type_: Any) -> Any:
    """A bound parameter of a prebuilt statement."""
    return sa.bindparam(name, type_=type_)


class Statements:
    """The prebuilt statements over one Geneva's three tables."""

    def __init__(self, geneva: Any) -> None:
        workflow_model, execution_model = geneva.Workflow, geneva.StepExecution
        self.workflows = workflows = workflow_model.__table__
        self.executions = executions = execution_model.__table__
        self.outbox = outbox = geneva.OutboxMessage.__table__
        self.uuid_keys = bool(geneva.uuid_primary_keys)
        self._hero_locks: dict[type, Any] = {}
        self._hero_state_locks: dict[type, Any] = {}
        key_type = executions.c.id.type
        execution_id = param("hp_execution_id", key_type)
        workflow_id = param("hp_workflow_id", key_type)
        now = param("hp_now", TIMESTAMP)
        self.execution_id, self.workflow_id, self.now = execution_id, workflow_id, now
        in_progress = sa.literal(StepState.IN_PROGRESS, executions.c.state.type)
        self.in_progress = in_progress

        #: The unique index of one ongoing workflow per class and hero.
        self.one_ongoing_index = next(
            index for index in workflows.indexes if index.name == "geneva_workflows_one_ongoing"
        )

        # -- locks: the workflow row first, then the execution's ------------------------
        self.lock_workflow = (
            sa.select(workflow_model)
            .where(workflow_model.id == workflow_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        self.lock_objects = (
            sa.select(workflow_model, execution_model)
            .select_from(workflow_model)
            .join(execution_model, execution_model.workflow_id == workflow_model.id)
            .where(execution_model.id == execution_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        self.lock_states = (
            sa.select(executions.c.state, workflows.c.execution_count, workflows.c.id)
            .select_from(workflows.join(executions, executions.c.workflow_id == workflows.c.id))
            .where(executions.c.id == execution_id)
            .with_for_update()
        )
        self.lock_scheduled = (
            sa.select(execution_model)
            .where(
                execution_model.workflow_id == workflow_id,
                execution_model.state == StepState.SCHEDULED,
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        owner = sa.select(executions.c.workflow_id).where(executions.c.id == execution_id)
        #: A write that changes nothing: on SQLite it takes the database's write lock.
        self.touch_workflow_of_execution = (
            sa.update(workflows)
            .where(workflows.c.id == owner.scalar_subquery())
            .values(state=workflows.c.state)
        )
        self.touch_workflow = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(state=workflows.c.state)
        )

        # -- the claim: in progress, performing, out of the outbox ---------------------
        self.start_execution = (
            sa.update(executions)
            .where(executions.c.id == execution_id)
            .values(
                state=StepState.IN_PROGRESS,
                started_at=now,
                message_id=param("hp_message_id", executions.c.message_id.type),
            )
        )
        self.withdraw = sa.delete(outbox).where(outbox.c.execution_id == execution_id)
        self.perform_workflow = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.PERFORMING,
                current_step_name=param("hp_step_name", workflows.c.current_step_name.type),
                updated_at=now,
            )
        )
        self.claim_steps = (self.start_execution, self.perform_workflow, self.withdraw)

        # -- ending an execution, updating the workflow --------------------------------
        self.end_execution = (
            sa.update(executions)
            .where(executions.c.id == execution_id)
            .values(
                state=param("hp_state", executions.c.state.type),
                outcome=param("hp_outcome", executions.c.outcome.type),
                finished_at=now,
                started_at=sa.func.coalesce(
                    param("hp_started_at", TIMESTAMP), executions.c.started_at
                ),
                message_id=sa.func.coalesce(
                    param("hp_message_id", executions.c.message_id.type),
                    executions.c.message_id,
                ),
                **self._error_values(),
            )
        )
        self.update_workflow = sa.update(workflows).where(workflows.c.id == workflow_id)
        #: The workflow's columns, as an inline run builds the next step's object from.
        self.workflow_columns = tuple(workflows.c)

        # -- new executions ------------------------------------------------------------
        self.next_step = param("hp_next_step", executions.c.step_name.type)
        self.sequence = param("hp_sequence", executions.c.sequence.type)
        self.run_at = param("hp_run_at", TIMESTAMP)
        self.new_id = param("hp_new_id", key_type)
        self.execution_values: dict[str, Any] = {
            "workflow_id": workflow_id,
            "sequence": self.sequence,
            "step_name": self.next_step,
            "state": sa.literal(StepState.SCHEDULED, executions.c.state.type),
            "scheduled_for": self.run_at,
            "created_at": now,
        }
        if self.uuid_keys:
            self.execution_values["id"] = self.new_id
        self.outbox_values: dict[str, Any] = {
            "workflow_id": workflow_id,
            "queue_name": param("hp_queue_name", outbox.c.queue_name.type),
            "priority": param("hp_priority", outbox.c.priority.type),
            "time_limit_ms": param("hp_time_limit_ms", outbox.c.time_limit_ms.type),
            "available_at": self.run_at,
            # A step due at once is the committing process's to publish (the fast path):
            # its row counts as published from the start (see publishing.published_marks).
            "published_at": param("hp_published_at", TIMESTAMP),
            "publish_count": param("hp_publish_count", outbox.c.publish_count.type),
            "created_at": now,
        }
        self.insert_execution = sa.insert(executions).values(self.execution_values)
        self.insert_outbox = sa.insert(outbox).values(
            execution_id=self.new_id, **self.outbox_values
        )
        self.requeue = sa.insert(outbox).values(execution_id=execution_id, **self.outbox_values)
        self.started_values: dict[str, Any] = {
            "state": in_progress,
            "started_at": now,
            "message_id": param("hp_message_id", executions.c.message_id.type),
        }
        self.insert_started = sa.insert(executions).values(
            {**self.execution_values, **self.started_values}
        )
        ended_values = {
            **self.execution_values,
            "state": param("hp_state", executions.c.state.type),
            "outcome": param("hp_outcome", executions.c.outcome.type),
            "scheduled_for": now,
            "finished_at": now,
            **self._error_values(),
        }
        self.insert_ended = sa.insert(executions).values(ended_values)

        # -- giving a claim back ---------------------------------------------------------
        self.unclaim = (
            sa.update(executions)
            .where(executions.c.id == execution_id, executions.c.state == in_progress)
            .values(state=StepState.SCHEDULED, started_at=None, message_id=None)
        )
        self.ready_again = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(state=WorkflowState.READY, current_step_name=None, updated_at=now)
        )

    def can_join_hero(self, hero_class: type) -> bool:
        """Whether :meth:`lock_with_hero` can join ``hero_class``: a single integer or
        text key (``hero_id`` holds it as text, which casts back exactly; a UUID's text
        differs from how SQLite stores it)."""
        mapper: Any = sa.inspect(hero_class)
        key = mapper.primary_key
        return (
            len(key) == 1
            and len(mapper.tables) == 1
            and isinstance(key[0].type, sa.Integer | sa.String)
        )

    def hero_join(self, hero_class: type) -> tuple[Any, Any]:
        """The hero's table and the condition that joins it to the workflow's row."""
        mapper: Any = sa.inspect(hero_class)
        key = mapper.primary_key[0]
        workflows = self.workflows
        hero_id = sa.case(
            (workflows.c.hero_type == hero_class.__name__, workflows.c.hero_id), else_=None
        )
        return mapper.local_table, key == _as_key(hero_id, key.type)

    def lock_states_with_hero(self, hero_class: type) -> Any:
        """:attr:`lock_states` and the columns of ``hero_class``'s row, outer-joined
        (and not locked): plain rows, no objects."""
        statement = self._hero_state_locks.get(hero_class)
        if statement is None:
            table, joined = self.hero_join(hero_class)
            workflows, executions = self.workflows, self.executions
            statement = (
                sa.select(
                    executions.c.state, workflows.c.execution_count, workflows.c.id,
                    *(column.label(f"hero_{column.key}") for column in table.c),
                )
                .select_from(
                    workflows.join(executions, executions.c.workflow_id == workflows.c.id)
                    .outerjoin(table, joined)
                )
                .where(executions.c.id == self.execution_id)
                .with_for_update(of=[workflows, executions])
            )  # fmt: skip
            self._hero_state_locks[hero_class] = statement
        return statement

    def lock_with_hero(self, hero_class: type) -> Any:
        """:attr:`lock_objects` with ``hero_class``'s row outer-joined (and not locked)."""
        statement = self._hero_locks.get(hero_class)
        if statement is None:
            workflow_model = self.lock_objects.column_descriptions[0]["entity"]
            execution_model = self.lock_objects.column_descriptions[1]["entity"]
            _table, joined = self.hero_join(hero_class)
            statement = (
                sa.select(workflow_model, execution_model, hero_class)
                .select_from(workflow_model)
                .join(execution_model, execution_model.workflow_id == workflow_model.id)
                .outerjoin(hero_class, joined)
                .where(execution_model.id == self.execution_id)
                .with_for_update(of=[self.workflows, self.executions])
                .execution_options(populate_existing=True)
            )
            self._hero_locks[hero_class] = statement
        return statement

    def _error_values(self) -> dict[str, Any]:
        columns = self.executions.c
        return {
            "error_class_name": param("hp_error_class_name", columns.error_class_name.type),
            "error_message": param("hp_error_message", columns.error_message.type),
            "error_backtrace": param("hp_error_backtrace", columns.error_backtrace.type),
        }


def _as_key(text: Any, key_type: Any) -> Any:
    """``hero_id`` (text) compared with a key of ``key_type``."""
    return text if isinstance(key_type, sa.String) else sa.cast(text, key_type)


def labelled(name: str, value: Any) -> Any:
    """A value for an ``INSERT ... SELECT`` column list, labelled like its column."""
    return value.label(name)


def insert_after(table: sa.Table, values: dict[str, Any], after: Any, name: str) -> Any:
    """``INSERT INTO table ... SELECT values FROM after RETURNING id`` as the CTE ``name``:
    it inserts one row for each row ``after`` returned (none when it wrote nothing)."""
    columns = sa.select(*(labelled(k, v) for k, v in values.items())).select_from(after)
    return table.insert().from_select(list(values), columns).returning(table.c.id).cte(name)
