"""The state machine as pure decisions: every row of SPEC section 3's outcome tables.

No database here: these drive :mod:`flask_geneva.machine` directly. The behaviour tests
(test_outcomes.py, test_exception_policies.py, test_operator_actions.py, ...) check the
same rows end to end through a real database.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import ExceptionPolicy, InvalidStateError, machine
from flask_geneva.flow import (
    CancelSignal,
    FinishSignal,
    PauseSignal,
    ReattemptSignal,
    SkipSignal,
)
from flask_geneva.machine import Move, OperatorAction, Verdict

NEXT = ("second", timedelta(minutes=5))


def outcome(transition: machine.Transition, following=NEXT):
    """(execution state, outcome, workflow state, scheduled step, after how long)."""
    plan = machine.plan(transition, "first", following)
    return (
        transition.step_state,
        transition.outcome,
        plan.workflow_state,
        plan.schedule,
        plan.schedule_in,
    )


# SPEC §3, "Outcomes, exactly": the step-result rows.
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (None, ("completed", "success", "ready", "second", timedelta(minutes=5))),
        (ReattemptSignal(7), ("completed", "reattempted", "ready", "first", timedelta(seconds=7))),
        (SkipSignal(), ("skipped", "skipped", "ready", "second", timedelta(minutes=5))),
        (CancelSignal(), ("canceled", "canceled", "canceled", None, timedelta(0))),
        (PauseSignal(), ("canceled", "canceled", "paused", None, timedelta(0))),
        (FinishSignal(), ("completed", "success", "finished", None, timedelta(0))),
    ],
    ids=["returns", "reattempt", "skip", "cancel", "pause", "finish"],
)
def test_step_results(call, expected):
    assert outcome(machine.after_body(call)) == expected


def test_the_last_step_returning_finishes_the_workflow():
    plan = machine.plan(machine.after_body(None), "last", None)
    assert plan.workflow_state == "finished"
    assert plan.schedule is None
    assert plan.previous_step == "last"
    assert plan.stamps_transitioned_at


def test_pause_keeps_the_step_for_resume_and_stamps_the_time():
    plan = machine.plan(machine.after_body(PauseSignal()), "first", NEXT)
    assert plan.next_step == "first"
    assert plan.previous_step is None
    assert plan.stamps_transitioned_at


# SPEC §3: the exception rows, by policy.
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (ExceptionPolicy("pause"), ("failed", "failed", "paused", None, timedelta(0))),
        (ExceptionPolicy("cancel"), ("failed", "canceled", "canceled", None, timedelta(0))),
        (
            ExceptionPolicy("reattempt", wait=30),
            ("failed", "reattempted", "ready", "first", timedelta(seconds=30)),
        ),
        (ExceptionPolicy("skip"), ("failed", "skipped", "ready", "second", timedelta(minutes=5))),
    ],
    ids=["pause", "cancel", "reattempt", "skip"],
)
def test_exception_rows(policy, expected):
    transition = machine.after_failure(policy)
    assert outcome(transition) == expected
    assert transition.records_error


@pytest.mark.parametrize(
    ("terminal", "expected"),
    [
        ("pause", ("failed", "failed", "paused", None, timedelta(0))),
        ("cancel", ("failed", "canceled", "canceled", None, timedelta(0))),
    ],
)
def test_reattempts_run_out_into_the_terminal_action(terminal, expected):
    policy = ExceptionPolicy("reattempt", max_reattempts=2, terminal_action=terminal)
    assert outcome(machine.after_failure(policy, prior_reattempts=1))[1] == "reattempted"
    assert outcome(machine.after_failure(policy, prior_reattempts=2)) == expected


def test_unlimited_reattempts_never_run_out():
    policy = ExceptionPolicy("reattempt", max_reattempts=None)
    transition = machine.after_failure(policy, prior_reattempts=10**6)
    assert transition.outcome == "reattempted"


# SPEC §3: an imperative handler's flow-control call decides; the execution stays failed.
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ReattemptSignal(3), ("failed", "reattempted", "ready", "first", timedelta(seconds=3))),
        (SkipSignal(), ("failed", "skipped", "ready", "second", timedelta(minutes=5))),
        (CancelSignal(), ("failed", "canceled", "canceled", None, timedelta(0))),
        (PauseSignal(), ("failed", "failed", "paused", None, timedelta(0))),
        (FinishSignal(), ("failed", "success", "finished", None, timedelta(0))),
        (None, ("failed", "failed", "paused", None, timedelta(0))),
    ],
    ids=["reattempt", "skip", "cancel", "pause", "finish", "no-call"],
)
def test_handler_rows(call, expected):
    policy = ExceptionPolicy(lambda wf, exc: None)
    assert outcome(machine.after_failure(policy, handler_call=call)) == expected


# SPEC §3: preconditions.
def test_preconditions():
    assert machine.after_precondition(Verdict.PASSED) is None
    assert outcome(machine.after_precondition(Verdict.CANCELED))[:3] == (
        "canceled", "canceled", "canceled",
    )  # fmt: skip
    assert outcome(machine.after_precondition(Verdict.SKIPPED))[:4] == (
        "skipped", "skipped", "ready", "second",
    )  # fmt: skip
    with pytest.raises(ValueError, match="after_failure"):
        machine.after_precondition(Verdict.EXCEPTION)


def test_a_missing_step_fails_and_pauses():
    assert outcome(machine.step_missing())[:3] == ("failed", "failed", "paused")


# SPEC §6: housekeeping's recovery.
def test_recovery():
    assert outcome(machine.recovery("reattempt"))[:4] == (
        "completed", "recovered", "ready", "first",
    )  # fmt: skip
    assert outcome(machine.recovery("cancel"))[:3] == ("canceled", "recovered", "canceled")


# SPEC §2: a step whose transaction the database ended (geneva's own database work).
def test_a_conflict_recovers_the_execution_and_runs_the_step_again():
    transition = machine.conflict_retry()
    assert outcome(transition)[:4] == ("completed", "recovered", "ready", "first")
    assert transition.records_error and transition.wait == timedelta(0)
    assert not machine.consumes_signal(transition)
    assert machine.conflict_retry(wait=timedelta(minutes=3)).wait == timedelta(minutes=3)
    canceled = machine.conflict_retry("cancel")
    assert outcome(canceled)[:3] == ("canceled", "recovered", "canceled")
    assert canceled.records_error


# SPEC §3: operator actions, and which states allow them.
def test_allowed_actions_per_state():
    assert machine.allowed_actions("ready") == ("pause", "cancel", "skip")
    assert machine.allowed_actions("paused") == ("resume", "cancel", "skip")
    for state in ("performing", "finished", "canceled"):
        assert machine.allowed_actions(state) == ()


@pytest.mark.parametrize("action", list(OperatorAction))
@pytest.mark.parametrize("state", ["ready", "performing", "finished", "canceled", "paused"])
def test_operator_actions_refused_where_not_allowed(action, state):
    allowed = action in machine.allowed_actions(state)
    if allowed:
        machine.operator_transition(action, state, kept_execution=True)
    else:
        with pytest.raises(InvalidStateError, match=f"cannot {action.value}"):
            machine.operator_transition(action, state, kept_execution=True)


def test_operator_transitions():
    def act(action, state, kept):
        return machine.operator_transition(action, state, kept_execution=kept)

    cancel = act(OperatorAction.CANCEL, "ready", True)
    assert outcome(cancel)[:3] == ("canceled", "canceled", "canceled")
    skip = act(OperatorAction.SKIP, "paused", False)
    assert outcome(skip)[:4] == ("skipped", "skipped", "ready", "second")
    pause = act(OperatorAction.PAUSE, "ready", True)
    assert pause.move == Move.HOLD and pause.step_state is None
    assert machine.plan(pause, "first", NEXT).next_step == "first"
    assert act(OperatorAction.RESUME, "paused", True).move == Move.RELEASE
    retry = act(OperatorAction.RESUME, "paused", False)
    assert outcome(retry) == (None, None, "ready", "first", timedelta(0))


@pytest.mark.parametrize(
    ("on_timeout", "expected"),
    [
        ("skip", ("skipped", "skipped", Move.ADVANCE)),
        ("cancel", ("canceled", "canceled", Move.CANCEL)),
        ("pause", ("canceled", "canceled", Move.PAUSE)),
    ],
)
def test_signal_timeouts(on_timeout, expected):
    transition = machine.after_timeout(on_timeout)
    assert transition is not None
    assert (transition.step_state, transition.outcome, transition.move) == expected


def test_a_timeout_that_runs_the_body_is_decided_by_the_body():
    assert machine.after_timeout("run") is None
    assert machine.timeout_call("run") is None
    with pytest.raises(ValueError, match="unknown on_timeout"):
        machine.after_timeout("explode")


def test_only_success_and_skip_consume_a_signal():
    consuming = [
        machine.after_body(None),
        machine.after_body(FinishSignal()),
        machine.after_body(SkipSignal()),
        machine.after_precondition(Verdict.SKIPPED),
        machine.after_failure(ExceptionPolicy("skip")),  # failed / skipped: not consumed
    ]
    assert [machine.consumes_signal(t) for t in consuming] == [True, True, True, True, False]
    keeping = [
        machine.after_body(ReattemptSignal()),
        machine.after_body(PauseSignal()),
        machine.after_body(CancelSignal()),
        machine.after_failure(ExceptionPolicy("pause")),
        machine.after_failure(ExceptionPolicy("reattempt")),
        machine.recovery("reattempt"),
        machine.recovery("cancel"),
        machine.step_missing(),
    ]
    assert not any(machine.consumes_signal(t) for t in keeping)
