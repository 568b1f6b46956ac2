"""A step's own database writes and its changes to ``data`` commit together with its
outcome, in one transaction, and roll back when it fails."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.executor import execute_step
from flask_geneva.testing import perform_next_step
from tests.helpers import (
    history,
    note_texts,
    published_execution_ids,
    reload,
    scheduled_execution,
)
from tests.models import Note, User, db, geneva


def test_data_given_at_creation_is_stored(app, user):
    class DataWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = DataWorkflow.create(hero=user, data={"plan": "gold", "seats": [1, 2]})
    db.session.commit()
    assert reload(wf).data == {"plan": "gold", "seats": [1, 2]}


def test_data_defaults_to_an_empty_dict(app, user):
    class EmptyDataWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = EmptyDataWorkflow.create(hero=user)
    db.session.commit()
    assert reload(wf).data == {}


@pytest.mark.parametrize("bad", [["not", "a", "dict"], {"when": object()}])
def test_data_must_be_a_json_serialisable_dict(app, user, bad):
    class StrictDataWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    with pytest.raises(ValueError, match=r"StrictDataWorkflow\.create"):
        StrictDataWorkflow.create(hero=user, data=bad)


def test_changes_to_data_inside_a_step_are_saved_nested_ones_too(app, user):
    class NestedDataWorkflow(geneva.Workflow):
        @step
        def first(self):
            self.data["top"] = 1
            self.data["nested"]["list"].append(3)  # in place, two levels down
            self.data["nested"]["count"] += 1

        @step
        def second(self):
            self.data["seen_in_second"] = dict(self.data["nested"])

    wf = NestedDataWorkflow.create(hero=user, data={"nested": {"list": [1, 2], "count": 0}})
    db.session.commit()
    perform_next_step(wf)
    assert reload(wf).data == {"top": 1, "nested": {"list": [1, 2, 3], "count": 1}}
    perform_next_step(wf)
    assert reload(wf).data["seen_in_second"] == {"list": [1, 2, 3], "count": 1}


def test_a_step_putting_unserialisable_data_fails_and_keeps_the_old_data(app, user):
    class BadDataWorkflow(geneva.Workflow):
        @step
        def only(self):
            self.data["when"] = object()

    wf = BadDataWorkflow.create(hero=user, data={"kept": True})
    db.session.commit()
    with pytest.raises(TypeError):
        perform_next_step(wf)
    assert history(wf) == [("only", "failed", "failed")]
    assert reload(wf).data == {"kept": True}


@pytest.mark.parametrize(
    ("ending", "state"),
    [
        (lambda wf: None, "finished"),
        (lambda wf: wf.finish(), "finished"),
        (lambda wf: wf.skip(), "finished"),
        (lambda wf: wf.reattempt(60), "ready"),
        (lambda wf: wf.cancel(), "canceled"),
        (lambda wf: wf.pause(), "paused"),
    ],
    ids=["return", "finish", "skip", "reattempt", "cancel", "pause"],
)
def test_the_steps_writes_commit_with_its_outcome(app, user, ending, state):
    class WritingWorkflow(geneva.Workflow):
        @step
        def write(self):
            db.session.add(Note(text="written by the step"))
            self.hero.counter += 1
            self.data["wrote"] = True
            ending(self)

    wf = WritingWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    db.session.expire_all()
    assert wf.state == state
    assert note_texts() == ["written by the step"]
    assert db.session.get(User, user.id).counter == 1
    assert wf.data == {"wrote": True}


def test_the_steps_writes_roll_back_when_it_raises(app, user):
    class FailingWritesWorkflow(geneva.Workflow):
        @step
        def write(self):
            db.session.add(Note(text="never kept"))
            self.hero.counter += 1
            self.data["wrote"] = True
            db.session.flush()  # even writes already sent to the database
            raise RuntimeError("boom")

    wf = FailingWritesWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(RuntimeError, match="boom"):
        perform_next_step(wf)
    db.session.expire_all()
    assert history(wf) == [("write", "failed", "failed")]
    assert note_texts() == []
    assert db.session.get(User, user.id).counter == 0
    assert wf.data == {}


def test_a_database_error_in_step_code_is_the_steps_failure(app, user):
    class DuplicateNoteWorkflow(geneva.Workflow):
        @step
        def write(self):
            db.session.add(Note(id=1, text="one"))
            db.session.add(Note(id=1, text="same id"))

    wf = DuplicateNoteWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(sa.exc.IntegrityError):
        perform_next_step(wf)
    assert history(wf) == [("write", "failed", "failed")]
    assert reload(wf).state == "paused"
    assert note_texts() == []


def test_writes_of_a_step_whose_execution_was_recovered_meanwhile_are_discarded(app, user):
    """If housekeeping recovered the execution while the body ran, the body's writes are
    rolled back and nothing is recorded: the recovery's outcome stands."""
    execution_model = geneva.StepExecution

    class SlowWorkflow(geneva.Workflow):
        @step
        def slow(self):
            running_id = self.current_execution.id
            # Another process (housekeeping) recovers the execution while the body runs.
            with db.engine.begin() as other:
                other.execute(
                    sa.update(execution_model)
                    .where(execution_model.id == running_id)
                    .values(state="completed", outcome="recovered")
                )
            db.session.add(Note(text="late write"))
            self.hero.counter += 1
            self.data["late"] = True

        @step
        def next_one(self):
            pass

    wf = SlowWorkflow.create(hero=user)
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    assert execute_step(geneva, execution_id) is None
    db.session.expire_all()
    assert note_texts() == []
    assert db.session.get(User, user.id).counter == 0
    assert history(wf) == [("slow", "completed", "recovered")]
    assert wf.data == {}
    assert wf.state == "performing"  # untouched by the step: recovery owns it


def test_data_reads_the_same_before_and_after_it_is_stored(app, user):
    class RoundTripWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = RoundTripWorkflow.create(hero=user, data={"pair": (1, 2), 3: "three"})
    assert wf.data == {"pair": [1, 2], "3": "three"}
    db.session.commit()
    assert reload(wf).data == {"pair": [1, 2], "3": "three"}


def test_a_workflow_started_by_a_step_starts_with_the_steps_outcome(app, user):
    class ChildWorkflow(geneva.Workflow):
        allow_multiple = True

        @step
        def only(self):
            pass

    class ParentWorkflow(geneva.Workflow):
        @step
        def spawn(self):
            ChildWorkflow.create(hero=self.hero)
            if self.data.get("fail"):
                raise RuntimeError("spawned, then failed")

    children = sa.select(sa.func.count()).select_from(ChildWorkflow)
    ok = ParentWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(ok)
    assert db.session.scalar(children) == 1
    [child] = db.session.scalars(sa.select(ChildWorkflow)).all()
    assert scheduled_execution(child).id in published_execution_ids(app)

    failing = ParentWorkflow.create(hero=user, data={"fail": True})
    db.session.commit()
    before = published_execution_ids(app)
    with pytest.raises(RuntimeError):
        perform_next_step(failing)
    assert db.session.scalar(children) == 1  # the failed step started nothing
    assert published_execution_ids(app) == before
