"""A step whose transaction the database ended is recorded, or run again, at once.

A deadlock, a serialization failure, a lock wait that timed out or a lost connection
can end the transaction in which a step's body and its finalize write: nothing of the
step is recorded, so its execution is still ``in_progress``. Left so, only housekeeping
would recover it, after ``GENEVA_STUCK_IN_PROGRESS_THRESHOLD`` (an hour by default).
Such an error is worth trying again, so the worker writes the outcome itself, in a new
transaction (on a new connection if the old one was lost), having checked under the
workflow's lock that nothing was recorded after all:

- a step that **failed** had its writes rolled back before the finalize: its outcome
  (its policy, its reattempts so far) is written as the finalize would have written it;
- a step whose body **returned** or called a flow-control method lost its writes with
  the transaction: the execution ends ``completed`` / ``recovered``, keeping the
  database's error, and the step runs again (at once, or after the wait of its
  ``reattempt(wait)``), as housekeeping's ``"reattempt"`` recovery does; with
  ``GENEVA_STUCK_RECOVERY_ACTION = "cancel"`` it ends ``canceled`` / ``recovered`` and the
  workflow is canceled, as housekeeping would.

The same holds when such an error escapes the step's body (its own statement or flush
met the deadlock or the lost connection): its execution ends recovered and the step
runs again. This is not a step failure (SPEC section 2: an error in geneva's own database work
never pauses the workflow). After :data:`RETRIES_IN_A_ROW` such runs of the same step in a
row, the execution is left to housekeeping: a conflict that comes back every time is
not a passing one. Such a recovered attempt neither counts as a reattempt nor resets
the count (:func:`flask_geneva.finalizing.prior_reattempts`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva import machine
from flask_geneva.logs import logger
from flask_geneva.machine import NO_WAIT, Move, Transition
from flask_geneva.runs import Claim, following, message_options
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.store import Target, store_for
from flask_geneva.text import quoted, shorten
from flask_geneva.timeutil import utcnow

#: How many executions of one step in a row may end this way; the next is left to
#: housekeeping.
RETRIES_IN_A_ROW: Final = 3
#: How much of the database's error message a log line quotes.
CAUSE_LENGTH: Final = 300

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
    number = getattr(original, "errno", None)  # MariaDB Connector/Python keeps it there
    if number is None and arguments:
        number = arguments[0]  # PyMySQL and mysqlclient: the first argument
    if number in _TRANSIENT_MYSQL_ERRORS:
        return True  # its SQLSTATE says little: a lock wait timeout's is HY000
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if not isinstance(sqlstate, str):
        return False
    return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASS) or sqlstate == _LOCK_NOT_AVAILABLE


def run_again(
    geneva: Any,
    claim: Claim,
    database_error: BaseException,
    *,
    step_error: BaseException | None,
    redecide: Callable[[Session], Transition],
    log: Any = logger,
) -> bool:
    """Write, in a new transaction, what becomes of ``claim``'s execution now that
    ``database_error`` ended the transaction of its body or finalize. Needs an app
    context; never raises. False only when the new transaction failed too (the caller
    logs the original error; housekeeping recovers the execution); True otherwise,
    having logged what it did, or why nothing (recorded after all, recovered meanwhile,
    or the fourth time in a row: left to housekeeping).

    ``step_error``: the step failed and neither its writes nor a handler's were in the
    lost transaction, so its outcome (``redecide``: its policy, its reattempts so far) is
    written as the finalize would have. Otherwise (None) the step's writes are lost: the
    execution ends recovered and the step runs again, at once the first time, one and
    two seconds later the next ones, or after the wait of a ``reattempt(wait)`` it
    called; with ``GENEVA_STUCK_RECOVERY_ACTION = "cancel"`` the workflow is canceled
    instead, as housekeeping would.
    """
    from flask_geneva.extension import require_state

    session: Session = geneva.db.session()
    session.rollback()
    cause = database_error
    if isinstance(database_error, sa.exc.DBAPIError) and database_error.orig is not None:
        cause = database_error.orig
    action = require_state().config.stuck_recovery_action
    described = f"{type(cause).__name__}: {shorten(str(cause), CAUSE_LENGTH)}"
    try:
        written = _write(session, geneva, claim, described, cause, step_error, redecide,
                         action, log)  # fmt: skip
        if written:
            session.commit()
        else:
            session.rollback()
    except sa.exc.SQLAlchemyError as error:
        session.rollback()
        log.warning("could not record execution %s in a new transaction either (%s)",
                    claim.subject.execution_id, type(error).__name__)  # fmt: skip
        return False
    if written:
        log.warning("the database ended the transaction of execution %s (%s); %s",
                    claim.subject.execution_id, described, written)  # fmt: skip
    return True


def _write(
    session: Session,
    geneva: Any,
    claim: Claim,
    described: str,
    cause: BaseException,
    step_error: BaseException | None,
    redecide: Callable[[Session], Transition],
    action: str,
    log: Any,
) -> str:
    """Lock, check and write; what was done, in words, or "" when nothing was (it was
    recorded after all, or recovered meanwhile, or is left to housekeeping: logged)."""
    subject = claim.subject
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
        return ""  # it was recorded after all, or recovered meanwhile
    execution = session.get(geneva.StepExecution, subject.execution_id, populate_existing=True)
    if execution is None:
        return ""
    step_name = execution.step_name
    target = Target(subject.workflow_id, subject.execution_id, step_name, locked.execution_count)
    options = message_options(type(workflow))
    now = utcnow()
    transition = redecide(session)
    if step_error is not None:
        plan = machine.plan(transition, step_name, following(claim.definition, step_name))
        store.apply(session, target, plan, now, options=options, withdraw=False,
                    error=step_error if transition.records_error else None)  # fmt: skip
        return f"the step's failure is recorded ({transition.outcome})"
    if action == "cancel":
        retry = machine.conflict_retry("cancel")
    else:
        in_a_row = _retried_in_a_row(session, geneva, execution)
        if in_a_row >= RETRIES_IN_A_ROW:
            log.error(
                "the database ended the transaction of execution %s (%s), the %s time in "
                "a row for step %s; it stays in progress and housekeeping will recover it",
                subject.execution_id, described, _ordinal(RETRIES_IN_A_ROW + 1),
                quoted(step_name),
            )  # fmt: skip
            return ""
        # The first run again at once, the next ones a little later (one second, then
        # two): two transactions that met once are likely to meet again at once.
        waited = transition.wait if transition.move == Move.REPEAT else NO_WAIT
        retry = machine.conflict_retry("reattempt",
                                       wait=max(waited, timedelta(seconds=in_a_row)))
    store.apply(
        session, target, machine.plan(retry, step_name, None), now, options=options,
        error=cause,
        # A step waiting for a signal keeps its timeout's end, as housekeeping's recovery.
        keep_deadline=execution.scheduled_for if execution.waiting_for is not None else None,
    )  # fmt: skip
    if retry.move == Move.CANCEL:
        return "the workflow is canceled (GENEVA_STUCK_RECOVERY_ACTION is \"cancel\")"
    return f"its step {quoted(step_name)} is scheduled again" + (
        f" in {retry.wait}" if retry.wait else " at once"
    )


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
