"""The state machine, as data: what each event does to an execution and its workflow.

Every change of state in flask_geneva is decided here, by pure functions that read no
database and write nothing: a step body's result, an exception (with its policy, its
handler's call and the reattempts so far), a precondition's verdict, a missing step, an
operator action and a recovery. Each returns a :class:`Transition`, a frozen value
saying how the execution ends (if it does) and which :class:`Move` the workflow makes.
:func:`plan` then turns a transition into the rows' new values (a :class:`Plan`), given
the step that follows; a store (:mod:`flask_geneva.store`) writes that plan.

The outcome table of SPEC section 3, row by row:

=================================  ======================  ========================
result of a step                   execution               move of the workflow
=================================  ======================  ========================
returns normally                   completed / success     ADVANCE
``reattempt(wait)``                completed / reattempted REPEAT after ``wait``
``skip()``                         skipped / skipped       ADVANCE
``cancel()``                       canceled / canceled     CANCEL
``pause()``                        canceled / canceled     PAUSE
``finish()``                       completed / success     FINISH
exception, pause policy            failed / failed         PAUSE
exception, cancel policy           failed / canceled       CANCEL
exception, reattempt policy        failed / reattempted    REPEAT after the wait
... past ``max_reattempts``        the terminal action's row (pause, cancel or skip)
exception, skip policy             failed / skipped        ADVANCE
=================================  ======================  ========================

A step that waits for a signal (SPEC section 11) adds the rows of its timeout ending
without a matching signal (:func:`after_timeout`): ``on_timeout="run"`` runs the body (the
rows above), ``"skip"`` skipped / skipped and ADVANCE, ``"cancel"`` canceled / canceled
and CANCEL, ``"pause"`` canceled / canceled and PAUSE (``resume()`` waits again). The
signal a step took is consumed with the transitions :func:`consumes_signal` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Final

from flask_geneva.errors import InvalidStateError
from flask_geneva.flow import (
    CancelSignal,
    FinishSignal,
    FlowControlSignal,
    PauseSignal,
    ReattemptSignal,
    SkipSignal,
)
from flask_geneva.policies import ExceptionPolicy
from flask_geneva.states import StepOutcome, StepState, WorkflowState

NO_WAIT: Final = timedelta(0)


class Move(StrEnum):
    """What the workflow does next."""

    #: The step after this one, after its own wait; finished after the last step.
    ADVANCE = "advance"
    #: This same step again, after the transition's ``wait``.
    REPEAT = "repeat"
    #: Finished now, whatever steps are left.
    FINISH = "finish"
    #: Canceled: nothing more runs.
    CANCEL = "cancel"
    #: Paused; ``resume()`` runs this same step again.
    PAUSE = "pause"
    #: Paused by an operator; the scheduled execution is kept and runs after resume.
    HOLD = "hold"
    #: Ready again (an operator's resume): the kept execution is published again.
    RELEASE = "release"


class Verdict(StrEnum):
    """What a step's preconditions decided (the ``precondition_checked`` outcome)."""

    PASSED = "passed"
    CANCELED = "canceled"
    SKIPPED = "skipped"
    EXCEPTION = "exception"


class OperatorAction(StrEnum):
    """An action taken on a workflow from outside its steps."""

    RESUME = "resume"
    PAUSE = "pause"
    CANCEL = "cancel"
    SKIP = "skip"


#: The workflow states each operator action may start from.
ALLOWED_FROM: Final[Mapping[OperatorAction, tuple[WorkflowState, ...]]] = {
    OperatorAction.PAUSE: (WorkflowState.READY,),
    OperatorAction.RESUME: (WorkflowState.PAUSED,),
    OperatorAction.CANCEL: (WorkflowState.READY, WorkflowState.PAUSED),
    OperatorAction.SKIP: (WorkflowState.READY, WorkflowState.PAUSED),
}


