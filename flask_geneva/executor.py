"""Running one step execution: claim → run → finalize.

1. **Claim** (one transaction): lock the workflow row, then the execution row; check that
   the execution is still ``scheduled`` and the workflow ``ready``; evaluate the
   preconditions (deleted hero, every ``cancel_if``, then ``skip_if``/``only_if``); mark the
   execution ``in_progress`` and the workflow ``performing``; remove the outbox row;
   commit. A precondition that ends the execution is applied in this same transaction.
2. **Run** the step body outside any geneva lock, in ``db.session``.
3. **Finalize** (one transaction, together with the body's own writes): lock again,
   check that the execution is still ``in_progress`` (housekeeping may have recovered it),
   apply the outcome, schedule what comes next, commit. An unhandled exception rolls the
   body's writes back first and records the failure.

In a worker's inline run (``inline_next``) the finalize of a step whose next step is due
at once and has no condition also claims that step (:func:`run_claimed` then runs it on
objects built from what the finalize returned); a claim whose body cannot start is given
back (:func:`give_back`).

An error in geneva's own database work is not a step failure: it is logged, the
transaction is rolled back, and the execution is left for the relay (unclaimed) or for
housekeeping (in progress).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified, set_committed_value

from flask_geneva import signals, transitions
from flask_geneva.dsl import StepDefinition, WorkflowDefinition, evaluate_condition
from flask_geneva.errors import StepNotDefinedError, WorkflowClassNotFoundError
from flask_geneva.flow import (
    CancelSignal,
    FinishSignal,
    FlowControlSignal,
    PauseSignal,
    ReattemptSignal,
    SkipSignal,
)
from flask_geneva.loading import attach_as_loaded, covers, mapped_columns, values_from
from flask_geneva.logs import logger, workflow_logger
from flask_geneva.models import json_snapshot
from flask_geneva.policies import ExceptionPolicy, resolve_policy
from flask_geneva.publishing import take_for_inline_run
from flask_geneva.scheduling import announce, is_postgresql, lock_workflow_and_execution
from flask_geneva.statements import hot_path
from flask_geneva.states import StepOutcome, StepState, WorkflowState
from flask_geneva.timeutil import utcnow

try:  # Dramatiq's time limit interrupts a step with a BaseException; it is a step failure.
    from dramatiq.middleware.time_limit import TimeLimitExceeded as _TimeLimitExceeded

    STEP_FAILURES: tuple[type[BaseException], ...] = (Exception, _TimeLimitExceeded)
except ImportError:  # pragma: no cover
    STEP_FAILURES = (Exception,)

#: A message may run its execution this much before ``scheduled_for`` (clock skew between
#: the relay's machine and the worker's).
EARLY_TOLERANCE: Final = timedelta(seconds=1)
#: A message that arrives at most this much before ``scheduled_for`` waits for it: the
#: relay publishes a waited step a little ahead (``Relay.lead``) so that the broker hop
#: and the consumer's poll are over by its due time, and the step starts on time.
EARLY_WAIT_MAX: Final = timedelta(milliseconds=250)
#: On PostgreSQL a waited step locks (and loads) its rows this much before its due time,
#: then checks its preconditions and writes the claim at the due time: the lock's round
#: trip is over by then. (SQLite locks the whole database, so there the step locks at its
#: due time.)
PRELOCK: Final = timedelta(milliseconds=5)


@dataclass
class StepResult:
    """What happened to one execution (for the testing helpers and the logs)."""

    execution_id: Any
    step_name: str
    #: ``precondition_checked`` outcome when a precondition ended it, else the
    #: ``step_performed`` outcome.
    outcome: str
    exception: BaseException | None = None
    #: With ``inline_next``: the workflow's next execution, due at once, that the caller
    #: should run now itself (its message was not published).
    continue_with: Any = None
    #: With ``inline_next``, instead of ``continue_with`` when the next step needs no
    #: precondition evaluated: that execution, already claimed in this step's
    #: transaction. Run it with :func:`run_claimed`, in a new app context.
    claimed_next: ClaimedStep | None = None


def coerce_execution_id(geneva: Any, value: Any) -> Any:
    """The primary key carried by a step message, or raise ValueError naming the problem."""
    if geneva.uuid_primary_keys:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value.strip())
            except ValueError:
                pass
        raise ValueError(f"a step message must carry a UUID as text, got {value!r}")
    key: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        key = value
    elif isinstance(value, str) and _INTEGER_ID.fullmatch(value.strip()):
        key = int(value)
    if key is None or not _MIN_KEY <= key <= _MAX_KEY:
        raise ValueError(f"a step message must carry an integer id, got {value!r}")
    return key


#: An integer id as text (ASCII digits only), and the range a BIGINT key can hold.
_INTEGER_ID: Final = re.compile(r"[+-]?[0-9]{1,19}")
_MIN_KEY: Final = -(2**63)
_MAX_KEY: Final = 2**63 - 1


def execute_step(
    geneva: Any,
    execution_id: Any,
    *,
    message_id: str | None = None,
    ignore_schedule: bool = False,
    reraise: bool = False,
    inline_next: bool = False,
    inline_deadline: float | None = None,
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
    next step is then published as usual.
    """
    session: Session = geneva.db.session()
    try:
        key = coerce_execution_id(geneva, execution_id)
    except (TypeError, ValueError) as error:
        logger.error("ignoring a malformed step message: %s", error)
        return None
    started = time.perf_counter()
    try:
        claim = _claim(session, geneva, key, message_id, ignore_schedule, started)
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


