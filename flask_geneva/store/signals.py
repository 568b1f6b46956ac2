"""The store's writes for signals (SPEC section 11), shared by every dialect.

A signal is stored under its workflow's row lock, so the signals of one workflow are
written and taken one transaction at a time: none is taken twice. A pending signal is
*free* (``execution_id`` NULL) until a step takes it; then it is *held* by that step
(``execution_id`` names the latest attempt) until an end in
:data:`~flask_geneva.machine.CONSUMING_ENDS` consumes it. A workflow holds at most one
signal at a time, always for the step it is at.

A step that waits is a ``scheduled`` execution with ``waiting_for`` set and
``scheduled_for`` at the end of its timeout (NULL without one). It has an outbox row only
when something can wake it: a matching signal (due now) or its timeout (due then).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva.states import SignalState, StepState
from flask_geneva.store.values import MessageOptions
from flask_geneva.waiting import SignalWait


class SignalStatements:
    """The prebuilt statements over ``geneva_signals``."""

    def __init__(self, geneva: Any) -> None:
        self.model = model = geneva.WorkflowSignal
        self.table = table = model.__table__
        executions = geneva.StepExecution.__table__
        workflow_id = sa.bindparam("sg_workflow_id", type_=table.c.workflow_id.type)
        pending = table.c.state == SignalState.PENDING
        self.held = (
            sa.select(model)
            .where(model.workflow_id == workflow_id, model.state == SignalState.PENDING,
                   model.execution_id.is_not(None))
            .order_by(model.id)
            .limit(1)
        )  # fmt: skip
        #: What a claim may take: the held signal first, then the free ones of the name,
        #: oldest first (one statement).
        self.candidates = (
            sa.select(model)
            .where(model.workflow_id == workflow_id, model.state == SignalState.PENDING,
                   sa.or_(model.execution_id.is_not(None),
                          model.name == sa.bindparam("sg_name", type_=table.c.name.type)))
            .order_by(model.execution_id.is_(None), model.id)
        )  # fmt: skip
        self.any_pending = sa.select(
            sa.exists().where(
                table.c.workflow_id == workflow_id,
                pending,
                sa.or_(
                    table.c.execution_id.is_not(None),
                    table.c.name == sa.bindparam("sg_name", type_=table.c.name.type),
                ),
            )
        )
        self.by_key = sa.select(model).where(
            model.workflow_id == workflow_id,
            model.name == sa.bindparam("sg_name", type_=table.c.name.type),
            model.idempotency_key == sa.bindparam("sg_key", type_=table.c.idempotency_key.type),
        )
        self.hold = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("sg_id", type_=table.c.id.type))
            .values(execution_id=sa.bindparam("sg_execution_id", type_=table.c.id.type))
        )
        self.consume = (
            sa.update(table)
            .where(table.c.workflow_id == workflow_id, pending,
                   table.c.execution_id.is_not(None))
            .values(
                state=SignalState.CONSUMED,
                consumed_at=sa.bindparam("sg_now", type_=table.c.consumed_at.type),
                execution_id=sa.func.coalesce(
                    sa.bindparam("sg_execution_id", type_=table.c.id.type),
                    table.c.execution_id,
                ),
            )
        )  # fmt: skip
        self.waiting = (
            sa.select(executions.c.id, executions.c.scheduled_for)
            .where(executions.c.workflow_id == workflow_id,
                   executions.c.state == StepState.SCHEDULED,
                   executions.c.waiting_for == sa.bindparam("sg_name", type_=table.c.name.type))
            .with_for_update()
        )  # fmt: skip
        self.stop_waiting = (
            sa.update(executions)
            .where(executions.c.id == sa.bindparam("sg_execution_id", type_=table.c.id.type))
            .values(waiting_for=None)
        )


class SignalWrites:
    """What a :class:`~flask_geneva.store.Store` does with signals."""

    geneva: Any

    @property
    def signal_sql(self) -> SignalStatements:
        statements = self.__dict__.get("_signal_sql")
        if statements is None:
            statements = self.__dict__["_signal_sql"] = SignalStatements(self.geneva)
        return statements

    # -- sending -------------------------------------------------------------------------

    def stored_signal(self, session: Session, workflow_id: Any, name: str, key: str) -> Any:
        """The signal stored before with this idempotency key, or None."""
        return session.scalars(
            self.signal_sql.by_key,
            {"sg_workflow_id": workflow_id, "sg_name": name, "sg_key": key},
        ).first()

    def store_signal(self, session: Session, workflow_id: Any, name: str, payload: Any,
                     key: str | None, now: datetime) -> Any:
        """Add a pending signal for a workflow whose row the caller has locked."""
        signal = self.signal_sql.model(
            workflow_id=workflow_id, name=name, payload=payload, idempotency_key=key,
            state=SignalState.PENDING, created_at=now,
        )  # fmt: skip
        session.add(signal)
        session.flush()  # the caller's pending writes go too, as autoflush would
        return signal

    def wake_waiting(self, session: Session, workflow_id: Any, name: str, now: datetime,
                     options: MessageOptions) -> bool:
        """Make the workflow's execution that waits for ``name`` due now (its outbox row
        moved to now); False when none waits for it."""
        row = session.connection().execute(
            self.signal_sql.waiting, {"sg_workflow_id": workflow_id, "sg_name": name}
        ).first()
        if row is None:
            return False
        self.withdraw(session, row.id)
        self.enqueue(session, row.id, workflow_id, options, now, now)
        return True

    # -- taking and consuming ------------------------------------------------------------

    def held_signal(self, session: Session, workflow_id: Any) -> Any:
        """The signal the workflow's current step took in an earlier attempt, or None."""
        return session.scalars(self.signal_sql.held, {"sg_workflow_id": workflow_id}).first()

    def signal_candidates(self, session: Session, workflow_id: Any, name: str) -> Any:
        """The signal the workflow's step holds (first, if any), then the pending signals
        named ``name`` no step has taken, oldest first."""
        return session.scalars(
            self.signal_sql.candidates, {"sg_workflow_id": workflow_id, "sg_name": name}
        )

    def hold_signal(self, session: Session, signal: Any, execution_id: Any) -> None:
        """Give ``signal`` to the execution that runs with it (still pending)."""
        session.connection().execute(
            self.signal_sql.hold, {"sg_id": signal.id, "sg_execution_id": execution_id}
        )
        sa.orm.attributes.set_committed_value(signal, "execution_id", execution_id)

    def consume_signal(self, session: Session, workflow_id: Any, execution_id: Any,
                       now: datetime) -> None:
        """Consume the signal the workflow holds, if any."""
        session.connection().execute(self.signal_sql.consume, {
            "sg_workflow_id": workflow_id, "sg_execution_id": execution_id, "sg_now": now,
        })  # fmt: skip

    def stop_waiting(self, session: Session, execution_id: Any) -> None:
        """Mark a waiting execution as no longer waiting (it runs now)."""
        session.connection().execute(
            self.signal_sql.stop_waiting, {"sg_execution_id": execution_id}
        )

    # -- waiting -------------------------------------------------------------------------

    def wait_plan(self, session: Session, workflow_id: Any, wait: SignalWait, now: datetime,
                  *, fresh: bool = False) -> tuple[bool, datetime | None, datetime | None]:
        """How a newly scheduled execution of a step that waits for ``wait`` starts:
        ``(waits, deadline, wake_at)``. It does not wait when the workflow holds a signal
        (a retry runs with it); otherwise its deadline is the end of the timeout, and it
        wakes now when a matching signal is pending, at the deadline otherwise (None:
        no outbox row). ``fresh``: a workflow just created, which has no signals."""
        deadline = None if wait.timeout is None else now + wait.timeout
        if fresh:
            return True, deadline, deadline
        if self.held_signal(session, workflow_id) is not None:
            return False, None, now
        pending = session.connection().execute(
            self.signal_sql.any_pending, {"sg_workflow_id": workflow_id, "sg_name": wait.name}
        ).scalar()
        return True, deadline, now if pending else deadline

    def release_time(self, session: Session, workflow_id: Any, execution: Any,
                     now: datetime) -> datetime | None:
        """When a kept execution runs after ``resume()``: at once if overdue; a waiting one
        at once when a signal for it is pending, at its deadline otherwise (None: it
        waits without one and needs no message)."""
        if execution.waiting_for is None:
            return execution.scheduled_for
        pending = session.connection().execute(
            self.signal_sql.any_pending,
            {"sg_workflow_id": workflow_id, "sg_name": execution.waiting_for},
        ).scalar()
        return now if pending else execution.scheduled_for

    # Provided by Store.
    def withdraw(self, session: Session, execution_id: Any) -> None:
        raise NotImplementedError  # pragma: no cover

    def enqueue(self, session: Session, execution_id: Any, workflow_id: Any,
                options: MessageOptions, available_at: datetime, now: datetime) -> None:
        raise NotImplementedError  # pragma: no cover