@dataclass(frozen=True)
class Transition:
    """One decided change: how the execution ends (``step_state``/``outcome``, ``None``
    when it does not end) and the workflow's :class:`Move`."""

    move: Move
    step_state: StepState | None = None
    outcome: StepOutcome | None = None
    #: For REPEAT: how long until the step runs again.
    wait: timedelta = NO_WAIT
    #: Whether the execution keeps the error of a failed attempt.
    records_error: bool = False
    #: Why, in a few words (for logs; SPEC section 12 stores it).
    reason: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Plan:
    """A transition made concrete for one workflow: the workflow's new values and the
    execution to schedule, if any."""

    transition: Transition
    workflow_state: WorkflowState
    #: ``next_step_name`` afterwards (the scheduled step, or what resume will run).
    next_step: str | None
    #: The step to set as ``previous_step_name``, or None to leave it.
    previous_step: str | None
    #: A new execution to schedule (its step name), and after how long.
    schedule: str | None = None
    schedule_in: timedelta = NO_WAIT

    @property
    def ends_execution(self) -> bool:
        return self.transition.step_state is not None

    @property
    def stamps_transitioned_at(self) -> bool:
        """Entering finished, canceled or paused stamps ``transitioned_at``."""
        return self.workflow_state in (
            WorkflowState.FINISHED,
            WorkflowState.CANCELED,
            WorkflowState.PAUSED,
        )


def _ended(
    state: StepState, outcome: StepOutcome, move: Move, *, wait: timedelta = NO_WAIT,
    error: bool = False, reason: str | None = None,
) -> Transition:
    return Transition(move, state, outcome, wait, error, reason)


# -- step results ------------------------------------------------------------------------


def after_body(call: FlowControlSignal | None) -> Transition:
    """A body that returned (``call`` None) or called a flow-control method."""
    if call is None:
        return _ended(StepState.COMPLETED, StepOutcome.SUCCESS, Move.ADVANCE)
    if isinstance(call, ReattemptSignal):
        return _ended(
            StepState.COMPLETED, StepOutcome.REATTEMPTED, Move.REPEAT, wait=call.wait,
            reason="reattempt() called by the step",
        )
    if isinstance(call, SkipSignal):
        return _ended(StepState.SKIPPED, StepOutcome.SKIPPED, Move.ADVANCE,
                      reason="skip() called by the step")
    if isinstance(call, CancelSignal):
        return _ended(StepState.CANCELED, StepOutcome.CANCELED, Move.CANCEL,
                      reason="cancel() called by the step")
    if isinstance(call, PauseSignal):
        return _ended(StepState.CANCELED, StepOutcome.CANCELED, Move.PAUSE,
                      reason="pause() called by the step")
    if isinstance(call, FinishSignal):
        return _ended(StepState.COMPLETED, StepOutcome.SUCCESS, Move.FINISH)
    raise TypeError(f"unknown flow-control call {call!r}")