@dataclass(frozen=True)
class ClaimedStep:
    """A workflow's next execution, claimed in the transaction that finished the step
    before it (an inline run): what its rows hold, to run it without loading them."""

    workflow_class: type
    workflow_values: dict[str, Any]
    execution_values: dict[str, Any]
    step: StepDefinition
    definition: WorkflowDefinition
    subject: _Subject
    message_id: str | None


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
        _send(signals.precondition_checked, claimed.subject, "passed", None, started)
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
    claim = _Claim(workflow, execution, claimed.step, claimed.definition, claimed.subject)
    inline_until = _inline_until(inline_next, inline_deadline)
    return _run_and_finalize(session, claim, started, inline_until, claimed.message_id)


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
    state = current_app.extensions["geneva"]
    queue_name, priority, time_limit_ms = state.message_options_for(claimed.workflow_class)
    now = utcnow()
    try:
        given_back = hot_path(geneva).give_back(
            session,
            subject.execution_id,
            subject.workflow_id,
            now=now,
            queue_name=queue_name,
            priority=priority,
            time_limit_ms=time_limit_ms,
        )
        if given_back:
            announce(
                session, state, subject.execution_id, subject.workflow_id, queue_name,
                priority, time_limit_ms, now, now,
            )
        session.commit()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        logger.exception(
            "database error while giving back step execution %s; it stays in progress and "
            "housekeeping will recover it",
            subject.execution_id,
        )


@dataclass(frozen=True)
class _Subject:
    """What a step's signals and result name, read once while the rows are loaded (after
    a commit, reading them again would cost a query)."""

    sender: type
    workflow_id: Any
    workflow_class: str
    execution_id: Any
    step_name: str


@dataclass
class _Claim:
    workflow: Any
    execution: Any
    step: StepDefinition
    definition: WorkflowDefinition
    subject: _Subject
    #: Set when a precondition raised and an imperative handler must decide: the body
    #: does not run, the handler runs outside the lock like the body would.
    precondition_error: BaseException | None = None


