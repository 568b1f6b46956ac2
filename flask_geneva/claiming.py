"""The claim: lock, check, evaluate the preconditions, mark in progress; one transaction.

Lock the workflow row, then the execution row; check that the execution is still
``scheduled``, the workflow ``ready`` and the step due; evaluate the preconditions
(deleted hero, every ``cancel_if``, then ``skip_if``/``only_if``); mark the execution
``in_progress`` and the workflow ``performing``; remove the outbox row; commit. A
precondition that ends the execution is applied in this same transaction.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from flask_geneva import machine, signals
from flask_geneva.conflicts import is_transient
from flask_geneva.dsl import StepDefinition, WorkflowDefinition, evaluate_condition
from flask_geneva.errors import StepNotDefinedError, WorkflowClassNotFoundError
from flask_geneva.flow import CancelSignal, FlowControlSignal, SkipSignal
from flask_geneva.logs import logger, workflow_logger
from flask_geneva.machine import Verdict
from flask_geneva.policies import resolve_policy
from flask_geneva.runs import (
    STEP_FAILURES,
    Claim,
    StepResult,
    Subject,
    following,
    message_options,
    send,
)
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.store import Store, Target
from flask_geneva.text import quoted, shorten
from flask_geneva.timeutil import utcnow
from flask_geneva.waiting import SignalWait

#: A message may run its execution this much before ``scheduled_for`` (clock skew between
#: the relay's machine and the worker's).
EARLY_TOLERANCE: Final = timedelta(seconds=1)
#: A message that arrives at most this much before ``scheduled_for`` waits for it: the
#: relay publishes a waited step a little ahead (``Relay.lead``) so that the broker hop
#: and the consumer's poll are over by its due time, and the step starts on time.
EARLY_WAIT_MAX: Final = timedelta(milliseconds=250)
#: Where rows can be locked one by one (PostgreSQL), a waited step locks (and loads) its
#: rows this much before its due time, then checks its preconditions and writes the
#: claim at the due time: the lock's round trip is over by then. (SQLite locks the whole
#: database, so there the step locks at its due time.)
PRELOCK: Final = timedelta(milliseconds=5)


def claim(
    session: Session,
    store: Store,
    key: Any,
    message_id: str | None,
    ignore_schedule: bool,
    started: float,
    *,
    early_tolerance: timedelta,
    early_wait_max: timedelta,
    prelock: timedelta,
    waited: bool = False,
    timeout_elapsed: bool = False,
) -> Claim | StepResult | None:
    """Claim execution ``key``: a :class:`Claim` to run, a :class:`StepResult` when a
    precondition ended it, or None when there is nothing to run.

    A step that waits for a signal is claimed when a matching signal is pending or its
    timeout has ended (``timeout_elapsed``: a testing helper says it has); otherwise it
    goes back to waiting (with ``ignore_schedule``, a ``"waiting"`` result says so)."""
    locked = store.lock_for_claim(session, key)
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
    step, problem = _step_of(workflow, execution)
    awaited = None
    if step is not None and step.signal is not None:
        awaited = await_signal(store, session, workflow, execution, step.signal, now,
                               timeout_elapsed=timeout_elapsed)
        if awaited.kind == "start":
            if ignore_schedule:
                awaited = Awaited("timeout") if timeout_elapsed else Awaited("wait")
            else:
                store.start_waiting(session, execution.id, workflow.id, step.signal, now,
                                    message_options(type(workflow)))
                session.commit()
                log.info("execution %s waits for signal %r from now", key, step.signal.name)
                return None
        deadline = execution.scheduled_for
        lead = prelock if store.row_locks else timedelta(0)
        if awaited.kind == "wait" and not ignore_schedule and deadline is not None \
                and deadline - now <= lead:
            # Locked just ahead of the deadline, as a waited step is: the timeout comes
            # at it (a signal sent meanwhile waits for these locks and stays pending).
            now = _wait_until_due(deadline, lead, now)
            awaited = Awaited("timeout")
        if awaited.kind == "wait":
            def again() -> Claim | StepResult | None:
                return claim(
                    session, store, key, message_id, ignore_schedule, started,
                    early_tolerance=early_tolerance, early_wait_max=early_wait_max,
                    prelock=prelock, waited=True, timeout_elapsed=timeout_elapsed,
                )  # fmt: skip

            return _keep_waiting(session, store, workflow, execution, now, ignore_schedule,
                                 waited=waited, early_wait_max=early_wait_max, lead=lead,
                                 retry=again)
    waiting = execution.waiting_for is not None  # due when woken, whatever scheduled_for says
    if not waiting and not ignore_schedule and execution.scheduled_for > now + early_tolerance:
        session.rollback()
        log.info("execution %s is not due until %s", key, execution.scheduled_for)
        return None
    # A step due at once never waits.
    if not waiting and not ignore_schedule and execution.scheduled_for > execution.created_at:
        early = execution.scheduled_for - now
        lead = prelock if store.row_locks else timedelta(0)
        if not waited and lead < early <= early_wait_max:
            # Published ahead of its due time: wait for it without holding the locks.
            session.rollback()
            time.sleep((early - lead).total_seconds())
            return claim(
                session, store, key, message_id, ignore_schedule, started,
                early_tolerance=early_tolerance, early_wait_max=early_wait_max,
                prelock=prelock, waited=True, timeout_elapsed=timeout_elapsed,
            )  # fmt: skip
        if lead:
            # Locked just ahead of the due time: the rest (checks, claim) comes at it.
            now = _wait_until_due(execution.scheduled_for, lead, now)

    cls = type(workflow)
    subject = Subject(
        sender=cls,
        workflow_id=workflow.id,
        workflow_class=cls.__name__ if cls.is_defined() else workflow.workflow_class,
        execution_id=execution.id,
        step_name=execution.step_name,
    )
    if step is None:
        assert problem is not None
        _end_unclaimed(session, store, workflow, execution, machine.step_missing(), now,
                       message_id, problem)
        session.commit()
        log.error("%s", problem)
        send(signals.precondition_checked, subject, "exception", problem, started)
        return StepResult(subject.execution_id, subject.step_name, "exception", problem)

    definition = cls._geneva_definition
    workflow.__dict__["_geneva_running"] = execution
    try:
        verdict, error = check_preconditions(workflow, step, definition)
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    policy = None
    if verdict == Verdict.EXCEPTION:
        assert error is not None
        if is_transient(error):
            # The database ended the claim's transaction under the precondition (a
            # deadlock, a lost connection): not the step's failure. Nothing is claimed;
            # the execution stays scheduled and the relay delivers it again.
            session.rollback()
            log.warning("the database ended the claim of execution %s while its "
                        "precondition ran (%s); it stays scheduled", execution.id,
                        type(error).__name__)  # fmt: skip
            return None
        policy = resolve_policy(step.on_exception, definition.class_policies, error)
    if verdict == Verdict.PASSED or (policy is not None and policy.handler is not None):
        taken = awaited.signal if awaited is not None and verdict == Verdict.PASSED else None
        if taken is not None:
            store.hold_signal(session, taken, execution.id)
        mark_in_progress(session, store, workflow, execution, step.name, now, message_id)
        commit_keeping_objects(session)
        if verdict == Verdict.PASSED:
            send(signals.precondition_checked, subject, "passed", None, started)
        return Claim(workflow, execution, step, definition, subject, precondition_error=error,
                     signal=taken, timed_out=awaited is not None and awaited.kind == "timeout")

    if verdict == Verdict.EXCEPTION:
        assert policy is not None and error is not None
        from flask_geneva.finalizing import prior_reattempts

        transition = machine.after_failure(
            policy, prior_reattempts=prior_reattempts(session, workflow, execution, step.name)
        )
    else:
        decided = machine.after_precondition(verdict)
        assert decided is not None
        transition = decided
    _end_unclaimed(session, store, workflow, execution, transition, now, message_id, error)
    session.commit()
    log.info("precondition ended execution %s: %s", subject.execution_id, verdict.value)
    send(signals.precondition_checked, subject, verdict.value, error, started)
    return StepResult(subject.execution_id, step.name, verdict.value, error)


@dataclass(frozen=True)
class Awaited:
    """What a step that waits for a signal finds at its claim: ``"signal"`` (the one it
    takes), ``"timeout"`` (its timeout ended first), ``"wait"`` (nothing yet), or
    ``"start"`` (nothing yet, and the execution was scheduled before its step waited for
    signals: it starts waiting)."""

    kind: str
    signal: Any = None


def await_signal(
    store: Store, session: Session, workflow: Any, execution: Any, wait: SignalWait,
    now: datetime, *, timeout_elapsed: bool,
) -> Awaited:
    """Find the signal the execution runs with, under the workflow's lock: the one its
    step holds from an earlier attempt, else the oldest pending one that matches."""
    for candidate in store.signal_candidates(session, workflow.id, execution.step_name,
                                             wait.name):
        if candidate.execution_id is not None:  # held from an earlier attempt
            return Awaited("signal", candidate)
        if _matches(store, session, wait, workflow, execution, candidate):
            return Awaited("signal", candidate)
    if execution.waiting_for is None:
        # Scheduled before its step came to wait for a signal (a deploy): it waits now.
        return Awaited("start")
    deadline = execution.scheduled_for
    if timeout_elapsed or (deadline is not None and deadline <= now):
        return Awaited("timeout")
    return Awaited("wait")


#: How many (execution, signal) pairs whose predicate raised a process remembers, so that
#: it warns once for each rather than at every wake of the step.
PREDICATE_FAILURES_REMEMBERED: Final = 1024
_PREDICATE_FAILURES_SAID: OrderedDict[tuple[str, Any, Any, Any], None] = OrderedDict()


def _matches(store: Store, session: Session, wait: SignalWait, workflow: Any, execution: Any,
             signal: Any) -> bool:
    """Whether the step takes ``signal``. A predicate that raises does not match that
    signal (logged): a malformed payload from outside must not stop the step from taking
    a good signal that comes after it. It runs in a savepoint where a failed statement
    would abort the transaction (PostgreSQL)."""
    if wait.matcher.predicate is None:
        return signal.name == wait.name
    try:
        with store.contained(session):
            return wait.matcher.matches(workflow, signal)
    except STEP_FAILURES as error:
        # Every wake of the step checks the signal again: said once per execution and
        # signal in this process, then only at debug level.
        seen = (str(session.get_bind().engine.url), execution.id, signal.id, signal.created_at)
        first = seen not in _PREDICATE_FAILURES_SAID
        _PREDICATE_FAILURES_SAID[seen] = None
        if len(_PREDICATE_FAILURES_SAID) > PREDICATE_FAILURES_REMEMBERED:
            _PREDICATE_FAILURES_SAID.popitem(last=False)
        workflow_logger(workflow, execution).log(
            logging.WARNING if first else logging.DEBUG,
            "the SignalMatcher predicate of step %s raised for signal #%s %s (%s: %s); "
            "that signal counts as not matching and stays pending",
            quoted(execution.step_name), signal.id, quoted(signal.name),
            type(error).__name__, shorten(str(error), 500),
        )  # fmt: skip
        return False


def _keep_waiting(
    session: Session, store: Store, workflow: Any, execution: Any, now: datetime,
    ignore_schedule: bool, *, waited: bool, early_wait_max: timedelta, lead: timedelta,
    retry: Callable[[], Claim | StepResult | None],
) -> Claim | StepResult | None:
    """No signal for a waiting execution yet: it waits on, its outbox row at its
    deadline (none without one). Just ahead of the deadline (the relay publishes a
    little ahead), wait without the locks until ``lead`` before it, and claim again."""
    deadline = execution.scheduled_for
    key, step_name = execution.id, execution.step_name
    if ignore_schedule:
        session.rollback()
        return StepResult(key, step_name, "waiting")
    if deadline is not None and not waited and deadline - now <= early_wait_max:
        session.rollback()
        time.sleep(max((deadline - now - lead).total_seconds(), 0.0))
        return retry()
    store.withdraw(session, key)
    if deadline is not None:
        store.enqueue(session, key, workflow.id, message_options(type(workflow)), deadline, now)
    session.commit()
    workflow_logger(workflow, execution).info(
        "execution %s waits on for signal %r", key, execution.waiting_for
    )
    return None


def _step_of(workflow: Any, execution: Any) -> tuple[StepDefinition | None, Exception | None]:
    """The execution's step in the code, or the error that says why there is none."""
    cls = type(workflow)
    if not cls.is_defined():
        return None, WorkflowClassNotFoundError(
            f"workflow class {workflow.workflow_class!r} is not defined in this application; "
            f"restore the class (or set workflow_name on its new name), then resume "
            f"workflow #{workflow.id}, or cancel it"
        )
    step = cls._geneva_definition.get_step(execution.step_name)
    if step is None:
        return None, StepNotDefinedError(
            f"step {execution.step_name!r} is not defined in {cls.__name__} "
            f"(its steps: {', '.join(cls.step_names()) or 'none'}); restore the step and "
            f"resume workflow #{workflow.id}, or cancel it"
        )
    return step, None


