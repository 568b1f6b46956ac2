"""The in-step flow-control methods: cancel(), pause(), reattempt(wait), skip(), finish()."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import InvalidStateError, step
from flask_geneva.flow import FlowControlSignal
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.helpers import executions, history
from tests.models import db, geneva


@pytest.mark.parametrize("method", ["cancel", "pause", "skip", "reattempt", "finish"])
def test_except_exception_in_step_code_does_not_swallow_flow_control(app, user, method):
    class SwallowingWorkflow(geneva.Workflow):
        @step
        def careful(self):
            try:
                getattr(self, method)()
            except Exception:  # what careless step code does
                self.data["swallowed"] = True

        @step
        def after(self):
            pass

    wf = SwallowingWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    assert "swallowed" not in wf.data
    expected = {
        "cancel": ("canceled", "canceled"),
        "pause": ("canceled", "canceled"),
        "skip": ("skipped", "skipped"),
        "reattempt": ("completed", "reattempted"),
        "finish": ("completed", "success"),
    }[method]
    assert history(wf)[0] == ("careful", *expected)


def test_flow_control_signals_are_base_exceptions_not_exceptions():
    assert issubclass(FlowControlSignal, BaseException)
    assert not issubclass(FlowControlSignal, Exception)


@pytest.mark.parametrize("method", ["reattempt", "finish"])
def test_reattempt_and_finish_outside_a_step_raise_and_change_nothing(app, user, method):
    class OutsideWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = OutsideWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(InvalidStateError, match=rf"{method}\(\).*inside a step"):
        getattr(wf, method)()
    db.session.commit()
    assert wf.state == "ready"
    assert history(wf) == [("only", "scheduled", None)]


def test_reattempt_takes_its_wait_in_seconds_too(app, user):
    class SecondsWorkflow(geneva.Workflow):
        @step
        def poll(self):
            self.reattempt(90)

    wf = SecondsWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    done, upcoming = executions(wf)
    assert upcoming.scheduled_for - done.finished_at == timedelta(seconds=90)


def test_reattempt_without_wait_runs_again_at_once(app, user):
    class NoWaitWorkflow(geneva.Workflow):
        @step
        def poll(self):
            self.reattempt()

    wf = NoWaitWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    done, upcoming = executions(wf)
    assert upcoming.scheduled_for == done.finished_at


def test_reattempt_by_step_code_is_not_limited_by_max_reattempts(app, user):
    class PollingWorkflow(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=2)
        def poll(self):
            self.data["polls"] = self.data.get("polls", 0) + 1
            if self.data["polls"] < 6:
                self.reattempt()

    wf = PollingWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert wf.data["polls"] == 6
    assert [outcome for _, _, outcome in history(wf)] == ["reattempted"] * 5 + ["success"]


def test_reattempt_by_step_code_goes_past_the_default_limit(app, user):
    class LongPollingWorkflow(geneva.Workflow):
        @step(on_exception="reattempt")  # default max_reattempts: 100
        def poll(self):
            self.data["polls"] = self.data.get("polls", 0) + 1
            if self.data["polls"] <= 101:
                self.reattempt()

    wf = LongPollingWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf, max_iterations=110)
    assert wf.state == "finished"
    assert wf.data["polls"] == 102


def test_a_resumed_pause_runs_the_same_step_again(app, user):
    class ApprovalWorkflow(geneva.Workflow):
        @step
        def wait_for_approval(self):
            if not self.data.get("approved"):
                self.data["asked"] = self.data.get("asked", 0) + 1
                self.pause()

        @step
        def ship(self):
            self.data["shipped"] = True

    wf = ApprovalWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "paused"
    assert wf.next_step_name == "wait_for_approval"
    wf.data["approved"] = True
    wf.resume()
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert wf.data == {"asked": 1, "approved": True, "shipped": True}
    assert [name for name, _, _ in history(wf)] == [
        "wait_for_approval",
        "wait_for_approval",
        "ship",
    ]