def _claim(
    session: Session,
    geneva: Any,
    key: Any,
    message_id: str | None,
    ignore_schedule: bool,
    started: float,
    waited: bool = False,
) -> _Claim | StepResult | None:
    locked = lock_workflow_and_execution(session, geneva, key)
    if locked is None:
        session.rollback()
        logger.info("step execution %s does not exist; nothing to run", key)
        return None
    workflow, execution = locked
    log = workflow_logger(workflow, execution)
    if execution.state != StepState.SCHEDULED:
        session.rollback()
        log.info("execution %s is already %s; nothing to run", key, execution.state)
        return None
    if workflow.state != WorkflowState.READY:
        session.rollback()
        log.info("workflow is %s; execution %s stays scheduled", workflow.state, key)
        return None
    now = utcnow()
    if not ignore_schedule and execution.scheduled_for > now + EARLY_TOLERANCE:
        session.rollback()
        log.info("execution %s is not due until %s", key, execution.scheduled_for)
        return None
    # A step due at once never waits.
    if not ignore_schedule and execution.scheduled_for > execution.created_at:
        early = execution.scheduled_for - now
        prelock = PRELOCK if is_postgresql(session) else timedelta(0)
        if not waited and prelock < early <= EARLY_WAIT_MAX:
            # Published ahead of its due time: wait for it without holding the locks.
            session.rollback()
            time.sleep((early - prelock).total_seconds())
            return _claim(session, geneva, key, message_id, ignore_schedule, started, waited=True)
        if prelock:
            # Locked just ahead of the due time: the rest (checks, claim) comes at it.
            now = _wait_until_due(execution.scheduled_for, prelock, now)

    cls = type(workflow)
    subject = _Subject(
        sender=cls,
        workflow_id=workflow.id,
        workflow_class=cls.__name__ if cls.is_defined() else workflow.workflow_class,
        execution_id=execution.id,
        step_name=execution.step_name,
    )
    problem: Exception | None = None
    step: StepDefinition | None = None
    if not cls.is_defined():
        problem = WorkflowClassNotFoundError(
            f"workflow class {workflow.workflow_class!r} is not defined in this application; "
            f"restore the class (or set workflow_name on its new name), then resume "
            f"workflow #{workflow.id}, or cancel it"
        )
    else:
        step = cls._geneva_definition.get_step(execution.step_name)
        if step is None:
            problem = StepNotDefinedError(
                f"step {execution.step_name!r} is not defined in {cls.__name__} "
                f"(its steps: {', '.join(cls.step_names()) or 'none'}); restore the step and "
                f"resume workflow #{workflow.id}, or cancel it"
            )
    if problem is not None or step is None:
        _mark_started(execution, now, message_id)
        transitions.end_execution(execution, StepState.FAILED, StepOutcome.FAILED, now, problem)
        transitions.pause_at(workflow, execution.step_name, now)
        transitions.withdraw(session, workflow, execution)
        session.commit()
        log.error("%s", problem)
        _send(signals.precondition_checked, subject, "exception", problem, started)
        return StepResult(subject.execution_id, subject.step_name, "exception", problem)

    definition = cls._geneva_definition
    workflow.__dict__["_geneva_running"] = execution
    try:
        verdict, error = _check_preconditions(workflow, step, definition)
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    policy: ExceptionPolicy | None = None
    if verdict == "exception":
        assert error is not None
        policy = resolve_policy(step.on_exception, definition.class_policies, error)
    if verdict == "passed" or (policy is not None and policy.handler is not None):
        _mark_in_progress(session, workflow, execution, step.name, now, message_id)
        _commit_keeping_objects(session)
        if verdict == "passed":
            _send(signals.precondition_checked, subject, "passed", None, started)
        return _Claim(workflow, execution, step, definition, subject, precondition_error=error)

    # Set only now: the preconditions' queries would otherwise flush it on its own.
    _mark_started(execution, now, message_id)
    if verdict == "canceled":
        transitions.end_execution(execution, StepState.CANCELED, StepOutcome.CANCELED, now)
        transitions.cancel(workflow, now)
    elif verdict == "skipped":
        transitions.end_execution(execution, StepState.SKIPPED, StepOutcome.SKIPPED, now)
        workflow.previous_step_name = step.name
        transitions.advance(session, workflow, definition, step.name, now)
    else:
        assert error is not None and policy is not None
        _apply_failure(session, workflow, execution, step, definition, policy, error, None, now)
    transitions.withdraw(session, workflow, execution)
    session.commit()
    log.info("precondition ended execution %s: %s", subject.execution_id, verdict)
    _send(signals.precondition_checked, subject, verdict, error, started)
    return StepResult(subject.execution_id, step.name, verdict, error)


