"""Running one step execution: claim → run → decide → apply.

1. **Claim** (:mod:`flask_geneva.claiming`, one transaction): lock, check, evaluate the
   preconditions, mark in progress, commit.
2. **Run** the step body outside any geneva lock, in ``db.session``
   (:mod:`flask_geneva.body`).
3. **Decide and apply** (:mod:`flask_geneva.finalizing`, one transaction together with
   the body's own writes): the state machine (:mod:`flask_geneva.machine`) decides the
   transition, the store (:mod:`flask_geneva.store`) locks again and writes it. An
   unhandled exception rolls the body's writes back first and records the failure.

A worker's inline run (:mod:`flask_geneva.inline`) goes on with what the finalize hands
it: the next execution already claimed (:func:`run_claimed`), or one to claim
(:func:`execute_step` again). A claim whose body cannot start is given back
(:func:`give_back`).

An error in geneva's own database work is not a step failure: it is logged, the
transaction is rolled back, and the execution is left for the relay (unclaimed) or for
housekeeping (in progress).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva import claiming, signals
from flask_geneva.body import performed_outcome, run_body, run_handler
from flask_geneva.conflicts import is_transient, run_again
from flask_geneva.finalizing import decide, finalize
from flask_geneva.flow import FlowControlSignal
from flask_geneva.ids import parse_execution_id
from flask_geneva.loading import attach_as_loaded
from flask_geneva.logs import logger, workflow_logger
from flask_geneva.policies import resolve_policy
from flask_geneva.runs import STEP_FAILURES, Claim, ClaimedStep, StepResult, message_options, send
from flask_geneva.store import store_for
from flask_geneva.timeutil import utcnow
from flask_geneva.workflow import RECEIVED_SIGNAL

__all__ = [
    "EARLY_TOLERANCE",
    "EARLY_WAIT_MAX",
    "PRELOCK",
    "STEP_FAILURES",
    "ClaimedStep",
    "StepResult",
    "coerce_execution_id",
    "execute_step",
    "give_back",
    "run_claimed",
]

#: See :mod:`flask_geneva.claiming`; read from here at each claim (tests widen them).
EARLY_TOLERANCE: timedelta = claiming.EARLY_TOLERANCE
EARLY_WAIT_MAX: timedelta = claiming.EARLY_WAIT_MAX
PRELOCK: timedelta = claiming.PRELOCK


def coerce_execution_id(geneva: Any, value: Any) -> Any:
    """The primary key carried by a step message, or raise ValueError naming the problem."""
    return parse_execution_id(geneva, value)


def execute_step(
    geneva: Any,
    execution_id: Any,
    *,
    message_id: str | None = None,
    ignore_schedule: bool = False,
    reraise: bool = False,
    inline_next: bool = False,
    inline_deadline: float | None = None,
    timeout_elapsed: bool = False,
) -> StepResult | None:
    """Run one step execution if it is due and still scheduled; never runs a body twice.

    Returns None when nothing ran (unknown id, already finished, paused workflow, not
    yet due, or a database error that leaves the execution for recovery). With
    ``reraise`` the step's exception propagates after its outcome is committed. With
    ``inline_next``, when the step schedules the workflow's next step due at once, the
    caller runs that step itself (a worker saves a broker round trip per step that way):
    the result's ``claimed_next`` holds it already claimed, or, when its preconditions
    must be evaluated first, ``continue_with`` names it (its message was not published).
    ``inline_deadline`` (a ``time.monotonic()`` value) ends that once it has passed: the
    next step is then published as usual. ``timeout_elapsed`` (the testing helpers')
    takes a step that waits for a signal to have reached its timeout.
    """
    session: Session = geneva.db.session()
    try:
        key = coerce_execution_id(geneva, execution_id)
    except (TypeError, ValueError) as error:
        logger.error("ignoring a malformed step message: %s", error)
        return None
    started = time.perf_counter()
    try:
        claim = claiming.claim(
            session, store_for(geneva, session), key, message_id, ignore_schedule, started,
            early_tolerance=EARLY_TOLERANCE, early_wait_max=EARLY_WAIT_MAX, prelock=PRELOCK,
            timeout_elapsed=timeout_elapsed,
        )  # fmt: skip
    except sa.exc.SQLAlchemyError:
        session.rollback()
        logger.exception(
            "database error while claiming step execution %s; it stays scheduled and the "
            "relay will deliver it again",
            key,
        )
        return None
    if claim is None or isinstance(claim, StepResult):
        if reraise and isinstance(claim, StepResult) and claim.exception is not None:
            raise claim.exception
        return claim
    inline_until = _inline_until(inline_next, inline_deadline)
    result = _run_and_finalize(session, claim, started, inline_until, message_id)
    if reraise and result is not None and result.exception is not None:
        raise result.exception
    return result


def run_claimed(
    geneva: Any,
    claimed: ClaimedStep,
    *,
    inline_next: bool = False,
    inline_deadline: float | None = None,
) -> StepResult | None:
    """Run an execution that :func:`execute_step` already claimed (``claimed_next``) in
    the current app context, then finalize it like any other.

    Should anything fail before its body starts, the claim is given back: the execution
    is ``scheduled`` again, with an outbox row, and published after that commit.
    """
    session: Session = geneva.db.session()
    started = time.perf_counter()
    try:
        workflow = attach_as_loaded(session, claimed.workflow_class, claimed.workflow_values)
        execution = attach_as_loaded(session, geneva.StepExecution, claimed.execution_values)
        if claimed.hero is not None:
            hero_class, hero_values = claimed.hero
            workflow.__dict__["_geneva_hero_cache"] = _hero_in(session, hero_class, hero_values)
        send(signals.precondition_checked, claimed.subject, "passed", None, started)
    except BaseException as error:
        logger.error(
            "could not set up the claimed step execution %s; giving it back to be run again",
            claimed.subject.execution_id,
            exc_info=True,
        )
        give_back(geneva, claimed)
        if isinstance(error, STEP_FAILURES):
            return None
        raise
    claim = Claim(workflow, execution, claimed.step, claimed.definition, claimed.subject)
    inline_until = _inline_until(inline_next, inline_deadline)
    return _run_and_finalize(session, claim, started, inline_until, claimed.message_id)


def _hero_in(session: Session, hero_class: type, values: dict[str, Any]) -> Any:
    """The hero the step before read under the lock, in this session: the one already
    there, or one built from those values (no ``SELECT``)."""
    mapper: Any = sa.inspect(hero_class)
    key_attribute = mapper.get_property_by_column(mapper.primary_key[0]).key
    key = mapper.identity_key_from_primary_key([values.get(key_attribute)])
    existing = session.identity_map.get(key)
    if existing is not None:
        return existing
    return attach_as_loaded(session, hero_class, values)


def _inline_until(inline_next: bool, deadline: float | None) -> float | None:
    """Until when (``time.monotonic()``) a step may hand its successor to the caller."""
    if not inline_next:
        return None
    return math.inf if deadline is None else deadline


def give_back(geneva: Any, claimed: ClaimedStep) -> None:
    """Undo a claim whose body never started: the execution ``scheduled`` again, with
    its outbox row (published after the commit), the workflow ``ready``. Plain
    statements: loading the objects may be what failed. Needs an app context; never
    raises (a database error leaves the execution to housekeeping, as after any claim)."""
    session: Session = geneva.db.session()
    # Not rollback(): after an ``after_commit`` listener raised, the session is left
    # "committed" and only close() (which rolls back whatever is open) resets it.
    session.close()
    subject = claimed.subject
    try:
        store_for(geneva, session).give_back(
            session, subject.execution_id, subject.workflow_id, now=utcnow(),
            options=message_options(claimed.workflow_class),
        )  # fmt: skip
        session.commit()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        logger.exception(
            "database error while giving back step execution %s; it stays in progress and "
            "housekeeping will recover it",
            subject.execution_id,
        )


def _ended_by_the_database(
    session: Session, claim: Claim, error: BaseException, log: Any,
    call: FlowControlSignal | None = None,
) -> None:
    """The database ended the step's transaction while its body (or handler) ran: record
    it and run the step again (:mod:`flask_geneva.conflicts`), or leave it in progress
    for housekeeping."""
    session.rollback()
    geneva = type(claim.workflow)._geneva
    if not run_again(geneva, claim, error, step_error=None, log=log,
                     redecide=lambda again: decide(again, claim, call, None, None, None)):
        log.error(
            "the database ended the transaction of execution %s while its step ran (%s); "
            "it stays in progress and housekeeping will recover it",
            claim.subject.execution_id, type(error).__name__,
        )  # fmt: skip


def _run_and_finalize(
    session: Session,
    claim: Claim,
    started: float,
    inline_until: float | None = None,
    message_id: str | None = None,
) -> StepResult | None:
    workflow, execution, step, subject = claim.workflow, claim.execution, claim.step, claim.subject
    log = workflow_logger(workflow, execution)
    call = None
    error: BaseException | None = claim.precondition_error
    performed = "exception"
    workflow.__dict__[RECEIVED_SIGNAL] = claim.signal
    if error is None:  # a precondition that raised leaves only the handler to run
        call, error = run_body(session, workflow, execution, step, subject,
                               timed_out=claim.timed_out)
        performed = performed_outcome(call, error)

    policy = None
    handler_call = None
    if error is not None and is_transient(error):
        # The database ended the step's transaction under it (a deadlock, a lost
        # connection): not the step's failure (SPEC section 2); it runs again (after
        # the wait of a reattempt(wait) it called before its writes failed to flush).
        _ended_by_the_database(session, claim, error, log, call)
        return None
    call = None if error is not None else call
    if error is not None:
        session.rollback()  # the body's writes go; the failure is recorded below
        policy = resolve_policy(step.on_exception, claim.definition.class_policies, error)
        handler_call, error = run_handler(session, workflow, execution, policy, error)
        if is_transient(error):  # the handler's own statements met it
            _ended_by_the_database(session, claim, error, log)
            return None

    # Checked once the body has run: a long step hands its successor to the broker.
    inline_next = inline_until is not None and time.monotonic() < inline_until
    try:
        session.flush()
        transition = decide(session, claim, call, error, policy, handler_call)
        finished = finalize(
            session, claim, transition, error, inline_next=inline_next, message_id=message_id
        )
        if finished is None:
            session.rollback()
            log.warning(
                "execution %s was recovered while its step ran; discarding the step's outcome",
                subject.execution_id,
            )
            return None
        # The store's statements bypass the objects: a session that keeps its objects
        # after commit must read the rows again (the commit expires them otherwise).
        if not session.expire_on_commit:
            session.expire(workflow)
            session.expire(execution)
        try:
            session.commit()
        except BaseException:
            # The commit may have gone through before this (an ``after_commit`` listener
            # raised, a time limit struck): a next step it claimed would wait for
            # housekeeping. Giving it back is a no-op when nothing was committed.
            if finished.claimed_next is not None:
                give_back(type(workflow)._geneva, finished.claimed_next)
            raise
    except sa.exc.SQLAlchemyError as database_error:
        session.rollback()
        # A handler's writes were in the lost transaction too: then the step runs again
        # (and its handler with it) rather than its decided outcome without them.
        settled = error is not None and (policy is None or policy.handler is None)
        if is_transient(database_error) and run_again(
            type(workflow)._geneva, claim, database_error,
            step_error=error if settled else None, log=log,
            redecide=lambda again: decide(again, claim, call, error, policy, handler_call),
        ):  # fmt: skip
            return None
        log.exception(
            "database error while finalizing execution %s; it stays in progress and "
            "housekeeping will recover it",
            subject.execution_id,
        )
        return None
    if error is not None:
        log.warning("step failed with %s: %s", type(error).__name__, error)
    claimed_next, continue_with = finished.claimed_next, finished.continue_with
    if claim.precondition_error is not None:
        send(signals.precondition_checked, subject, "exception", error, started)
        return StepResult(
            subject.execution_id, step.name, "exception", error, continue_with, claimed_next
        )
    try:
        send(
            signals.step_finalized, subject, performed, error, started,
            workflow_state=finished.workflow_state, step_state=finished.step_state,
        )  # fmt: skip
    except BaseException:
        # Interrupted (a time limit, a receiver raising a BaseException): the claimed
        # next step will not run here.
        if claimed_next is not None:
            give_back(type(workflow)._geneva, claimed_next)
        raise
    return StepResult(
        subject.execution_id, step.name, performed, error, continue_with, claimed_next
    )
