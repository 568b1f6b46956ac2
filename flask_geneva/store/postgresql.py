"""The PostgreSQL store: the hot writes in one round trip each.

A worker claims and finishes steps all day long. On PostgreSQL the writes of one phase
go out as **one** statement: data-modifying CTEs (``WITH started AS (UPDATE ...),
withdrawn AS (DELETE ...) UPDATE ...``). Each CTE that must follow another reads from it,
which fixes the order PostgreSQL runs them in (the next execution is inserted only after
the finished one has left the one-active index). The finalize's CTEs include the lock:
``locked`` takes the workflow's row, then the execution's, and finds nothing when the
execution is no longer in progress, so nothing is written and no row comes back.

Rarer outcomes (failures, flow-control calls, operator actions, recoveries) use the
shared statements one at a time (:class:`~flask_geneva.store.base.Store`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from flask_geneva.loading import attach_as_loaded, mapped_columns
from flask_geneva.machine import Move, Plan
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.store.base import Store
from flask_geneva.store.statements import Statements, insert_after, labelled, param
from flask_geneva.store.values import Applied, MessageOptions, Target

#: The PostgreSQL NOTIFY channel that wakes relays when a later step is scheduled.
NOTIFY_CHANNEL: Final = "geneva_outbox"
#: How :meth:`_CombinedStatements.create_with_first_step` names the first execution's id.
FIRST_EXECUTION_LABEL: Final = "hp_first_execution_id"
#: How :meth:`_CombinedStatements.continue_with_hero` names the hero's columns it returns
#: (apart from the workflow's own ``hero_type`` and ``hero_id``).
HERO_LABEL: Final = "hp_hero_"


class PostgresStore(Store):
    """Writes the claim, a returned step's finalize and a first step in one statement."""

    dialect = "postgresql"

    def __init__(self, geneva: Any) -> None:
        super().__init__(geneva)
        self.combined = _CombinedStatements(self.sql)

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table)

    def claim(self, session: Session, execution_id: Any, workflow_id: Any, step_name: str,
              now: datetime, message_id: str | None) -> None:
        params = self._claim_params(execution_id, workflow_id, step_name, now, message_id)
        session.connection().execute(self.combined.claim, params)

    def finalize(self, session: Session, target: Target, plan: Plan, now: datetime, *,
                 options: MessageOptions, error: BaseException | None = None,
                 claim_next: bool = False, message_id: str | None = None) -> Applied | None:
        if not _one_statement(target, plan, options, error):
            # Signals to consume or a step to wait: the shared writes, one at a time.
            return super().finalize(session, target, plan, now, options=options, error=error,
                                    claim_next=claim_next, message_id=message_id)
        connection = session.connection()
        params: dict[str, Any] = {
            "hp_execution_id": target.execution_id, "hp_workflow_id": target.workflow_id,
            "hp_step_name": target.step_name, "hp_now": now,
        }  # fmt: skip
        if plan.schedule is None:
            row = connection.execute(self.combined.complete_and_finish, params).first()
            return None if row is None else Applied()
        if claim_next and not plan.schedule_in:
            params.update(
                hp_next_step=plan.schedule, hp_run_at=now, hp_message_id=message_id,
                **self._new_key(),
            )
            row = connection.execute(self.combined.complete_and_continue, params).first()
            if row is None:
                return None
            return Applied(params.get("hp_new_id", row[0]), workflow_row=row._mapping)
        run_at = now + plan.schedule_in
        params.update(self._scheduling_params(
            target.workflow_id, plan.schedule, run_at, now, options
        ))  # fmt: skip
        row = connection.execute(self.combined.complete_and_advance, params).first()
        if row is None:
            return None
        new_id = params.get("hp_new_id", row[0])
        self.announce(session, new_id, target.workflow_id, options, run_at, now)
        return Applied(new_id)

    def finalize_with_hero(
        self, session: Session, target: Target, plan: Plan, now: datetime, *,
        options: MessageOptions, message_id: str | None, hero_class: type,
    ) -> tuple[Applied, dict[str, Any] | None] | None:
        if not _one_statement(target, plan, options, None) or plan.schedule_in:
            return super().finalize_with_hero(session, target, plan, now, options=options,
                                              message_id=message_id, hero_class=hero_class)
        connection = session.connection()
        params: dict[str, Any] = {
            "hp_execution_id": target.execution_id, "hp_workflow_id": target.workflow_id,
            "hp_step_name": target.step_name, "hp_now": now, "hp_next_step": plan.schedule,
            "hp_run_at": now, "hp_message_id": message_id, **self._new_key(),
        }  # fmt: skip
        statement = self.combined.continue_with_hero(hero_class)
        row = connection.execute(statement, params).first()
        if row is None:
            return None
        new_id = params.get("hp_new_id", row[0])
        mapping = row._mapping
        mapper: Any = sa.inspect(hero_class)
        if mapping[f"{HERO_LABEL}{mapper.primary_key[0].key}"] is None:
            # The hero is gone: its successor is scheduled and published as usual (in this
            # same transaction), and its claim finds the hero gone.
            ids = {"hp_execution_id": new_id, "hp_workflow_id": target.workflow_id, "hp_now": now}
            connection.execute(self.sql.unclaim, ids)
            connection.execute(self.sql.ready_again, ids)
            self.enqueue(session, new_id, target.workflow_id, options, now, now)
            return Applied(new_id), None
        hero = {
            prop.key: mapping[f"{HERO_LABEL}{prop.columns[0].key}"] for prop in mapper.column_attrs
        }
        return Applied(new_id, workflow_row=mapping), hero

    def insert_workflow_scheduling(self, session: Session, cls: type, values: dict[str, Any],
                                   *, step_name: str, run_at: datetime, now: datetime,
                                   options: MessageOptions) -> Any:
        if step_name in options.signal_waits:  # it may wait: the shared writes
            return super().insert_workflow_scheduling(
                session, cls, values, step_name=step_name, run_at=run_at, now=now,
                options=options,
            )  # fmt: skip
        statement = self.combined.create_with_first_step(self.workflow_insert())
        params = self.workflow_params(values)
        params.update(self._scheduling_params(None, step_name, run_at, now, options))
        params["hp_sequence"] = 1
        row = session.connection().execute(statement, params).one_or_none()
        if row is None:
            return None
        mapping = row._mapping
        workflow = attach_as_loaded(
            session, cls, {key: mapping[column.name] for key, column in mapped_columns(cls)}
        )
        new_id = params.get("hp_new_id", mapping[FIRST_EXECUTION_LABEL])
        self.announce(session, new_id, workflow.id, options, run_at, now)
        return workflow

    def contained(self, session: Session) -> AbstractContextManager[Any]:
        # A failed query aborts a PostgreSQL transaction: only the savepoint's part is
        # undone, and what the transaction wrote before stays.
        return session.begin_nested()

    def _insert_scheduled(self, session: Session, params: dict[str, Any]) -> Any:
        new_id = session.connection().execute(self.combined.schedule, params).scalar_one()
        return params.get("hp_new_id", new_id)

    def _wake_relays(self, session: Session, available_at: datetime) -> None:
        # Delivered at commit, and only then: relays listening wake for the new due time.
        session.execute(
            sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(available_at.timestamp())))
        )