def _wait_until_due(due: datetime, window: timedelta, now: datetime) -> datetime:
    """Sleep, holding the step's locks, until ``due`` when it is at most ``window`` away
    (a step locked just ahead of its due time); the time to claim at."""
    early = due - utcnow()
    if early > window:  # up to EARLY_TOLERANCE early by a skewed clock: at once
        return now
    if early > timedelta(0):
        time.sleep(early.total_seconds())
    return max(utcnow(), due)


def _mark_in_progress(
    session: Session,
    workflow: Any,
    execution: Any,
    step_name: str,
    now: datetime,
    message_id: str | None,
) -> None:
    """The claim's writes as prebuilt statements (the hot path: no unit of work; one
    statement on PostgreSQL).

    The loaded objects are given the same values as committed state, so they stay
    current for the step body without being flushed again.
    """
    hot_path(type(workflow)._geneva).claim(
        session, execution.id, workflow.id, step_name, now, message_id
    )
    for target, values in (
        (execution, {"state": StepState.IN_PROGRESS, "started_at": now, "message_id": message_id}),
        (
            workflow,
            {"state": WorkflowState.PERFORMING, "current_step_name": step_name, "updated_at": now},
        ),
    ):
        for key, value in values.items():
            set_committed_value(target, key, value)


def _mark_started(execution: Any, now: datetime, message_id: str | None) -> None:
    execution.started_at = now
    execution.message_id = message_id


def _check_preconditions(
    workflow: Any, step: StepDefinition, definition: WorkflowDefinition
) -> tuple[str, BaseException | None]:
    """``("passed" | "canceled" | "skipped" | "exception", error)``."""
    try:
        workflow.__dict__.pop("_geneva_hero_cache", None)
        if not type(workflow).may_proceed_without_hero and workflow.hero is None:
            return "canceled", None
        for condition in definition.cancel_conditions:
            if evaluate_condition(condition, workflow):
                return "canceled", None
        if step.skip_if is not None and evaluate_condition(step.skip_if, workflow):
            return "skipped", None
        if step.only_if is not None and not evaluate_condition(step.only_if, workflow):
            return "skipped", None
    except CancelSignal:
        return "canceled", None
    except SkipSignal:
        return "skipped", None
    except FlowControlSignal as signal:
        return "exception", RuntimeError(
            f"{type(signal).__name__} cannot be used in a precondition; only cancel() and "
            f"skip() can"
        )
    except STEP_FAILURES as error:
        return "exception", error
    return "passed", None


def _run_and_finalize(
    session: Session,
    claim: _Claim,
    started: float,
    inline_until: float | None = None,
    message_id: str | None = None,
) -> StepResult | None:
    workflow, execution, step = claim.workflow, claim.execution, claim.step
    subject = claim.subject
    log = workflow_logger(workflow, execution)
    signal: FlowControlSignal | None = None
    error: BaseException | None = claim.precondition_error
    performed = "exception"
    if error is None:  # a precondition that raised leaves only the handler to run
        signal, error = _run_body(session, workflow, execution, step, subject)
        performed = _performed_outcome(signal, error)

    policy: ExceptionPolicy | None = None
    handler_signal: FlowControlSignal | None = None
    if error is not None:
        session.rollback()  # the body's writes go; the failure is recorded below
        policy = resolve_policy(step.on_exception, claim.definition.class_policies, error)
        handler_signal, error = _run_handler(session, workflow, execution, policy, error)

    # Checked once the body has run: a long step hands its successor to the broker.
    inline_next = inline_until is not None and time.monotonic() < inline_until
    try:
        session.flush()
        if error is None and signal is None:
            finished = _finalize_completed(session, claim, inline_next, message_id)
            # Its statements bypass the objects: a session that keeps its objects
            # after commit must read the rows again (the commit expires them otherwise).
            if not session.expire_on_commit:
                session.expire(workflow)
                session.expire(execution)
        else:
            finished = _finalize_with_objects(
                session, claim, signal, error, policy, handler_signal, inline_next
            )
        if finished is None:
            session.rollback()
            log.warning(
                "execution %s was recovered while its step ran; discarding the step's outcome",
                subject.execution_id,
            )
            return None
        workflow_state, step_state, continue_with = finished
        try:
            session.commit()
        except BaseException:
            # The commit may have gone through before this (an ``after_commit`` listener
            # raised, a time limit struck): a next step it claimed would wait for
            # housekeeping. Giving it back is a no-op when nothing was committed.
            if isinstance(continue_with, ClaimedStep):
                give_back(type(workflow)._geneva, continue_with)
            raise
    except sa.exc.SQLAlchemyError:
        session.rollback()
        log.exception(
            "database error while finalizing execution %s; it stays in progress and "
            "housekeeping will recover it",
            subject.execution_id,
        )
        return None
    if error is not None:
        log.warning("step failed with %s: %s", type(error).__name__, error)
    claimed_next = None
    if isinstance(continue_with, ClaimedStep):
        claimed_next, continue_with = continue_with, None
    if claim.precondition_error is not None:
        _send(signals.precondition_checked, subject, "exception", error, started)
        return StepResult(
            subject.execution_id, step.name, "exception", error, continue_with, claimed_next
        )
    try:
        _send(
            signals.step_finalized,
            subject,
            performed,
            error,
            started,
            workflow_state=workflow_state,
            step_state=step_state,
        )
    except BaseException:
        # Interrupted (a time limit, a receiver raising a BaseException): the claimed
        # next step will not run here.
        if claimed_next is not None:
            give_back(type(workflow)._geneva, claimed_next)
        raise
    return StepResult(
        subject.execution_id, step.name, performed, error, continue_with, claimed_next
    )