def _end_unclaimed(
    session: Session,
    store: Store,
    workflow: Any,
    execution: Any,
    transition: machine.Transition,
    now: datetime,
    message_id: str | None,
    error: BaseException | None,
) -> None:
    """Apply a transition decided before the body ran (a precondition, a missing step)."""
    cls = type(workflow)
    after = None
    if transition.move == machine.Move.ADVANCE:  # only an advance reads the step after
        after = following(cls._geneva_definition, execution.step_name)
    store.apply(
        session,
        Target(workflow.id, execution.id, execution.step_name, workflow.execution_count or 0),
        machine.plan(transition, execution.step_name, after),
        now,
        options=message_options(cls),
        error=error,
        started=(now, message_id),
    )


def _wait_until_due(due: datetime, window: timedelta, now: datetime) -> datetime:
    """Sleep, holding the step's locks, until ``due`` when it is at most ``window`` away
    (a step locked just ahead of its due time); the time to claim at."""
    early = due - utcnow()
    if early > window:  # up to EARLY_TOLERANCE early by a skewed clock: at once
        return now
    if early > timedelta(0):
        time.sleep(early.total_seconds())
    return max(utcnow(), due)


def mark_in_progress(
    session: Session,
    store: Store,
    workflow: Any,
    execution: Any,
    step_name: str,
    now: datetime,
    message_id: str | None,
) -> None:
    """Write the claim, and give the loaded objects the same values as committed state,
    so they stay current for the step body without being flushed again."""
    store.claim(session, execution.id, workflow.id, step_name, now, message_id)
    for target, values in (
        (execution, {"state": StepState.IN_PROGRESS, "started_at": now, "message_id": message_id}),
        (
            workflow,
            {"state": WorkflowState.PERFORMING, "current_step_name": step_name, "updated_at": now},
        ),
    ):
        for key, value in values.items():
            set_committed_value(target, key, value)