def after_failure(
    policy: ExceptionPolicy,
    *,
    prior_reattempts: int = 0,
    handler_call: FlowControlSignal | None = None,
) -> Transition:
    """An exception from the body (or a precondition), given the policy that applies.

    ``prior_reattempts`` counts the consecutive policy reattempts of this step before
    this attempt; ``handler_call`` is what an imperative handler called (None: nothing,
    which pauses).
    """
    failed = StepState.FAILED
    if policy.handler is not None:
        if isinstance(handler_call, ReattemptSignal):
            return _ended(failed, StepOutcome.REATTEMPTED, Move.REPEAT, wait=handler_call.wait,
                          error=True, reason="the exception handler called reattempt()")
        if isinstance(handler_call, SkipSignal):
            return _ended(failed, StepOutcome.SKIPPED, Move.ADVANCE, error=True,
                          reason="the exception handler called skip()")
        if isinstance(handler_call, CancelSignal):
            return _ended(failed, StepOutcome.CANCELED, Move.CANCEL, error=True,
                          reason="the exception handler called cancel()")
        if isinstance(handler_call, FinishSignal):
            return _ended(failed, StepOutcome.SUCCESS, Move.FINISH, error=True,
                          reason="the exception handler called finish()")
        return _ended(failed, StepOutcome.FAILED, Move.PAUSE, error=True,
                      reason="the exception handler paused the workflow")
    action = policy.action
    if action == "reattempt":
        if policy.max_reattempts is None or prior_reattempts < policy.max_reattempts:
            return _ended(failed, StepOutcome.REATTEMPTED, Move.REPEAT, wait=policy.wait,
                          error=True, reason="exception policy: reattempt")
        action = policy.terminal_action
        reason = f"reattempts exhausted ({policy.max_reattempts}): {action}"
    else:
        reason = f"exception policy: {action}"
    if action == "cancel":
        return _ended(failed, StepOutcome.CANCELED, Move.CANCEL, error=True, reason=reason)
    if action == "skip":
        return _ended(failed, StepOutcome.SKIPPED, Move.ADVANCE, error=True, reason=reason)
    return _ended(failed, StepOutcome.FAILED, Move.PAUSE, error=True, reason=reason)


def after_precondition(verdict: Verdict) -> Transition | None:
    """A precondition that ended the execution (None: it passed, the body runs). An
    exception there is decided by :func:`after_failure`, like the body's."""
    if verdict == Verdict.CANCELED:
        return _ended(StepState.CANCELED, StepOutcome.CANCELED, Move.CANCEL,
                      reason="a precondition canceled the workflow")
    if verdict == Verdict.SKIPPED:
        return _ended(StepState.SKIPPED, StepOutcome.SKIPPED, Move.ADVANCE,
                      reason="a precondition skipped the step")
    if verdict == Verdict.PASSED:
        return None
    raise ValueError("an exception in a precondition is decided by after_failure()")


#: What the body is taken to have called when a step's timeout ends with no matching
#: signal, by ``on_timeout`` (``"run"`` runs the body itself).
TIMEOUT_CALLS: Final[Mapping[str, type[FlowControlSignal]]] = {
    "skip": SkipSignal,
    "cancel": CancelSignal,
    "pause": PauseSignal,
}


def timeout_call(on_timeout: str) -> FlowControlSignal | None:
    """The flow-control call a timeout makes in place of the body (None: ``"run"``)."""
    if on_timeout == "run":
        return None
    call = TIMEOUT_CALLS.get(on_timeout)
    if call is None:
        raise ValueError(f"unknown on_timeout action {on_timeout!r}")
    return call()


def after_timeout(on_timeout: str) -> Transition | None:
    """A step's signal timeout ended with no matching signal (None: ``"run"``, the body
    runs with ``received_signal`` None); the rows of :func:`after_body` for the call."""
    call = timeout_call(on_timeout)
    return None if call is None else after_body(call)


#: The ends of an execution that consume the signal its step took: completed / success
#: and skipped / skipped. On any other end the signal stays with the step for its retry.
CONSUMING_ENDS: Final = frozenset(
    {(StepState.COMPLETED, StepOutcome.SUCCESS), (StepState.SKIPPED, StepOutcome.SKIPPED)}
)


def consumes_signal(transition: Transition) -> bool:
    """Whether ``transition`` consumes the signal its step took (if it took one)."""
    return (transition.step_state, transition.outcome) in CONSUMING_ENDS


def step_missing() -> Transition:
    """An execution whose step, or whose workflow class, the code no longer defines."""
    return _ended(StepState.FAILED, StepOutcome.FAILED, Move.PAUSE, error=True,
                  reason="the step is not defined in the code")