def _finalize_with_objects(
    session: Session,
    claim: _Claim,
    signal: FlowControlSignal | None,
    error: BaseException | None,
    policy: ExceptionPolicy | None,
    handler_signal: FlowControlSignal | None,
    inline_next: bool,
) -> tuple[str, str, Any] | None:
    """Finalize any other outcome (a flow-control call, an exception) on the locked ORM
    objects; the same return as :func:`_finalize_completed`."""
    rows = lock_workflow_and_execution(
        session, type(claim.workflow)._geneva, claim.subject.execution_id
    )
    locked, current = rows if rows is not None else (None, None)
    if locked is None or current is None or current.state != StepState.IN_PROGRESS:
        return None
    now = utcnow()
    step, definition = claim.step, claim.definition
    if error is not None:
        assert policy is not None
        _apply_failure(
            session, locked, current, step, definition, policy, error, handler_signal, now
        )
    else:
        _apply_signal(session, locked, current, step, definition, signal, now)
    continue_with = None
    if inline_next:
        continue_with = take_for_inline_run(session, claim.subject.workflow_id)
    return str(locked.state), str(current.state), continue_with


def _finalize_completed(
    session: Session, claim: _Claim, inline_next: bool, message_id: str | None
) -> tuple[str, str, Any] | None:
    """Finalize a body that returned normally, with prebuilt statements (the hot path).

    Writes what ``_apply_signal`` writes for a normal return: the execution completed,
    then the next step scheduled (or the workflow finished). Returns the workflow's and
    the execution's new states and the execution to run inline (a :class:`ClaimedStep`
    when it was claimed here too), or None when the execution is no longer in progress
    (housekeeping recovered it).
    """
    workflow, subject, step = claim.workflow, claim.subject, claim.step
    statements = hot_path(type(workflow)._geneva)
    now = utcnow()
    following = claim.definition.step_after(step.name)
    if following is None:
        if not statements.complete_and_finish(
            session, subject.execution_id, subject.workflow_id, step.name, now
        ):
            return None
        return WorkflowState.FINISHED.value, StepState.COMPLETED.value, None
    if inline_next and _may_claim_at_once(workflow, claim.definition, following):
        hero_found = _lock_and_check_hero(session, workflow, subject.execution_id)
        if hero_found is None:
            return None
        if hero_found:
            return _complete_and_claim_next(session, claim, following, now, message_id)
        # No hero (or its check raised): the next step is claimed the usual way.
    state = current_app.extensions["geneva"]
    queue_name, priority, time_limit_ms = state.message_options_for(type(workflow))
    run_at = now + following.wait
    new_id = statements.complete_and_advance(
        session,
        subject.execution_id,
        subject.workflow_id,
        step.name,
        next_step=following.name,
        run_at=run_at,
        now=now,
        queue_name=queue_name,
        priority=priority,
        time_limit_ms=time_limit_ms,
    )
    if new_id is None:
        return None
    announce(
        session, state, new_id, subject.workflow_id, queue_name, priority, time_limit_ms,
        run_at, now,
    )
    continue_with = take_for_inline_run(session, subject.workflow_id) if inline_next else None
    return WorkflowState.READY.value, StepState.COMPLETED.value, continue_with