def check_preconditions(
    workflow: Any, step: StepDefinition, definition: WorkflowDefinition
) -> tuple[Verdict, BaseException | None]:
    """What the preconditions decide, and the exception when one raised."""
    try:
        # The claim's lock cleared a hero loaded before (or loaded it fresh itself).
        if not type(workflow).may_proceed_without_hero and workflow.hero is None:
            return Verdict.CANCELED, None
        for condition in definition.cancel_conditions:
            if evaluate_condition(condition, workflow):
                return Verdict.CANCELED, None
        if step.skip_if is not None and evaluate_condition(step.skip_if, workflow):
            return Verdict.SKIPPED, None
        if step.only_if is not None and not evaluate_condition(step.only_if, workflow):
            return Verdict.SKIPPED, None
    except CancelSignal:
        return Verdict.CANCELED, None
    except SkipSignal:
        return Verdict.SKIPPED, None
    except FlowControlSignal as signal:
        return Verdict.EXCEPTION, RuntimeError(
            f"{type(signal).__name__} cannot be used in a precondition; only cancel() and "
            f"skip() can"
        )
    except STEP_FAILURES as error:
        return Verdict.EXCEPTION, error
    return Verdict.PASSED, None


def commit_keeping_objects(session: Session) -> None:
    """Commit without expiring the loaded workflow, hero and execution (the step uses them)."""
    previous = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = previous
