"""The store every dialect shares: prebuilt statements, written one at a time.

Each public method writes rows its caller has locked (or locks them itself, as the
finalize does) and leaves the commit to the caller. Rows that are scheduled get their
outbox row in the same transaction, and their publication is arranged for after the
commit (:mod:`flask_geneva.publishing`).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva.loading import attach_as_loaded, values_from
from flask_geneva.machine import NO_WAIT, Move, Plan, after_body, consumes_signal
from flask_geneva.machine import plan as plan_for
from flask_geneva.publishing import PendingMessage, published_marks, remember_for_commit
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.store.heroes import HeroLocks
from flask_geneva.store.signals import SignalWrites
from flask_geneva.store.statements import Statements, param
from flask_geneva.store.values import (
    WORKFLOW_INSERT_KEYS,
    Applied,
    LockedStates,
    MessageOptions,
    Target,
    error_fields,
)
from flask_geneva.timeutil import utcnow


class Store(SignalWrites, HeroLocks):
    """Writes workflow state for one :class:`~flask_geneva.Geneva` on one dialect."""

    #: Whether the database locks single rows (a waited step can lock ahead of its time).
    row_locks = True
    #: The SQLAlchemy dialect name (for dialect-specific index options).
    dialect = ""

    def __init__(self, geneva: Any) -> None:
        self.geneva = geneva
        self.uuid_keys = bool(geneva.uuid_primary_keys)
        self.sql = Statements(geneva)
        self._hero_guess: type | None = None
        self._workflow_insert: Any = None
        mapper: Any = sa.inspect(geneva.Workflow)
        #: Attribute name → column name of what create() sets.
        self._workflow_insert_columns = {
            key: mapper.get_property(key).columns[0].name for key in WORKFLOW_INSERT_KEYS
        }

    # -- locks ---------------------------------------------------------------------------

    def lock_workflow(self, session: Session, workflow_id: Any) -> Any:
        """Lock one workflow row and load it fresh as an ORM object; None if missing."""
        self._take_write_lock(session, workflow_id=workflow_id)
        return session.scalars(
            self.sql.lock_workflow, {"hp_workflow_id": workflow_id}
        ).one_or_none()

    def lock_objects(self, session: Session, execution_id: Any) -> tuple[Any, Any] | None:
        """Lock an execution's workflow row, then the execution row (one statement; the
        workflow first), loaded fresh as ORM objects; None if the execution is missing."""
        self._take_write_lock(session, execution_id=execution_id)
        row = session.execute(
            self.sql.lock_objects, {"hp_execution_id": execution_id}
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    def lock_for_claim(self, session: Session, execution_id: Any) -> tuple[Any, Any] | None:
        """:meth:`lock_objects`, with the workflow's hero loaded fresh by the same
        statement (an outer join, not locked) when its class is the one the last claim
        met: a claim's hero check then costs no round trip of its own."""
        hero_class = self._hero_guess
        if hero_class is None:
            locked = self.lock_objects(session, execution_id)
        else:
            self._take_write_lock(session, execution_id=execution_id)
            row = session.execute(
                self.sql.lock_with_hero(hero_class), {"hp_execution_id": execution_id}
            ).one_or_none()
            if row is None:
                return None
            locked = (row[0], row[1])
            if row[0].hero_type == hero_class.__name__:
                row[0].__dict__["_geneva_hero_cache"] = row[2]
        if locked is not None:
            self._guess_hero(locked[0].hero_type)
        return locked

    def lock_states(self, session: Session, execution_id: Any) -> LockedStates | None:
        """Lock as :meth:`lock_objects` does, reading only the states."""
        self._take_write_lock(session, execution_id=execution_id)
        row = session.connection().execute(
            self.sql.lock_states, {"hp_execution_id": execution_id}
        ).one_or_none()
        if row is None:
            return None
        return LockedStates(str(row[0]), int(row[1] or 0), row[2])

    def scheduled_execution(self, session: Session, workflow_id: Any) -> Any:
        """The workflow's scheduled execution, locked (after the workflow), or None."""
        return session.scalars(
            self.sql.lock_scheduled, {"hp_workflow_id": workflow_id}
        ).first()

    def contained(self, session: Session) -> AbstractContextManager[Any]:
        """A scope in which a failing read leaves the transaction usable (nothing is
        needed where a failed statement does not abort the transaction)."""
        return nullcontext()

    # -- creating a workflow ---------------------------------------------------------------

    def insert_workflow(self, session: Session, cls: type, values: dict[str, Any]) -> Any:
        """Insert a workflow row and return it as a persistent ORM object, in one
        statement (the object built from what it returned: no unit of work, no second
        read); None, having written nothing, when the one-ongoing index refuses it (the
        transaction stays usable, unlike after a failed flush)."""
        statement = self.workflow_insert()
        params = self.workflow_params(values)
        row = session.connection().execute(statement, params).one_or_none()
        if row is None:
            return None
        return attach_as_loaded(session, cls, values_from(cls, row._mapping))

    def insert_workflow_scheduling(self, session: Session, cls: type, values: dict[str, Any],
                                   *, step_name: str, run_at: datetime, now: datetime,
                                   options: MessageOptions) -> Any:
        """:meth:`insert_workflow`, then its first execution (``step_name``, number 1)
        and outbox row as :meth:`schedule` adds them; the workflow, or None, having
        written nothing, when the one-ongoing index refuses it."""
        workflow = self.insert_workflow(session, cls, values)
        if workflow is not None:
            self.schedule(session, workflow.id, step_name=step_name, sequence=1,
                          run_at=run_at, now=now, options=options, fresh=True)  # fmt: skip
        return workflow

    def workflow_params(self, values: dict[str, Any]) -> dict[str, Any]:
        """The parameters of :meth:`workflow_insert` for a new workflow's ``values``."""
        return {
            f"wf_{column}": values.get(key)
            for key, column in self._workflow_insert_columns.items()
        }

    def workflow_insert(self) -> Any:
        """``INSERT`` a workflow row unless the one-ongoing index refuses it, returning
        the row."""
        statement = self._workflow_insert
        # Built again if a workflow class added a column to the table since: the
        # returned row must hold every column the new object maps.
        if statement is None or len(statement.returning_column_descriptions) != len(
            self.sql.workflows.c
        ):
            index = self.sql.one_ongoing_index
            table = self.sql.workflows
            statement = self._workflow_insert = (
                self._insert(table)
                .values({column: sa.bindparam(f"wf_{column}") for column in
                         self._workflow_insert_columns.values()})
                .on_conflict_do_nothing(
                    index_elements=[column.name for column in index.columns],
                    index_where=index.dialect_options[self.dialect]["where"],
                )
                .returning(*table.c)
            )  # fmt: skip
        return statement

    def _insert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` construct (it knows ``ON CONFLICT``)."""
        raise NotImplementedError

    # -- the claim -----------------------------------------------------------------------

    def claim(self, session: Session, execution_id: Any, workflow_id: Any, step_name: str,
              now: datetime, message_id: str | None) -> None:
        """Mark the execution in progress and the workflow performing; drop the outbox row."""
        connection = session.connection()
        params = self._claim_params(execution_id, workflow_id, step_name, now, message_id)
        for statement in self.sql.claim_steps:
            connection.execute(statement, params)

    @staticmethod
    def _claim_params(execution_id: Any, workflow_id: Any, step_name: str, now: datetime,
                      message_id: str | None) -> dict[str, Any]:
        return {
            "hp_execution_id": execution_id, "hp_workflow_id": workflow_id,
            "hp_step_name": step_name, "hp_now": now, "hp_message_id": message_id,
        }  # fmt: skip

    # -- applying a plan -----------------------------------------------------------------

    def finalize(self, session: Session, target: Target, plan: Plan, now: datetime, *,
                 options: MessageOptions, error: BaseException | None = None,
                 claim_next: bool = False, message_id: str | None = None) -> Applied | None:
        """Lock and apply the outcome of a step that ran: None, having written nothing,
        when the execution is no longer in progress (housekeeping recovered it).

        With ``claim_next`` a step the plan schedules at once is inserted already in
        progress (the caller runs it now), the workflow staying performing.
        """
        locked = self.lock_states(session, target.execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return None
        target = Target(
            target.workflow_id, target.execution_id, target.step_name, locked.execution_count
        )
        return self.apply(session, target, plan, now, options=options, error=error,
                          claim_next=claim_next, message_id=message_id, withdraw=False)

    def finalize_with_hero(
        self, session: Session, target: Target, plan: Plan, now: datetime, *,
        options: MessageOptions, message_id: str | None, hero_class: type,
    ) -> tuple[Applied, dict[str, Any] | None] | None:
        """:meth:`finalize` a step that returned, claiming the step the plan schedules at
        once only if the workflow's hero (a row of ``hero_class``, read under the lock)
        is still there: ``(applied, the hero's values)`` with it claimed, ``(applied,
        None)`` with it scheduled and published as usual (its claim finds the hero
        gone), None, having written nothing, when the execution is no longer in
        progress."""
        read = self.lock_states_with_hero(session, target.execution_id, hero_class)
        if read is None or read[0].execution_state != StepState.IN_PROGRESS:
            return None
        locked, hero = read
        target = Target(
            target.workflow_id, target.execution_id, target.step_name, locked.execution_count
        )
        applied = self.apply(session, target, plan, now, options=options,
                             claim_next=hero is not None, message_id=message_id,
                             withdraw=False)  # fmt: skip
        return applied, hero

    def apply(self, session: Session, target: Target, plan: Plan, now: datetime, *,
              options: MessageOptions, error: BaseException | None = None,
              started: tuple[datetime, str | None] | None = None, withdraw: bool = True,
              release_at: datetime | None = None, release: bool = True,
              claim_next: bool = False, message_id: str | None = None,
              keep_deadline: datetime | None = None) -> Applied:
        """Write ``plan`` for rows the caller has locked.

        ``started`` marks an execution that ends without having run (a precondition
        decided) with its start time and message; ``withdraw`` drops its outbox row;
        ``release_at`` is when a kept execution runs again (:data:`Move.RELEASE`), and
        ``release`` False leaves it without a message (it waits for a signal);
        ``keep_deadline``: a scheduled step that waits for a signal keeps this timeout
        end (housekeeping's recovery of a waiting execution).
        """
        connection = session.connection()
        transition = plan.transition
        count = target.execution_count
        applied = Applied()
        if plan.ends_execution:
            ended = {
                "hp_state": transition.step_state, "hp_outcome": transition.outcome,
                "hp_now": now, **_prefixed(error_fields(error if transition.records_error
                                                        else None)),
            }  # fmt: skip
            if target.execution_id is None:
                count += 1
                connection.execute(self.sql.insert_ended, {
                    **ended, "hp_workflow_id": target.workflow_id, "hp_sequence": count,
                    "hp_next_step": target.step_name, **self._new_key(),
                })  # fmt: skip
            else:
                started_at, started_by = started if started is not None else (None, None)
                connection.execute(self.sql.end_execution, {
                    **ended, "hp_execution_id": target.execution_id,
                    "hp_started_at": started_at, "hp_message_id": started_by,
                })  # fmt: skip
                if withdraw:
                    self.withdraw(session, target.execution_id)
            if target.step_name in options.signal_waits and consumes_signal(transition):
                self.consume_signal(session, target.workflow_id, target.execution_id, now)
        if transition.move == Move.HOLD and target.execution_id is not None:
            self.withdraw(session, target.execution_id)
        if transition.move == Move.RELEASE and target.execution_id is not None and release:
            available_at = max(release_at or now, now)
            self.enqueue(session, target.execution_id, target.workflow_id, options,
                         available_at, now)
        values: dict[str, Any] = {
            "state": plan.workflow_state, "current_step_name": None,
            "next_step_name": plan.next_step, "updated_at": now,
        }  # fmt: skip
        if plan.previous_step is not None:
            values["previous_step_name"] = plan.previous_step
        if plan.stamps_transitioned_at:
            values["transitioned_at"] = now
        if plan.schedule is not None:
            count += 1
            run_at = now + plan.schedule_in
            if claim_next and run_at <= now:
                applied.new_execution_id = self._insert_started(
                    connection, target.workflow_id, plan.schedule, count, now, message_id
                )
                values.update(state=WorkflowState.PERFORMING, current_step_name=plan.schedule)
            else:
                applied.new_execution_id = self.schedule(
                    session, target.workflow_id, step_name=plan.schedule, sequence=count,
                    run_at=run_at, now=now, options=options, deadline=keep_deadline,
                )
        values["execution_count"] = count
        statement = self.sql.update_workflow.values(
            {key: sa.bindparam(f"hp_set_{key}") for key in values}
        )
        params = {f"hp_set_{key}": value for key, value in values.items()}
        params["hp_workflow_id"] = target.workflow_id
        if claim_next and applied.new_execution_id is not None:
            applied.workflow_row = self._update_workflow_returning(connection, statement, params)
        else:
            connection.execute(statement, params)
        applied.workflow_values = values
        return applied

    def _update_workflow_returning(self, connection: sa.Connection, statement: Any,
                                   params: dict[str, Any]) -> Any:
        """Run the workflow's UPDATE and return its row as it leaves it (by column)."""
        return connection.execute(
            statement.returning(*self.sql.workflow_columns), params
        ).one()._mapping

    def _insert_started(self, connection: sa.Connection, workflow_id: Any, step_name: str,
                        sequence: int, now: datetime, message_id: str | None) -> Any:
        params = {
            "hp_workflow_id": workflow_id, "hp_next_step": step_name, "hp_sequence": sequence,
            "hp_run_at": now, "hp_now": now, "hp_message_id": message_id, **self._new_key(),
        }  # fmt: skip
        inserted = connection.execute(self.sql.insert_started, params)
        return params["hp_new_id"] if self.uuid_keys else _inserted_key(inserted)

    # -- scheduling ----------------------------------------------------------------------

    def schedule(self, session: Session, workflow_id: Any, *, step_name: str, sequence: int,
                 run_at: datetime, now: datetime, options: MessageOptions,
                 fresh: bool = False, deadline: datetime | None = None) -> Any:
        """Add a ``scheduled`` execution of ``step_name`` and its outbox row, to be
        published after the commit (the workflow row is the caller's to update).
        Returns the new execution's id. A step that waits for a signal waits (see
        :meth:`wait_plan`; ``fresh``: the workflow was just created; ``deadline``: the
        end of a timeout kept from the execution this one replaces)."""
        wait = options.signal_waits.get(step_name)
        if wait is not None:
            waits, deadline, wake_at = self.wait_plan(session, workflow_id, step_name, wait,
                                                      now, fresh=fresh, deadline=deadline)
            if waits:
                return self._schedule_waiting(session, workflow_id, step_name, sequence,
                                              wait.name, deadline, wake_at, now, options)
        params = self._scheduling_params(workflow_id, step_name, run_at, now, options)
        params["hp_sequence"] = sequence
        new_id = self._insert_scheduled(session, params)
        self.announce(session, new_id, workflow_id, options, run_at, now)
        return new_id

    def _schedule_waiting(self, session: Session, workflow_id: Any, step_name: str,
                          sequence: int, signal_name: str, deadline: datetime | None,
                          wake_at: datetime | None, now: datetime,
                          options: MessageOptions) -> Any:
        """Add an execution that waits for ``signal_name`` until ``deadline``, with an
        outbox row at ``wake_at`` (none when None)."""
        statement = self.__dict__.get("_insert_waiting")
        if statement is None:
            executions = self.sql.executions
            statement = self.__dict__["_insert_waiting"] = sa.insert(executions).values({
                **self.sql.execution_values,
                "scheduled_for": param("hp_deadline", executions.c.scheduled_for.type),
                "waiting_for": param("hp_waiting_for", executions.c.waiting_for.type),
            })  # fmt: skip
        params = self._scheduling_params(workflow_id, step_name, wake_at or now, now, options)
        params.update(hp_sequence=sequence, hp_deadline=deadline, hp_waiting_for=signal_name)
        connection = session.connection()
        inserted = connection.execute(statement, params)
        if not self.uuid_keys:
            params["hp_new_id"] = _inserted_key(inserted)
        if wake_at is not None:
            connection.execute(self.sql.insert_outbox, params)
            self.announce(session, params["hp_new_id"], workflow_id, options, wake_at, now)
        return params["hp_new_id"]

    def _insert_scheduled(self, session: Session, params: dict[str, Any]) -> Any:
        """Insert the execution, then its outbox row; the new id."""
        connection = session.connection()
        inserted = connection.execute(self.sql.insert_execution, params)
        if not self.uuid_keys:
            params["hp_new_id"] = _inserted_key(inserted)
        connection.execute(self.sql.insert_outbox, params)
        return params["hp_new_id"]

    def enqueue(self, session: Session, execution_id: Any, workflow_id: Any,
                options: MessageOptions, available_at: datetime, now: datetime) -> None:
        """Write an outbox row for an execution that is already scheduled."""
        params = self._scheduling_params(workflow_id, "", available_at, now, options)
        params["hp_execution_id"] = execution_id
        session.connection().execute(self.sql.requeue, params)
        self.announce(session, execution_id, workflow_id, options, available_at, now)

    def withdraw(self, session: Session, execution_id: Any) -> None:
        """Take an execution's message out of the outbox."""
        session.connection().execute(self.sql.withdraw, {"hp_execution_id": execution_id})

    def announce(self, session: Session, execution_id: Any, workflow_id: Any,
                 options: MessageOptions, available_at: datetime, now: datetime) -> None:
        """Arrange the publication of an outbox row this session wrote: at once after
        the commit when it is due, else by a relay."""
        from flask_geneva.extension import require_state

        state = require_state()
        remember_for_commit(session, PendingMessage(
            state, execution_id, options.queue_name, options.priority, options.time_limit_ms,
            available_at, now, workflow_id,
        ))  # fmt: skip
        if available_at > now:
            self._wake_relays(session, available_at)

    def _wake_relays(self, session: Session, available_at: datetime) -> None:
        """Hook: tell waiting relays a new due time comes (PostgreSQL's NOTIFY)."""

    def _scheduling_params(self, workflow_id: Any, step_name: str, run_at: datetime,
                           now: datetime, options: MessageOptions) -> dict[str, Any]:
        params: dict[str, Any] = {
            "hp_workflow_id": workflow_id, "hp_next_step": step_name, "hp_run_at": run_at,
            "hp_now": now, "hp_queue_name": options.queue_name,
            "hp_priority": options.priority, "hp_time_limit_ms": options.time_limit_ms,
            **self._new_key(),
        }  # fmt: skip
        params["hp_published_at"], params["hp_publish_count"] = published_marks(run_at, now)
        return params

    def _new_key(self) -> dict[str, Any]:
        return {"hp_new_id": uuid.uuid4()} if self.uuid_keys else {}

    # -- giving a claim back -------------------------------------------------------------

    def give_back(self, session: Session, execution_id: Any, workflow_id: Any, *,
                  now: datetime, options: MessageOptions) -> bool:
        """Undo the claim of an execution whose body never started: ``scheduled`` again
        (due now), with an outbox row, the workflow ``ready``. False, having written
        nothing, when it is no longer in progress, or is not ``workflow_id``'s (the
        claim's commit failed and SQLite gave its id to another workflow's execution)."""
        locked = self.lock_states(session, execution_id)
        if locked is None or locked.execution_state != StepState.IN_PROGRESS:
            return False
        if locked.workflow_id != workflow_id:
            return False
        connection = session.connection()
        params = {"hp_execution_id": execution_id, "hp_workflow_id": workflow_id, "hp_now": now}
        connection.execute(self.sql.unclaim, params)
        connection.execute(self.sql.ready_again, params)
        self.enqueue(session, execution_id, workflow_id, options, now, now)
        return True

    # -- warming up ----------------------------------------------------------------------

    def warm_up(self, session: Session) -> None:
        """Run the hot statements once on ids that match nothing, then roll back, so that
        a worker's first steps do not pay for compiling them (several ms each)."""
        nothing = uuid.UUID(int=0) if self.uuid_keys else -1
        now = utcnow()
        target = Target(nothing, nothing, "", 0)
        options = MessageOptions("")
        returned = after_body(None)
        try:
            self.lock_objects(session, nothing)
            self.claim(session, nothing, nothing, "", now, None)
            for following, claim_next in ((None, False), (("", NO_WAIT), False),
                                          (("", NO_WAIT), True)):
                self.finalize(session, target, plan_for(returned, "", following), now,
                              options=options, claim_next=claim_next)
            for hero_class in self._recent_hero_classes(session):
                session.execute(
                    self.sql.lock_with_hero(hero_class), {"hp_execution_id": nothing}
                ).all()
                self.lock_states_with_hero(session, nothing, hero_class)
                self.finalize_with_hero(
                    session, target, plan_for(returned, "", ("", NO_WAIT)), now,
                    options=options, message_id=None, hero_class=hero_class,
                )  # fmt: skip
        finally:
            session.rollback()


def _prefixed(values: dict[str, Any]) -> dict[str, Any]:
    return {f"hp_{key}": value for key, value in values.items()}


def _inserted_key(result: Any) -> Any:
    key = result.inserted_primary_key
    assert key is not None
    return key[0]