def _may_claim_at_once(
    workflow: Any, definition: WorkflowDefinition, following: StepDefinition
) -> bool:
    """Whether the next step can be claimed in the finalize's transaction: it is due at
    once and its only precondition is the hero check (done in that transaction, under
    the lock, as the claim would do it)."""
    if following.wait or definition.cancel_conditions:
        return False
    if following.skip_if is not None or following.only_if is not None:
        return False
    model = type(workflow)
    return covers(model, hot_path(model._geneva).workflow_columns)


def _lock_and_check_hero(session: Session, workflow: Any, execution_id: Any) -> bool | None:
    """The claim's hero check, for a next step claimed in the finalize: under the lock
    of the workflow and the execution, taken first. True when the hero is there (or the
    class needs none), False when it is not or its check raised, None when the
    execution is no longer in progress."""
    model = type(workflow)
    if model.may_proceed_without_hero:
        return True
    locked = hot_path(model._geneva).lock_states(session, execution_id)
    if locked is None or locked.execution_state != StepState.IN_PROGRESS:
        return None
    workflow.__dict__.pop("_geneva_hero_cache", None)
    try:
        if not is_postgresql(session):
            return workflow.hero is not None
        # A failed query aborts a PostgreSQL transaction: only the savepoint's part is
        # undone, and the step before keeps its outcome.
        with session.begin_nested():
            return workflow.hero is not None
    except Exception:
        return False  # the usual claim loads it again and records what it raises


def _complete_and_claim_next(
    session: Session,
    claim: _Claim,
    following: StepDefinition,
    now: datetime,
    message_id: str | None,
) -> tuple[str, str, Any] | None:
    """The finalize of an inline run: this execution completed and the next one inserted
    already claimed (in progress), the workflow still performing. None, having written
    nothing, when the execution is no longer in progress."""
    workflow, subject = claim.workflow, claim.subject
    model = type(workflow)
    statements = hot_path(model._geneva)
    claimed = statements.complete_and_continue(
        session,
        subject.execution_id,
        subject.workflow_id,
        claim.step.name,
        next_step=following.name,
        now=now,
        message_id=message_id,
    )
    if claimed is None:
        return None
    new_id, row = claimed
    workflow_values = values_from(model, row)
    execution_model = model._geneva.StepExecution
    execution_values: dict[str, Any] = {key: None for key, _ in mapped_columns(execution_model)}
    execution_values.update(
        id=new_id,
        workflow_id=subject.workflow_id,
        sequence=workflow_values["execution_count"],
        step_name=following.name,
        state=StepState.IN_PROGRESS,
        scheduled_for=now,
        started_at=now,
        message_id=message_id,
        created_at=now,
    )
    next_subject = _Subject(
        sender=subject.sender,
        workflow_id=subject.workflow_id,
        workflow_class=subject.workflow_class,
        execution_id=new_id,
        step_name=following.name,
    )
    claimed_step = ClaimedStep(
        model,
        workflow_values,
        execution_values,
        following,
        claim.definition,
        next_subject,
        message_id,
    )
    # The state this outcome gives the workflow (its next step scheduled), as for any
    # normal return; that this worker has already claimed that step is its own affair.
    return WorkflowState.READY.value, StepState.COMPLETED.value, claimed_step


