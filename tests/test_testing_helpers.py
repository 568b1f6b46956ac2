"""flask_geneva.testing: speedrun_workflow, perform_next_step, perform_step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import InvalidStateError, step
from flask_geneva.testing import perform_next_step, perform_step, speedrun_workflow
from tests.helpers import history, note_texts
from tests.models import Note, db, geneva


class HelpersOnboardingWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def welcome(self):
        self.data.setdefault("ran", []).append("welcome")
        if self.data.get("stop_at") == "welcome":
            getattr(self, self.data["how"])()

    @step(wait=timedelta(days=3))
    def nudge(self):
        self.data.setdefault("ran", []).append("nudge")
        if self.data.get("explode"):
            raise RuntimeError("nudge failed")

    @step(wait=timedelta(days=30))
    def survey(self):
        self.data.setdefault("ran", []).append("survey")


def _create(user, **data):
    wf = HelpersOnboardingWorkflow.create(hero=user, data=data)
    db.session.commit()
    return wf


def test_speedrun_runs_every_step_ignoring_waits(app, user):
    wf = _create(user)
    assert speedrun_workflow(wf) is wf
    assert wf.state == "finished"
    assert wf.data["ran"] == ["welcome", "nudge", "survey"]


@pytest.mark.parametrize(("how", "state"), [("pause", "paused"), ("cancel", "canceled")])
def test_speedrun_stops_when_the_workflow_pauses_or_cancels(app, user, how, state):
    wf = _create(user, stop_at="welcome", how=how)
    speedrun_workflow(wf)
    assert wf.state == state
    assert wf.data["ran"] == ["welcome"]


def test_speedrun_lets_a_steps_exception_propagate_after_saving_its_outcome(app, user):
    wf = _create(user, explode=True)
    with pytest.raises(RuntimeError, match="nudge failed"):
        speedrun_workflow(wf)
    assert wf.state == "paused"  # refreshed, and the outcome is saved
    assert history(wf)[-1] == ("nudge", "failed", "failed")


def test_speedrun_raises_when_max_iterations_is_reached(app, user):
    class ForeverWorkflow(geneva.Workflow):
        @step
        def poll(self):
            self.data["polls"] = self.data.get("polls", 0) + 1
            self.reattempt(timedelta(hours=1))

    wf = ForeverWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(RuntimeError, match="still ready after 5 steps"):
        speedrun_workflow(wf, max_iterations=5)
    assert wf.data["polls"] == 5


def test_speedrun_of_an_already_finished_workflow_does_nothing(app, user):
    wf = _create(user)
    speedrun_workflow(wf)
    speedrun_workflow(wf)
    assert wf.data["ran"] == ["welcome", "nudge", "survey"]


def test_helpers_commit_like_a_worker(app, user):
    wf = _create(user)
    db.session.add(Note(text="made by the test before the helper"))
    perform_next_step(wf)
    db.session.rollback()
    assert note_texts() == ["made by the test before the helper"]
    assert wf.data["ran"] == ["welcome"]


def test_perform_next_step_runs_the_scheduled_step_now(app, user):
    wf = _create(user)
    perform_next_step(wf)
    assert (wf.state, wf.next_step_name) == ("ready", "nudge")
    perform_next_step(wf)  # three days early
    assert wf.data["ran"] == ["welcome", "nudge"]
    assert wf.next_step_name == "survey"


def test_perform_next_step_needs_a_ready_workflow(app, user):
    wf = _create(user)
    wf.pause()
    db.session.commit()
    with pytest.raises(InvalidStateError, match="paused"):
        perform_next_step(wf)


def test_perform_step_cancels_what_is_scheduled_and_runs_that_step(app, user):
    wf = _create(user)
    assert perform_step(wf, "survey") is wf
    assert history(wf) == [("welcome", "canceled", "canceled"), ("survey", "completed", "success")]
    assert wf.state == "finished"
    assert wf.data["ran"] == ["survey"]


def test_perform_step_continues_with_the_following_step(app, user):
    wf = _create(user)
    perform_step(wf, "nudge")
    assert wf.next_step_name == "survey"
    assert history(wf)[-1] == ("survey", "scheduled", None)


def test_perform_step_on_a_paused_workflow(app, user):
    wf = _create(user)
    wf.pause()
    db.session.commit()
    perform_step(wf, "welcome")
    assert wf.state == "ready"
    assert wf.data["ran"] == ["welcome"]


def test_perform_step_with_an_unknown_name_lists_the_steps(app, user):
    wf = _create(user)
    listed = "no step 'farewell'; its steps are: welcome, nudge, survey"
    with pytest.raises(ValueError, match=listed):
        perform_step(wf, "farewell")
    assert history(wf) == [("welcome", "scheduled", None)]


def test_perform_step_lets_a_steps_exception_propagate(app, user):
    wf = _create(user, explode=True)
    with pytest.raises(RuntimeError, match="nudge failed"):
        perform_step(wf, "nudge")
    assert wf.state == "paused"
