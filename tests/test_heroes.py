"""Heroes: the record a workflow is about. Integer and UUID keys, deleted heroes,
workflows without a hero, and at most one ongoing workflow per class and hero."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from flask_geneva import WorkflowAlreadyOngoing, step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.helpers import reload
from tests.models import Document, Note, User, db, geneva


class HeroWorkflow(geneva.Workflow):
    @step
    def touch(self):
        self.data["hero"] = repr(self.hero)

    @step
    def last(self):
        pass


class SharedHeroWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def touch(self):
        pass


def test_an_integer_keyed_hero(app, user):
    wf = HeroWorkflow.create(hero=user)
    db.session.commit()
    assert (wf.hero_type, wf.hero_id) == ("User", str(user.id))
    assert reload(wf).hero is db.session.get(User, user.id)
    perform_next_step(wf)
    assert wf.data == {"hero": repr(db.session.get(User, user.id))}


def test_a_uuid_keyed_hero(app):
    document = Document(title="contract")
    db.session.add(document)
    db.session.commit()
    wf = HeroWorkflow.create(hero=document)
    db.session.commit()
    assert wf.hero_type == "Document"
    assert uuid.UUID(wf.hero_id) == document.id
    fresh = reload(wf)
    assert fresh.hero.id == document.id
    assert fresh.hero.title == "contract"
    speedrun_workflow(fresh)
    assert fresh.state == "finished"


def test_a_hero_not_yet_flushed_gets_its_key_on_create(app):
    hero = User(email="new@example.com")
    db.session.add(hero)
    wf = HeroWorkflow.create(hero=hero)
    assert hero.id is not None
    assert wf.hero_id == str(hero.id)
    db.session.commit()


def test_a_deleted_hero_reads_as_none(app, user):
    wf = HeroWorkflow.create(hero=user)
    db.session.commit()
    db.session.delete(user)
    db.session.commit()
    fresh = reload(wf)
    assert fresh.hero is None
    assert (fresh.hero_type, fresh.hero_id) == ("User", str(user.id))


def test_a_workflow_needs_a_hero_unless_it_says_otherwise(app):
    with pytest.raises(ValueError, match=r"HeroWorkflow\.create\(\) needs a hero"):
        HeroWorkflow.create(hero=None)
    with pytest.raises(ValueError, match="needs a hero"):
        HeroWorkflow.create()
    assert db.session.scalars(sa.select(geneva.Workflow)).all() == []


def test_a_workflow_without_a_hero(app):
    class HeroLessWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def only(self):
            self.data["hero"] = repr(self.hero)

    first = HeroLessWorkflow.create()
    second = HeroLessWorkflow.create(data={"n": 2})  # no hero: allow_multiple is moot
    db.session.commit()
    assert (first.hero_type, first.hero_id, first.hero) == (None, None, None)
    speedrun_workflow(first)
    speedrun_workflow(second)
    assert first.data == {"hero": "None"}
    assert second.state == "finished"


def test_a_hero_must_be_a_mapped_instance(app):
    class NotMapped:
        id = 1

    with pytest.raises(ValueError, match="mapped SQLAlchemy instance"):
        HeroWorkflow.create(hero=NotMapped())


@pytest.mark.parametrize("state", ["ready", "paused"])
def test_a_second_ongoing_workflow_for_the_same_hero_is_refused(app, user, state):
    first = HeroWorkflow.create(hero=user)
    db.session.commit()
    if state == "paused":
        first.pause()
        db.session.commit()
    with pytest.raises(WorkflowAlreadyOngoing, match=rf"HeroWorkflow #{first.id} is already"):
        HeroWorkflow.create(hero=user)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 1


def test_the_refusal_holds_while_the_first_one_performs(app, user):
    refused = []

    class BusyHeroWorkflow(geneva.Workflow):
        @step
        def busy(self):
            try:
                BusyHeroWorkflow.create(hero=self.hero)
            except WorkflowAlreadyOngoing:
                refused.append(True)

    wf = BusyHeroWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    assert refused == [True]


@pytest.mark.parametrize("end", ["finish", "cancel"])
def test_a_new_workflow_may_start_once_the_first_has_ended(app, user, end):
    first = HeroWorkflow.create(hero=user)
    db.session.commit()
    if end == "finish":
        speedrun_workflow(first)
    else:
        first.cancel()
        db.session.commit()
    second = HeroWorkflow.create(hero=user)
    db.session.commit()
    assert second.id != first.id
    assert second.state == "ready"


def test_other_heroes_and_other_classes_are_not_affected(app, user):
    other_user = User(email="other@example.com")
    db.session.add(other_user)
    HeroWorkflow.create(hero=user)
    HeroWorkflow.create(hero=other_user)
    SharedHeroWorkflow.create(hero=user)
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 3


def test_allow_multiple_allows_several_ongoing_workflows(app, user):
    first = SharedHeroWorkflow.create(hero=user)
    second = SharedHeroWorkflow.create(hero=user)
    db.session.commit()
    assert first.id != second.id
    assert {first.state, second.state} == {"ready"}


def test_the_unique_index_refuses_what_the_check_cannot_see(app, user):
    """Two creations that cannot see each other (here: the first one was inserted behind
    the ORM's back, as a concurrent request would) still end with one ongoing workflow."""
    table = geneva.Workflow.__table__
    now = sa.func.current_timestamp()
    with db.engine.begin() as other:
        other.execute(
            table.insert().values(
                workflow_class="HeroWorkflow", state="ready", hero_type="User",
                hero_id=str(user.id), data={}, allow_multiple=False, execution_count=0,
                created_at=now, updated_at=now,
            )
        )
    # The check sees the committed row, so it refuses before the insert...
    with pytest.raises(WorkflowAlreadyOngoing):
        HeroWorkflow.create(hero=user)
    db.session.rollback()
    # ...and without the check the unique index refuses the row itself.
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as other:
        other.execute(
            table.insert().values(
                workflow_class="HeroWorkflow", state="paused", hero_type="User",
                hero_id=str(user.id), data={}, allow_multiple=False, execution_count=0,
                created_at=now, updated_at=now,
            )
        )


def test_a_callers_own_integrity_error_is_not_mistaken_for_an_ongoing_workflow(app, user):
    with db.engine.begin() as other:
        other.execute(Note.__table__.insert().values(id=5, text="already there"))
    db.session.add(Note(id=5, text="same key"))  # the caller's own mistake
    with pytest.raises(sa.exc.IntegrityError) as raised:
        SharedHeroWorkflow.create(hero=user)
    assert not isinstance(raised.value, WorkflowAlreadyOngoing)
    db.session.rollback()
