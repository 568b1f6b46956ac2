"""Before each step, inside the lock: a deleted hero, then every cancel_if, then
skip_if / only_if. Exceptions there follow the step's exception policy."""

from __future__ import annotations

import pytest

from flask_geneva import ExceptionPolicy, cancel_if, on_exception, step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.helpers import history, note_texts
from tests.models import Note, User, db, geneva


def _ran(body_name):
    """A step body that leaves a note saying it ran."""

    def body(wf):
        db.session.add(Note(text=body_name))

    return body


def test_a_deleted_hero_cancels_the_workflow_before_the_step(app, user):
    class HeroBoundWorkflow(geneva.Workflow):
        step(_ran("body"), name="greet")

    wf = HeroBoundWorkflow.create(hero=user)
    db.session.commit()
    db.session.delete(user)
    db.session.commit()
    perform_next_step(wf)
    assert history(wf) == [("greet", "canceled", "canceled")]
    assert wf.state == "canceled"
    assert wf.transitioned_at is not None
    assert note_texts() == []


def test_may_proceed_without_hero_runs_with_hero_none(app, user):
    class HeroOptionalWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def greet(self):
            self.data["hero_was"] = repr(self.hero)

    wf = HeroOptionalWorkflow.create(hero=user)
    db.session.commit()
    db.session.delete(user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert wf.data == {"hero_was": "None"}
    assert wf.hero_type == "User"  # the workflow still says whose it was


@pytest.mark.parametrize(
    ("condition", "cancels"),
    [
        (lambda wf: wf.hero.deactivated, True),
        (lambda wf: not wf.hero.deactivated, False),
        ("hero_is_deactivated", True),
        ("hero_is_active", False),
        (True, True),
        (False, False),
    ],
    ids=["callable true", "callable false", "method true", "method false", "True", "False"],
)
def test_cancel_if(app, user, condition, cancels):
    class CancelableWorkflow(geneva.Workflow):
        cancel_if(condition)
        step(_ran("body"), name="work")

        def hero_is_deactivated(self):
            return self.hero.deactivated

        def hero_is_active(self):
            return not self.hero.deactivated

    user.deactivated = True
    wf = CancelableWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    if cancels:
        assert history(wf) == [("work", "canceled", "canceled")]
        assert wf.state == "canceled"
        assert note_texts() == []
    else:
        assert history(wf) == [("work", "completed", "success")]
        assert wf.state == "finished"
        assert note_texts() == ["body"]


def test_every_cancel_if_is_checked_before_every_step(app, user):
    class WatchfulWorkflow(geneva.Workflow):
        cancel_if(lambda wf: wf.hero.deactivated)
        cancel_if(lambda wf: wf.data.get("stop"), lambda wf: wf.hero.counter > 1)

        @step
        def one(self):
            self.hero.counter = 2  # makes the third condition true from now on

        @step
        def two(self):
            db.session.add(Note(text="two ran"))

    wf = WatchfulWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert history(wf) == [("one", "completed", "success"), ("two", "canceled", "canceled")]
    assert note_texts() == []


def test_the_hero_is_loaded_fresh_for_the_preconditions(app, user):
    class FreshHeroWorkflow(geneva.Workflow):
        cancel_if(lambda wf: wf.hero.deactivated)
        step(_ran("body"), name="work")

    wf = FreshHeroWorkflow.create(hero=user)
    db.session.commit()
    assert wf.hero is not None  # cached on this instance now
    # Another process deactivates the hero.
    with db.engine.begin() as other:
        other.execute(User.__table__.update().values(deactivated=True))
    perform_next_step(wf)
    assert wf.state == "canceled"


@pytest.mark.parametrize(
    ("option", "condition", "skips"),
    [
        ("skip_if", lambda wf: wf.hero.active, True),
        ("skip_if", lambda wf: not wf.hero.active, False),
        ("skip_if", "already_active", True),
        ("skip_if", "not_active", False),
        ("skip_if", True, True),
        ("skip_if", False, False),
        ("only_if", lambda wf: wf.hero.active, False),
        ("only_if", lambda wf: not wf.hero.active, True),
        ("only_if", "already_active", False),
        ("only_if", "not_active", True),
        ("only_if", True, False),
        ("only_if", False, True),
    ],
)
def test_skip_if_and_only_if(app, user, option, condition, skips):
    class ConditionalWorkflow(geneva.Workflow):
        step(_ran("activate"), name="activate", **{option: condition})
        step(_ran("after"), name="after")

        def already_active(self):
            return self.hero.active

        def not_active(self):
            return not self.hero.active

    user.active = True
    wf = ConditionalWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    if skips:
        assert history(wf) == [("activate", "skipped", "skipped"), ("after", "scheduled", None)]
        assert note_texts() == []
    else:
        assert history(wf) == [("activate", "completed", "success"), ("after", "scheduled", None)]
        assert note_texts() == ["activate"]
    assert wf.state == "ready"
    assert wf.previous_step_name == "activate"


def test_skipping_the_last_step_by_condition_finishes(app, user):
    class SkipLastWorkflow(geneva.Workflow):
        step(_ran("only"), name="only", skip_if=True)

    wf = SkipLastWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    assert wf.state == "finished"
    assert history(wf) == [("only", "skipped", "skipped")]


def test_the_order_is_hero_then_cancel_if_then_skip_if(app, user):
    checked = []

    class OrderedChecksWorkflow(geneva.Workflow):
        may_proceed_without_hero = True
        cancel_if(lambda wf: checked.append("cancel_if") or wf.data.get("cancel"))
        step(
            _ran("body"),
            name="work",
            skip_if=lambda wf: checked.append("skip_if") or True,
        )

    wf = OrderedChecksWorkflow.create(hero=user, data={"cancel": True})
    db.session.commit()
    perform_next_step(wf)
    assert checked == ["cancel_if"]  # a true cancel_if wins; skip_if is not asked
    assert history(wf) == [("work", "canceled", "canceled")]

    checked.clear()
    hero_bound = OrderedChecksWorkflow.create(hero=user, data={"cancel": False})
    db.session.commit()
    perform_next_step(hero_bound)
    assert checked == ["cancel_if", "skip_if"]
    assert history(hero_bound) == [("work", "skipped", "skipped")]


def test_a_deleted_hero_is_checked_before_cancel_if(app, user):
    checked = []

    class HeroFirstWorkflow(geneva.Workflow):
        cancel_if(lambda wf: checked.append("cancel_if"))
        step(_ran("body"), name="work")

    wf = HeroFirstWorkflow.create(hero=user)
    db.session.commit()
    db.session.delete(user)
    db.session.commit()
    perform_next_step(wf)
    assert checked == []
    assert wf.state == "canceled"


class CheckFailed(Exception):
    pass


def _explode(wf):
    raise CheckFailed("the check itself failed")


@pytest.mark.parametrize("where", ["cancel_if", "skip_if", "only_if"])
@pytest.mark.parametrize(
    ("policy", "outcome", "state"),
    [
        (None, "failed", "paused"),
        ("cancel", "canceled", "canceled"),
        ("skip", "skipped", "finished"),
        (ExceptionPolicy("reattempt", wait=60), "reattempted", "ready"),
    ],
    ids=["default", "cancel", "skip", "reattempt"],
)
def test_an_exception_in_a_precondition_follows_the_steps_policy(
    app, user, where, policy, outcome, state
):
    options = {} if policy is None else {"on_exception": policy}
    if where != "cancel_if":
        options[where] = _explode

    class ExplodingCheckWorkflow(geneva.Workflow):
        if where == "cancel_if":
            cancel_if(_explode)
        step(_ran("body"), name="work", **options)

    wf = ExplodingCheckWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(CheckFailed):
        perform_next_step(wf)
    assert history(wf)[0] == ("work", "failed", outcome)
    assert wf.state == state
    assert note_texts() == []  # the body never ran
    [failed] = [e for e in wf.execution_history if e.state == "failed"]
    assert failed.error_class_name.endswith("CheckFailed")
    assert failed.error_message == "the check itself failed"
    assert "_explode" in failed.error_backtrace


def test_an_exception_in_a_precondition_counts_against_max_reattempts(app, user):
    class FlakyCheckWorkflow(geneva.Workflow):
        cancel_if(_explode)
        step(_ran("body"), name="work", on_exception="reattempt", max_reattempts=1)

    wf = FlakyCheckWorkflow.create(hero=user)
    db.session.commit()
    for _ in range(2):
        with pytest.raises(CheckFailed):
            perform_next_step(wf)
    assert history(wf) == [("work", "failed", "reattempted"), ("work", "failed", "failed")]
    assert wf.state == "paused"


def test_an_exception_in_a_precondition_goes_to_an_imperative_handler(app, user):
    class HandledCheckWorkflow(geneva.Workflow):
        cancel_if(_explode)
        step(_ran("body"), name="work")
        step(_ran("next"), name="next_one")

        @on_exception(CheckFailed)
        def handle(self, exc):
            self.data["handled"] = str(exc)
            self.skip()

    wf = HandledCheckWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(CheckFailed):
        perform_next_step(wf)
    assert history(wf) == [("work", "failed", "skipped"), ("next_one", "scheduled", None)]
    assert wf.data == {"handled": "the check itself failed"}
    assert note_texts() == []