def _one_statement(
    target: Target, plan: Plan, options: MessageOptions, error: BaseException | None
) -> bool:
    """Whether a finalize is a returned step's with no signal to consume or wait for:
    the outcomes the combined statements write."""
    transition = plan.transition
    returned = (
        transition.move == Move.ADVANCE
        and transition.step_state == StepState.COMPLETED
        and transition.outcome == StepOutcome.SUCCESS
        and error is None
    )
    waits = options.signal_waits
    return returned and not (waits and (target.step_name in waits or plan.schedule in waits))


class _CombinedStatements:
    """PostgreSQL's one-statement forms of the hot writes."""

    def __init__(self, sql: Statements) -> None:
        workflows, executions, outbox = sql.workflows, sql.executions, sql.outbox
        now, workflow_id = sql.now, sql.workflow_id
        self.claim = sql.perform_workflow.add_cte(
            sql.start_execution.returning(executions.c.id).cte("started"),
            sql.withdraw.returning(outbox.c.id).cte("withdrawn"),
        )
        step_name = param("hp_step_name", workflows.c.previous_step_name.type)
        locked = (
            sa.select(
                executions.c.id.label("id"),
                (workflows.c.execution_count + 1).label("sequence"),
            )
            .select_from(workflows.join(executions, executions.c.workflow_id == workflows.c.id))
            .where(executions.c.id == sql.execution_id, executions.c.state == sql.in_progress)
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
        finish = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                state=WorkflowState.FINISHED, current_step_name=None, next_step_name=None,
                previous_step_name=step_name, updated_at=now, transitioned_at=now,
            )
        )  # fmt: skip
        self.complete_and_finish = (
            finish.where(went_through).add_cte(locked, completed).returning(workflows.c.id)
        )
        scheduled_values = dict(sql.execution_values)
        scheduled_values["sequence"] = sa.select(locked.c.sequence).scalar_subquery()
        inserted = insert_after(executions, scheduled_values, completed, "scheduled")
        queued = (
            sa.insert(outbox)
            .from_select(
                ["execution_id", *sql.outbox_values],
                sa.select(
                    inserted.c.id, *(labelled(k, v) for k, v in sql.outbox_values.items())
                ).select_from(inserted),
            )
            .returning(outbox.c.id)
            .cte("queued")
        )
        advance = (
            sa.update(workflows)
            .where(workflows.c.id == workflow_id, went_through)
            .values(
                state=WorkflowState.READY, current_step_name=None, next_step_name=sql.next_step,
                previous_step_name=step_name, execution_count=workflows.c.execution_count + 1,
                updated_at=now,
            )
        )  # fmt: skip
        self.complete_and_advance = advance.add_cte(locked, completed, inserted, queued).returning(
            sa.select(inserted.c.id).scalar_subquery()
        )
        self._sql = sql
        self._continues_with_hero: dict[type, Any] = {}
        self._creates: tuple[Any, Any] | None = None
        self.complete_and_continue = self._continue(locked)
        first = (
            sa.insert(executions)
            .values(sql.execution_values)
            .returning(executions.c.id)
            .cte("scheduled")
        )
        self.schedule = (
            sa.insert(outbox)
            .from_select(
                ["execution_id", *sql.outbox_values],
                sa.select(first.c.id, *(labelled(k, v) for k, v in sql.outbox_values.items())),
            )
            .returning(outbox.c.execution_id)
        )

    def _continue(self, locked: Any, returning: tuple[Any, ...] = ()) -> Any:
        """Complete the locked execution and insert the next one already claimed (in
        progress), the workflow performing it; returns the new id, the workflow's row and
        ``returning``."""
        sql = self._sql
        workflows, executions = sql.workflows, sql.executions
        completed = (
            sa.update(executions)
            .where(executions.c.id == sa.select(locked.c.id).scalar_subquery())
            .values(state=StepState.COMPLETED, outcome=StepOutcome.SUCCESS, finished_at=sql.now)
            .returning(executions.c.id)
            .cte("completed")
        )
        values = dict(sql.execution_values)
        values["sequence"] = sa.select(locked.c.sequence).scalar_subquery()
        started = insert_after(executions, {**values, **sql.started_values}, completed, "started")
        step_name = param("hp_step_name", workflows.c.previous_step_name.type)
        carry_on = (
            sa.update(workflows)
            .where(workflows.c.id == sql.workflow_id, sa.exists(sa.select(completed.c.id)))
            .values(
                state=WorkflowState.PERFORMING, current_step_name=sql.next_step,
                next_step_name=sql.next_step, previous_step_name=step_name,
                execution_count=workflows.c.execution_count + 1, updated_at=sql.now,
            )
        )  # fmt: skip
        return carry_on.add_cte(locked, completed, started).returning(
            sa.select(started.c.id).scalar_subquery().label("hp_started_id"),
            *sql.workflow_columns,
            *returning,
        )

    def continue_with_hero(self, hero_class: type) -> Any:
        """:attr:`complete_and_continue` whose lock also reads the row of the workflow's
        hero (``hero_class``, outer-joined, not locked), returned as ``hero_<column>``:
        the hero check of the claimed next step costs no statement of its own."""
        statement = self._continues_with_hero.get(hero_class)
        if statement is None:
            sql = self._sql
            workflows, executions = sql.workflows, sql.executions
            table, joined = sql.hero_join(hero_class)
            locked = (
                sa.select(
                    executions.c.id.label("id"),
                    (workflows.c.execution_count + 1).label("sequence"),
                    *(column.label(f"hero_{column.key}") for column in table.c),
                )
                .select_from(
                    workflows.join(executions, executions.c.workflow_id == workflows.c.id)
                    .outerjoin(table, joined)
                )
                .where(executions.c.id == sql.execution_id, executions.c.state == sql.in_progress)
                .with_for_update(of=[workflows, executions])
                .cte("locked")
            )  # fmt: skip
            hero_columns = tuple(
                sa.select(locked.c[f"hero_{column.key}"]).scalar_subquery().label(
                    f"{HERO_LABEL}{column.key}"
                )
                for column in table.c
            )
            statement = self._continue(locked, hero_columns)
            self._continues_with_hero[hero_class] = statement
        return statement

    def create_with_first_step(self, workflow_insert: Any) -> Any:
        """``workflow_insert`` (the store's ``INSERT … ON CONFLICT DO NOTHING RETURNING``)
        with the first execution and its outbox row inserted by the same statement, for
        the row it inserted (none when the one-ongoing index refused it); returns the
        workflow's row and the execution's id."""
        cached = self._creates
        if cached is not None and cached[0] is workflow_insert:
            return cached[1]
        sql = self._sql
        executions, outbox = sql.executions, sql.outbox
        created = workflow_insert.cte("created")
        execution_values = {**sql.execution_values, "workflow_id": created.c.id}
        first = (
            sa.insert(executions)
            .from_select(
                list(execution_values),
                sa.select(*(labelled(k, v) for k, v in execution_values.items()))
                .select_from(created),
            )
            .returning(executions.c.id, executions.c.workflow_id)
            .cte("first_step")
        )
        outbox_values = {**sql.outbox_values, "workflow_id": first.c.workflow_id}
        queued = (
            sa.insert(outbox)
            .from_select(
                ["execution_id", *outbox_values],
                sa.select(first.c.id, *(labelled(k, v) for k, v in outbox_values.items()))
                .select_from(first),
            )
            .returning(outbox.c.id)
            .cte("first_message")
        )
        statement = (
            sa.select(*created.c, first.c.id.label(FIRST_EXECUTION_LABEL))
            .select_from(created.join(first, first.c.workflow_id == created.c.id))
            .add_cte(queued)
        )
        self._creates = (workflow_insert, statement)
        return statement
