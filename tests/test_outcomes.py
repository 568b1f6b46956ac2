"""The outcome table of SPEC §3: what each result of a step does to its execution and
to the workflow."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import ExceptionPolicy, step
from flask_geneva.testing import perform_next_step
from tests.helpers import executions, history, outbox_rows, scheduled_execution
from tests.models import db, geneva


class PaymentDeclined(Exception):
    pass


def _start(workflow_class, user):
    wf = workflow_class.create(hero=user)
    db.session.commit()
    return wf


def _assert_scheduled_after(wf, step_name, wait):
    """The workflow's scheduled execution runs ``step_name`` ``wait`` after the last one
    finished, and its message waits in the outbox until then."""
    previous = executions(wf)[-2]
    upcoming = scheduled_execution(wf)
    assert upcoming is not None
    assert upcoming.step_name == step_name
    assert upcoming.scheduled_for == previous.finished_at + wait
    [message] = outbox_rows(wf)
    assert message.execution_id == upcoming.id
    assert message.available_at == upcoming.scheduled_for


def test_a_step_that_returns_normally_schedules_the_next_step(app, user):
    class OutcomeReturns(geneva.Workflow):
        @step
        def first(self):
            pass

        @step(wait=timedelta(hours=2))
        def second(self):
            pass

    wf = _start(OutcomeReturns, user)
    perform_next_step(wf)
    assert history(wf) == [
        ("first", "completed", "success"),
        ("second", "scheduled", None),
    ]
    assert wf.state == "ready"
    assert wf.next_step_name == "second"
    _assert_scheduled_after(wf, "second", timedelta(hours=2))


def test_the_last_step_returning_normally_finishes_the_workflow(app, user):
    class OutcomeReturnsLast(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = _start(OutcomeReturnsLast, user)
    perform_next_step(wf)
    assert history(wf) == [("only", "completed", "success")]
    assert wf.state == "finished"
    assert wf.next_step_name is None
    assert scheduled_execution(wf) is None
    assert outbox_rows(wf) == []


def test_reattempt_schedules_the_same_step_again_after_its_wait(app, user):
    class OutcomeReattempt(geneva.Workflow):
        @step
        def poll(self):
            self.reattempt(wait=timedelta(minutes=5))

        @step
        def after(self):
            pass

    wf = _start(OutcomeReattempt, user)
    perform_next_step(wf)
    assert history(wf) == [("poll", "completed", "reattempted"), ("poll", "scheduled", None)]
    assert wf.state == "ready"
    assert wf.next_step_name == "poll"
    _assert_scheduled_after(wf, "poll", timedelta(minutes=5))


def test_skip_schedules_the_next_step(app, user):
    class OutcomeSkip(geneva.Workflow):
        @step
        def first(self):
            self.skip()

        @step(wait=30)
        def second(self):
            pass

    wf = _start(OutcomeSkip, user)
    perform_next_step(wf)
    assert history(wf) == [("first", "skipped", "skipped"), ("second", "scheduled", None)]
    assert wf.state == "ready"
    assert wf.previous_step_name == "first"
    _assert_scheduled_after(wf, "second", timedelta(seconds=30))


def test_skipping_the_last_step_finishes_the_workflow(app, user):
    class OutcomeSkipLast(geneva.Workflow):
        @step
        def only(self):
            self.skip()

    wf = _start(OutcomeSkipLast, user)
    perform_next_step(wf)
    assert history(wf) == [("only", "skipped", "skipped")]
    assert wf.state == "finished"


def test_cancel_cancels_the_workflow(app, user):
    class OutcomeCancel(geneva.Workflow):
        @step
        def first(self):
            self.cancel()

        @step
        def second(self):
            pass

    wf = _start(OutcomeCancel, user)
    perform_next_step(wf)
    assert history(wf) == [("first", "canceled", "canceled")]
    assert wf.state == "canceled"
    assert wf.next_step_name is None
    assert scheduled_execution(wf) is None
    assert outbox_rows(wf) == []


def test_pause_pauses_the_workflow_at_the_same_step(app, user):
    class OutcomePause(geneva.Workflow):
        @step
        def first(self):
            self.pause()

        @step
        def second(self):
            pass

    wf = _start(OutcomePause, user)
    perform_next_step(wf)
    assert history(wf) == [("first", "canceled", "canceled")]
    assert wf.state == "paused"
    assert wf.next_step_name == "first"
    assert scheduled_execution(wf) is None


def test_finish_finishes_the_workflow_skipping_the_remaining_steps(app, user):
    class OutcomeFinish(geneva.Workflow):
        @step
        def first(self):
            self.finish()

        @step
        def second(self):
            pass

    wf = _start(OutcomeFinish, user)
    perform_next_step(wf)
    assert history(wf) == [("first", "completed", "success")]
    assert wf.state == "finished"
    assert wf.next_step_name is None
    assert scheduled_execution(wf) is None


def test_an_exception_pauses_the_workflow_by_default(app, user):
    class OutcomeDefaultPolicy(geneva.Workflow):
        @step
        def charge(self):
            raise PaymentDeclined("card expired")

    wf = _start(OutcomeDefaultPolicy, user)
    with pytest.raises(PaymentDeclined):
        perform_next_step(wf)
    assert history(wf) == [("charge", "failed", "failed")]
    assert wf.state == "paused"
    assert wf.next_step_name == "charge"
    assert scheduled_execution(wf) is None


def test_an_exception_under_the_cancel_policy_cancels_the_workflow(app, user):
    class OutcomeCancelPolicy(geneva.Workflow):
        @step(on_exception="cancel")
        def charge(self):
            raise PaymentDeclined("card expired")

    wf = _start(OutcomeCancelPolicy, user)
    with pytest.raises(PaymentDeclined):
        perform_next_step(wf)
    assert history(wf) == [("charge", "failed", "canceled")]
    assert wf.state == "canceled"
    assert scheduled_execution(wf) is None


def test_an_exception_under_the_reattempt_policy_schedules_the_step_again(app, user):
    class OutcomeReattemptPolicy(geneva.Workflow):
        @step(on_exception=ExceptionPolicy("reattempt", wait=timedelta(minutes=10)))
        def charge(self):
            raise PaymentDeclined("card expired")

    wf = _start(OutcomeReattemptPolicy, user)
    with pytest.raises(PaymentDeclined):
        perform_next_step(wf)
    assert history(wf) == [("charge", "failed", "reattempted"), ("charge", "scheduled", None)]
    assert wf.state == "ready"
    _assert_scheduled_after(wf, "charge", timedelta(minutes=10))


@pytest.mark.parametrize(
    ("terminal_action", "last_outcome", "workflow_state"),
    [("pause", "failed", "paused"), ("cancel", "canceled", "canceled")],
)
def test_past_max_reattempts_the_terminal_action_applies(
    app, user, terminal_action, last_outcome, workflow_state
):
    class OutcomeReattemptsRunOut(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=2, terminal_action=terminal_action)
        def charge(self):
            raise PaymentDeclined("card expired")

    wf = _start(OutcomeReattemptsRunOut, user)
    for _ in range(3):
        with pytest.raises(PaymentDeclined):
            perform_next_step(wf)
    assert history(wf) == [
        ("charge", "failed", "reattempted"),
        ("charge", "failed", "reattempted"),
        ("charge", "failed", last_outcome),
    ]
    assert wf.state == workflow_state
    assert scheduled_execution(wf) is None


def test_an_exception_under_the_skip_policy_schedules_the_next_step(app, user):
    class OutcomeSkipPolicy(geneva.Workflow):
        @step(on_exception="skip")
        def charge(self):
            raise PaymentDeclined("card expired")

        @step(wait=timedelta(days=1))
        def thank(self):
            pass

    wf = _start(OutcomeSkipPolicy, user)
    with pytest.raises(PaymentDeclined):
        perform_next_step(wf)
    assert history(wf) == [("charge", "failed", "skipped"), ("thank", "scheduled", None)]
    assert wf.state == "ready"
    assert wf.previous_step_name == "charge"
    _assert_scheduled_after(wf, "thank", timedelta(days=1))


def test_every_failed_attempt_keeps_its_error_class_message_and_backtrace(app, user):
    class OutcomeErrorsKept(geneva.Workflow):
        @step(on_exception="reattempt")
        def charge(self):
            self.data["attempt"] = self.data.get("attempt", 0) + 1
            raise PaymentDeclined(f"declined on attempt {self.data['attempt']}")

    wf = _start(OutcomeErrorsKept, user)
    for _ in range(2):
        with pytest.raises(PaymentDeclined):
            perform_next_step(wf)
    failed = [e for e in executions(wf) if e.state == "failed"]
    assert len(failed) == 2
    for execution in failed:
        assert execution.error_class_name == f"{__name__}.PaymentDeclined"
        # The body's change to data was rolled back with the failure: always attempt 1.
        assert execution.error_message == "declined on attempt 1"
        assert "Traceback (most recent call last)" in execution.error_backtrace
        assert 'raise PaymentDeclined(f"declined on attempt' in execution.error_backtrace
        assert execution.finished_at is not None
    assert wf.data == {}