def _run_body(
    session: Session, workflow: Any, execution: Any, step: StepDefinition, subject: _Subject
) -> tuple[FlowControlSignal | None, BaseException | None]:
    """Run the step body and flush its writes; returns its flow-control call or error."""
    signal: FlowControlSignal | None = None
    error: BaseException | None = None
    body_started = time.perf_counter()
    workflow.__dict__["_geneva_running"] = execution
    try:
        try:
            snapshot = json_snapshot(workflow.data)
            step.perform(workflow)
        except FlowControlSignal as raised:
            signal = raised
        _keep_data_changes(workflow, snapshot)
        session.flush()  # the body's own writes: their errors are the step's
    except STEP_FAILURES as raised:
        error, signal = raised, None
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    outcome = _performed_outcome(signal, error)
    _send(signals.step_performed, subject, outcome, error, body_started)
    return signal, error


def _performed_outcome(signal: FlowControlSignal | None, error: BaseException | None) -> str:
    """The ``step_performed`` outcome: ``"completed"``, a flow-control name, or
    ``"exception"``."""
    if error is not None:
        return "exception"
    return signal.outcome if signal is not None else "completed"


def _keep_data_changes(workflow: Any, snapshot: str) -> None:
    """Mark ``data`` changed when step code changed it in place (nested values too).

    :raises TypeError: the new data is not JSON-serialisable (the step's failure).
    """
    if json_snapshot(workflow.data) != snapshot:
        json.dumps(workflow.data)
        flag_modified(workflow, "data")


def _apply_signal(
    session: Session,
    workflow: Any,
    execution: Any,
    step: StepDefinition,
    definition: WorkflowDefinition,
    signal: FlowControlSignal | None,
    now: datetime,
) -> None:
    """Apply a normal return or a flow-control call (the non-exception outcome rows)."""
    if signal is None:
        transitions.end_execution(execution, StepState.COMPLETED, StepOutcome.SUCCESS, now)
        workflow.previous_step_name = step.name
        transitions.advance(session, workflow, definition, step.name, now)
    elif isinstance(signal, ReattemptSignal):
        transitions.end_execution(execution, StepState.COMPLETED, StepOutcome.REATTEMPTED, now)
        transitions.schedule_again(session, workflow, step.name, signal.wait, now)
    elif isinstance(signal, SkipSignal):
        transitions.end_execution(execution, StepState.SKIPPED, StepOutcome.SKIPPED, now)
        workflow.previous_step_name = step.name
        transitions.advance(session, workflow, definition, step.name, now)
    elif isinstance(signal, CancelSignal):
        transitions.end_execution(execution, StepState.CANCELED, StepOutcome.CANCELED, now)
        transitions.cancel(workflow, now)
    elif isinstance(signal, PauseSignal):
        transitions.end_execution(execution, StepState.CANCELED, StepOutcome.CANCELED, now)
        transitions.pause_at(workflow, step.name, now)
    elif isinstance(signal, FinishSignal):
        transitions.end_execution(execution, StepState.COMPLETED, StepOutcome.SUCCESS, now)
        workflow.previous_step_name = step.name
        transitions.finish(workflow, now)


def _run_handler(
    session: Session,
    workflow: Any,
    execution: Any,
    policy: ExceptionPolicy,
    error: BaseException,
) -> tuple[FlowControlSignal | None, BaseException]:
    """Call an imperative handler, outside geneva's locks, in a session holding nothing else.

    Returns the flow-control signal it raised (if any) and the error to record. The
    handler's writes are flushed to commit with the outcome; if the handler itself fails,
    they are rolled back and its error (chained to the step's) is recorded instead.
    """
    if policy.handler is None:
        return None, error
    signal: FlowControlSignal | None = None
    workflow.__dict__["_geneva_running"] = execution
    try:
        try:
            snapshot = json_snapshot(workflow.data)
            policy.handler(workflow, error)
        except FlowControlSignal as raised:
            signal = raised
        _keep_data_changes(workflow, snapshot)
        session.flush()
    except STEP_FAILURES as handler_error:
        session.rollback()
        if handler_error.__context__ is None:
            handler_error.__context__ = error
        workflow_logger(workflow, execution).exception("the exception handler itself failed")
        return None, handler_error
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    return signal, error