def recovery(action: str) -> Transition:
    """Housekeeping's answer to a stuck execution (``"reattempt"`` or ``"cancel"``)."""
    if action == "cancel":
        return _ended(StepState.CANCELED, StepOutcome.RECOVERED, Move.CANCEL,
                      reason="recovered by housekeeping")
    return _ended(StepState.COMPLETED, StepOutcome.RECOVERED, Move.REPEAT,
                  reason="recovered by housekeeping")


def conflict_retry(action: str = "reattempt", *, wait: timedelta = NO_WAIT) -> Transition:
    """A step whose transaction the database ended (a deadlock, a lost connection) after
    its body returned: the execution ends recovered, keeping the database's error, and
    the step runs again after ``wait`` (``"reattempt"``) or the workflow is canceled
    (``"cancel"``, housekeeping's other recovery action)."""
    if action == "cancel":
        return _ended(StepState.CANCELED, StepOutcome.RECOVERED, Move.CANCEL, error=True,
                      reason="the database ended its transaction")
    return _ended(StepState.COMPLETED, StepOutcome.RECOVERED, Move.REPEAT, wait=wait,
                  error=True, reason="the database ended its transaction; run again")


# -- operator actions --------------------------------------------------------------------


def allowed_actions(state: str) -> tuple[OperatorAction, ...]:
    """The operator actions a workflow in ``state`` allows, in the order to show them."""
    return tuple(action for action, states in ALLOWED_FROM.items() if state in states)


def operator_transition(
    action: OperatorAction, state: str, *, kept_execution: bool, describe: str = "the workflow"
) -> Transition:
    """An operator action on a workflow in ``state``; ``kept_execution`` says whether it
    has a scheduled execution.

    :raises InvalidStateError: the state does not allow the action.
    """
    allowed = ALLOWED_FROM[action]
    if state not in allowed:
        needed = " or ".join(s.value for s in allowed)
        raise InvalidStateError(
            f"cannot {action.value} {describe}: it is {state}, and {action.value}() needs it "
            f"{needed}"
        )
    if action == OperatorAction.CANCEL:
        return _ended(StepState.CANCELED, StepOutcome.CANCELED, Move.CANCEL,
                      reason="canceled by an operator")
    if action == OperatorAction.SKIP:
        return _ended(StepState.SKIPPED, StepOutcome.SKIPPED, Move.ADVANCE,
                      reason="skipped by an operator")
    if action == OperatorAction.PAUSE:
        return Transition(Move.HOLD, reason="paused by an operator")
    if kept_execution:
        return Transition(Move.RELEASE, reason="resumed by an operator")
    # Nothing kept (the step failed or paused itself): run that step again, now.
    return Transition(Move.REPEAT, reason="resumed by an operator")


# -- from a transition to the rows -------------------------------------------------------


def plan(
    transition: Transition,
    step_name: str | None,
    following: tuple[str, timedelta] | None,
) -> Plan:
    """The workflow's new values for ``transition`` of the execution of ``step_name``.

    ``following`` is the step after ``step_name`` in the class (its name and wait), or
    None when ``step_name`` is the last; only ADVANCE reads it.
    """
    move = transition.move
    if move == Move.ADVANCE:
        if following is None:
            return Plan(transition, WorkflowState.FINISHED, None, step_name)
        name, wait = following
        return Plan(transition, WorkflowState.READY, name, step_name, name, wait)
    if move == Move.REPEAT:
        return Plan(
            transition, WorkflowState.READY, step_name, None, step_name, transition.wait
        )
    if move == Move.FINISH:
        return Plan(transition, WorkflowState.FINISHED, None, step_name)
    if move == Move.CANCEL:
        return Plan(transition, WorkflowState.CANCELED, None, None)
    if move in (Move.PAUSE, Move.HOLD):
        return Plan(transition, WorkflowState.PAUSED, step_name, None)
    if move == Move.RELEASE:
        return Plan(transition, WorkflowState.READY, step_name, None)
    raise ValueError(f"unknown move {move!r}")  # pragma: no cover
