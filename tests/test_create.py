"""Creating a workflow: ``SomeWorkflow.create(hero=..., data=...)`` adds it to
``db.session``, flushes, and schedules its first step; the step is published only after
the caller commits."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pytest
import sqlalchemy as sa

from flask_geneva import step
from tests.helpers import outbox_rows, published_execution_ids, scheduled_execution
from tests.models import Note, db, geneva


class SignupWorkflow(geneva.Workflow):
    @step
    def welcome(self):
        pass


class DelayedSignupWorkflow(geneva.Workflow):
    @step(wait=timedelta(hours=6))
    def welcome(self):
        pass


def test_create_flushes_and_schedules_the_first_step(app, user):
    wf = SignupWorkflow.create(hero=user, data={"source": "web"})
    assert wf in db.session
    assert wf.id is not None
    assert (wf.state, wf.next_step_name, wf.data) == ("ready", "welcome", {"source": "web"})
    execution = scheduled_execution(wf)
    assert (execution.step_name, execution.state) == ("welcome", "scheduled")
    assert execution.scheduled_for == wf.created_at
    [message] = outbox_rows(wf)
    assert message.execution_id == execution.id


def test_the_first_step_waits_its_wait(app, user):
    wf = DelayedSignupWorkflow.create(hero=user)
    assert scheduled_execution(wf).scheduled_for == wf.created_at + timedelta(hours=6)


def test_the_first_step_is_published_only_after_commit(app, user):
    wf = SignupWorkflow.create(hero=user)
    execution_id = scheduled_execution(wf).id
    assert published_execution_ids(app) == []
    db.session.commit()
    assert published_execution_ids(app) == [execution_id]


def test_a_rolled_back_creation_publishes_nothing_and_leaves_nothing(app, user):
    db.session.add(Note(text="the caller's own write"))
    SignupWorkflow.create(hero=user)
    db.session.rollback()
    assert published_execution_ids(app) == []
    for model in (geneva.Workflow, geneva.StepExecution, geneva.OutboxMessage, Note):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0
    db.session.commit()  # a later commit publishes nothing either
    assert published_execution_ids(app) == []


def test_a_later_step_is_left_to_the_relay(app, user):
    wf = DelayedSignupWorkflow.create(hero=user)
    db.session.commit()
    assert published_execution_ids(app) == []
    assert len(outbox_rows(wf)) == 1  # the relay publishes it when it is due


def test_create_commits_together_with_the_callers_writes(app, user):
    db.session.add(Note(text="signed up"))
    wf = SignupWorkflow.create(hero=user)
    db.session.commit()
    db.session.expire_all()
    assert db.session.scalars(sa.select(Note.text)).all() == ["signed up"]
    assert db.session.get(geneva.Workflow, wf.id).state == "ready"


def test_create_on_the_base_class_is_refused(app, user):
    with pytest.raises(TypeError, match=r"not on geneva\.Workflow itself"):
        geneva.Workflow.create(hero=user)


def test_step_job_options_reach_the_step_message(app, user):
    class SlowLaneWorkflow(geneva.Workflow):
        step_job_options = {"queue_name": "slow_lane", "priority": 7, "time_limit": 90_000}

        @step
        def crunch(self):
            pass

    wf = SlowLaneWorkflow.create(hero=user)
    [row] = outbox_rows(wf)
    assert (row.queue_name, row.priority, row.time_limit_ms) == ("slow_lane", 7, 90_000)
    db.session.commit()
    broker = app.extensions["geneva"].broker
    [message] = [dramatiq.Message.decode(data) for data in list(broker.queues["slow_lane"].queue)]
    assert message.args == (scheduled_execution(wf).id,)
    assert message.options["time_limit"] == 90_000
    assert broker.get_actor(message.actor_name).priority == 7