def _apply_failure(
    session: Session,
    workflow: Any,
    execution: Any,
    step: StepDefinition,
    definition: WorkflowDefinition,
    policy: ExceptionPolicy,
    error: BaseException,
    handler_signal: FlowControlSignal | None,
    now: datetime,
) -> None:
    """Apply an exception: the "exception" rows of the outcome table."""
    failed = StepState.FAILED
    action = policy.action
    if action == "handler":
        if isinstance(handler_signal, ReattemptSignal):
            transitions.end_execution(execution, failed, StepOutcome.REATTEMPTED, now, error)
            transitions.schedule_again(session, workflow, step.name, handler_signal.wait, now)
        elif isinstance(handler_signal, SkipSignal):
            transitions.end_execution(execution, failed, StepOutcome.SKIPPED, now, error)
            workflow.previous_step_name = step.name
            transitions.advance(session, workflow, definition, step.name, now)
        elif isinstance(handler_signal, CancelSignal):
            transitions.end_execution(execution, failed, StepOutcome.CANCELED, now, error)
            transitions.cancel(workflow, now)
        elif isinstance(handler_signal, FinishSignal):
            transitions.end_execution(execution, failed, StepOutcome.SUCCESS, now, error)
            workflow.previous_step_name = step.name
            transitions.finish(workflow, now)
        else:  # pause(), or no flow-control call at all
            transitions.end_execution(execution, failed, StepOutcome.FAILED, now, error)
            transitions.pause_at(workflow, step.name, now)
        return
    if action == "reattempt":
        if policy.max_reattempts is None or (
            _consecutive_policy_reattempts(session, workflow, execution, step.name)
            < policy.max_reattempts
        ):
            transitions.end_execution(execution, failed, StepOutcome.REATTEMPTED, now, error)
            transitions.schedule_again(session, workflow, step.name, policy.wait, now)
            return
        action = policy.terminal_action
    if action == "cancel":
        transitions.end_execution(execution, failed, StepOutcome.CANCELED, now, error)
        transitions.cancel(workflow, now)
    elif action == "skip":
        transitions.end_execution(execution, failed, StepOutcome.SKIPPED, now, error)
        workflow.previous_step_name = step.name
        transitions.advance(session, workflow, definition, step.name, now)
    else:
        transitions.end_execution(execution, failed, StepOutcome.FAILED, now, error)
        transitions.pause_at(workflow, step.name, now)


def _consecutive_policy_reattempts(
    session: Session, workflow: Any, execution: Any, step_name: str
) -> int:
    """How many failed/reattempted executions of this step directly precede this one:
    those after the newest earlier execution that ended any other way."""
    model = type(execution)
    earlier = (model.workflow_id == workflow.id, model.sequence < execution.sequence)
    last_other_outcome = (
        sa.select(sa.func.coalesce(sa.func.max(model.sequence), 0))
        .where(
            *earlier,
            sa.or_(
                model.step_name != step_name,
                model.state != StepState.FAILED,
                model.outcome.is_(None),
                model.outcome != StepOutcome.REATTEMPTED,
            ),
        )
        .scalar_subquery()
    )
    count = session.scalar(
        sa.select(sa.func.count())
        .select_from(model)
        .where(*earlier, model.sequence > last_other_outcome)
    )
    return int(count or 0)


def _commit_keeping_objects(session: Session) -> None:
    """Commit without expiring the loaded workflow, hero and execution (the step uses them)."""
    previous = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = previous


def _send(
    signal: Any,
    subject: _Subject,
    outcome: str,
    exception: BaseException | None,
    since: float,
    **extra: Any,
) -> None:
    """Send a signal; a receiver that raises is logged and never affects the step."""
    if not signal.receivers:
        return
    payload = {
        "workflow_id": subject.workflow_id,
        "workflow_class": subject.workflow_class,
        "execution_id": subject.execution_id,
        "step_name": subject.step_name,
        "outcome": outcome,
        "exception": exception,
        "duration": time.perf_counter() - since,
        **extra,
    }
    for receiver in signal.receivers_for(subject.sender):
        try:
            receiver(subject.sender, **payload)
        except Exception:
            logger.exception(
                "a receiver of %s failed (%s #%s, step %s); the step is not affected",
                signal.name,
                subject.workflow_class,
                subject.workflow_id,
                subject.step_name,
            )
