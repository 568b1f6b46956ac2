"""A step whose transaction the database ended runs again at once.

A deadlock, a serialization failure, a lock wait that timed out or a lost connection
ends the transaction in which a step's body and its finalize write: the body's writes
are rolled back and nothing of the step is recorded, so its execution is still
``in_progress``. Left so, only housekeeping would recover it, after
``GENEVA_STUCK_IN_PROGRESS_THRESHOLD`` (an hour by default). Such an error is worth
trying again, so the worker recovers the execution itself, in a new transaction (on a
new connection if the old one was lost), having checked under the workflow's lock that
nothing was recorded after all: the execution ends ``completed`` / ``recovered``,
keeping the database's error, and the same step is scheduled again at once, as
housekeeping's ``"reattempt"`` recovery does. This is not a step failure (SPEC section
2: an error in geneva's own database work never pauses the workflow).

After :data:`RETRIES_IN_A_ROW` such recoveries of the same step in a row, the execution
is left to housekeeping: a conflict that comes back every time is not a passing one.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva import machine
from flask_geneva.logs import logger
from flask_geneva.runs import Subject, message_options
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.store import Target, store_for
from flask_geneva.timeutil import utcnow

#: How many executions of one step in a row may end this way; the next is left to
#: housekeeping.
RETRIES_IN_A_ROW: Final = 3

#: SQLSTATE codes of a transaction the server ended, worth running again: the class of
#: serialization failures and deadlocks, and a lock wait past ``lock_timeout``.
_TRANSIENT_SQLSTATE_CLASS: Final = "40"
_LOCK_NOT_AVAILABLE: Final = "55P03"
#: MySQL / MariaDB error numbers: a deadlock, a lock wait that timed out.
_TRANSIENT_MYSQL_ERRORS: Final = frozenset({1213, 1205})


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` ended a transaction for a reason of its own, not of the work in
    it (a deadlock, a serialization failure, a lock wait timeout, a lost connection):
    the same work may well succeed when run again."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    arguments: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    if arguments and arguments[0] in _TRANSIENT_MYSQL_ERRORS:
        return True  # its SQLSTATE says little: a lock wait timeout's is HY000
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if not isinstance(sqlstate, str):
        return False
    return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASS) or sqlstate == _LOCK_NOT_AVAILABLE


def run_again(geneva: Any, subject: Subject, error: BaseException) -> bool:
    """Recover the execution of ``subject``, whose transaction ``error`` ended, and
    schedule its step again at once; True when it did. Needs an app context; never
    raises (what it cannot do stays for housekeeping, and is logged)."""
    session: Session = geneva.db.session()
    session.rollback()
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig else error
    try:
        recovered = _recover(session, geneva, subject, cause)
        if recovered:
            session.commit()
        else:
            session.rollback()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        logger.exception(
            "database error while scheduling step execution %s again; it stays in "
            "progress and housekeeping will recover it",
            subject.execution_id,
        )
        return False
    if recovered:
        logger.warning(
            "the database ended the transaction of execution %s (%s: %s); its step %r "
            "is scheduled again at once",
            subject.execution_id, type(cause).__name__, cause, subject.step_name,
        )  # fmt: skip
    return recovered


def _recover(session: Session, geneva: Any, subject: Subject, cause: BaseException) -> bool:
    store = store_for(geneva, session)
    workflow = store.lock_workflow(session, subject.workflow_id)
    locked = store.lock_states(session, subject.execution_id)
    if (
        workflow is None
        or locked is None
        or locked.workflow_id != subject.workflow_id
        or locked.execution_state != StepState.IN_PROGRESS
        or workflow.state != WorkflowState.PERFORMING
    ):
        return False  # it was recorded after all, or recovered meanwhile
    execution = session.get(geneva.StepExecution, subject.execution_id, populate_existing=True)
    if execution is None:
        return False
    if _retried_in_a_row(session, geneva, execution) >= RETRIES_IN_A_ROW:
        logger.error(
            "the database ended the transaction of execution %s (%s: %s), the %s time "
            "in a row for step %r; it stays in progress and housekeeping will recover it",
            subject.execution_id, type(cause).__name__, cause, _ordinal(RETRIES_IN_A_ROW + 1),
            subject.step_name,
        )  # fmt: skip
        return False
    step_name = execution.step_name
    store.apply(
        session,
        Target(subject.workflow_id, subject.execution_id, step_name, locked.execution_count),
        machine.plan(machine.conflict_retry(), step_name, None),
        utcnow(),
        options=message_options(type(workflow)),
        error=cause,
        # A step waiting for a signal keeps its timeout's end, as housekeeping's recovery.
        keep_deadline=execution.scheduled_for if execution.waiting_for is not None else None,
    )
    return True


def _retried_in_a_row(session: Session, geneva: Any, execution: Any) -> int:
    """How many executions of the same step directly before ``execution`` ended this way
    (recovered, with the database's error kept)."""
    model = geneva.StepExecution
    rows = session.execute(
        sa.select(model.step_name, model.outcome, model.error_class_name)
        .where(model.workflow_id == execution.workflow_id, model.sequence < execution.sequence)
        .order_by(model.sequence.desc())
        .limit(RETRIES_IN_A_ROW)
    ).all()
    count = 0
    for step_name, outcome, error_class_name in rows:
        if (
            step_name != execution.step_name
            or outcome != StepOutcome.RECOVERED
            or error_class_name is None
        ):
            break
        count += 1
    return count


def _ordinal(number: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(number, f"{number}th")
