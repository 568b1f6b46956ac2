"""Operator actions from outside a step: resume(), cancel(), pause(), skip().

Each one is allowed in some workflow states only; anywhere else it raises
InvalidStateError and changes nothing. Each leaves the commit to the caller.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva import InvalidStateError, step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from tests.helpers import executions, history, outbox_rows, scheduled_execution
from tests.models import db, geneva

ACTIONS = ("resume", "cancel", "pause", "skip")
ALLOWED = {
    "ready": {"cancel", "pause", "skip"},
    "paused": {"resume", "cancel", "skip"},
    "performing": set(),
    "finished": set(),
    "canceled": set(),
}


class OperatedWorkflow(geneva.Workflow):
    @step
    def first(self):
        if self.data.get("fail"):
            raise RuntimeError("first failed")

    @step(wait=timedelta(days=1))
    def second(self):
        pass


def _in_state(state, user):
    """A committed OperatedWorkflow in ``state`` (performing is made inside a step)."""
    wf = OperatedWorkflow.create(hero=user)
    db.session.commit()
    if state == "paused":
        wf.pause()
    elif state == "canceled":
        wf.cancel()
    elif state == "finished":
        speedrun_workflow(wf)
    db.session.commit()
    assert wf.state == state
    return wf


def _snapshot(session, workflow_id):
    """Everything an action could change: the workflow row, its executions, its outbox."""
    table = geneva.Workflow.__table__
    executions_table = geneva.StepExecution.__table__
    outbox_table = geneva.OutboxMessage.__table__
    return (
        session.execute(sa.select(table).where(table.c.id == workflow_id)).one(),
        session.execute(
            sa.select(executions_table)
            .where(executions_table.c.workflow_id == workflow_id)
            .order_by(executions_table.c.sequence)
        ).all(),
        session.execute(
            sa.select(outbox_table).where(outbox_table.c.workflow_id == workflow_id)
        ).all(),
    )


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (state, action)
        for state in ("ready", "paused", "finished", "canceled")
        for action in ACTIONS
        if action not in ALLOWED[state]
    ],
)
def test_actions_not_allowed_in_a_state_raise_and_change_nothing(app, user, state, action):
    wf = _in_state(state, user)
    before = _snapshot(db.session, wf.id)
    with pytest.raises(InvalidStateError, match=rf"cannot {action} OperatedWorkflow #{wf.id}"):
        getattr(wf, action)()
    db.session.commit()  # even a caller that commits after the error changes nothing
    db.session.expire_all()
    assert _snapshot(db.session, wf.id) == before
    assert wf.state == state


@pytest.mark.parametrize("action", ACTIONS)
def test_no_action_is_allowed_while_a_step_runs(app, user, action):
    results = {}

    class BusyWorkflow(geneva.Workflow):
        @step
        def busy(self):
            # An operator, in another session, acts while this step runs.
            with Session(db.engine) as operator:
                seen = operator.get(geneva.Workflow, self.id)
                results["state"] = seen.state
                before = _snapshot(operator, self.id)
                try:
                    getattr(seen, action)()
                except InvalidStateError as error:
                    results["error"] = str(error)
                operator.commit()
                results["unchanged"] = _snapshot(operator, self.id) == before

    wf = BusyWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    assert results["state"] == "performing"
    assert f"cannot {action} BusyWorkflow #{wf.id}: it is performing" in results["error"]
    assert results["unchanged"]
    assert wf.state == "finished"


def test_cancel_a_ready_workflow_cancels_its_scheduled_execution(app, user):
    wf = _in_state("ready", user)
    wf.cancel()
    db.session.commit()
    assert wf.state == "canceled"
    assert wf.transitioned_at is not None
    assert wf.next_step_name is None
    assert history(wf) == [("first", "canceled", "canceled")]
    assert outbox_rows(wf) == []


def test_cancel_a_paused_workflow_cancels_its_kept_execution(app, user):
    wf = _in_state("paused", user)
    wf.cancel()
    db.session.commit()
    assert wf.state == "canceled"
    assert history(wf) == [("first", "canceled", "canceled")]
    assert outbox_rows(wf) == []


def test_cancel_a_workflow_paused_by_a_failure(app, user):
    wf = OperatedWorkflow.create(hero=user, data={"fail": True})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    wf.cancel()
    db.session.commit()
    assert wf.state == "canceled"
    # The operator's cancel is recorded (canceled / canceled), like an operator's skip.
    assert history(wf) == [("first", "failed", "failed"), ("first", "canceled", "canceled")]
    assert wf.next_step_name is None


def test_pause_keeps_the_scheduled_execution_and_withdraws_its_message(app, user):
    wf = _in_state("ready", user)
    kept = scheduled_execution(wf)
    wf.pause()
    db.session.commit()
    assert wf.state == "paused"
    assert wf.transitioned_at is not None
    assert wf.next_step_name == "first"
    assert scheduled_execution(wf).id == kept.id
    assert outbox_rows(wf) == []


def test_resume_runs_a_kept_execution_at_its_original_time(app, user):
    wf = OperatedWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)  # "second" is now scheduled a day from now
    kept = scheduled_execution(wf)
    wf.pause()
    db.session.commit()
    wf.resume()
    db.session.commit()
    assert wf.state == "ready"
    assert wf.next_step_name == "second"
    assert scheduled_execution(wf).id == kept.id
    [message] = outbox_rows(wf)
    assert message.execution_id == kept.id
    assert message.available_at == kept.scheduled_for


def test_resume_runs_an_overdue_kept_execution_at_once(app, user):
    wf = _in_state("paused", user)
    kept = scheduled_execution(wf)
    wf.resume()
    db.session.commit()
    [message] = outbox_rows(wf)
    assert message.execution_id == kept.id
    assert kept.scheduled_for <= message.available_at <= utcnow()
    assert scheduled_execution(wf).scheduled_for == kept.scheduled_for


def test_resume_after_a_failure_schedules_the_failed_step_again_now(app, user):
    wf = OperatedWorkflow.create(hero=user, data={"fail": True})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    assert wf.next_step_name == "first"
    before_resume = utcnow()
    wf.data["fail"] = False
    wf.resume()
    db.session.commit()
    assert wf.state == "ready"
    retry = scheduled_execution(wf)
    assert retry.step_name == "first"
    assert before_resume <= retry.scheduled_for <= utcnow()
    perform_next_step(wf)
    assert history(wf)[:3] == [
        ("first", "failed", "failed"),
        ("first", "completed", "success"),
        ("second", "scheduled", None),
    ]


def test_skip_a_ready_workflow_skips_the_scheduled_step(app, user):
    wf = _in_state("ready", user)
    wf.skip()
    db.session.commit()
    assert wf.state == "ready"
    assert wf.previous_step_name == "first"
    assert history(wf) == [("first", "skipped", "skipped"), ("second", "scheduled", None)]
    done, upcoming = executions(wf)
    assert upcoming.scheduled_for == done.finished_at + timedelta(days=1)
    assert [m.execution_id for m in outbox_rows(wf)] == [upcoming.id]


def test_skip_a_paused_workflow_skips_its_kept_execution(app, user):
    wf = _in_state("paused", user)
    wf.skip()
    db.session.commit()
    assert wf.state == "ready"
    assert history(wf) == [("first", "skipped", "skipped"), ("second", "scheduled", None)]


def test_skip_a_workflow_paused_by_a_failure_records_a_skipped_execution(app, user):
    wf = OperatedWorkflow.create(hero=user, data={"fail": True})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    wf.skip()
    db.session.commit()
    assert wf.state == "ready"
    assert history(wf) == [
        ("first", "failed", "failed"),
        ("first", "skipped", "skipped"),
        ("second", "scheduled", None),
    ]


def test_skip_the_last_step_finishes_the_workflow(app, user):
    wf = OperatedWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    wf.skip()
    db.session.commit()
    assert wf.state == "finished"
    assert wf.transitioned_at is not None
    assert history(wf) == [("first", "completed", "success"), ("second", "skipped", "skipped")]


@pytest.mark.parametrize("action", ["cancel", "pause", "skip"])
def test_actions_leave_the_commit_to_the_caller(app, user, action):
    wf = _in_state("ready", user)
    before = _snapshot(db.session, wf.id)
    getattr(wf, action)()
    db.session.rollback()
    assert _snapshot(db.session, wf.id) == before
    assert wf.state == "ready"


@pytest.mark.parametrize(
    ("action", "state"), [("cancel", "canceled"), ("pause", "paused"), ("skip", "ready")]
)
def test_an_action_on_an_instance_outside_the_session(app, user, action, state):
    """A workflow loaded earlier and detached from its session (a web request's object
    kept after the request ended) acts on the row and learns the new state."""
    wf = _in_state("ready", user)
    workflow_id = wf.id
    db.session.expunge(wf)
    getattr(wf, action)()
    db.session.commit()
    assert wf.state == state
    fresh = db.session.get(geneva.Workflow, workflow_id)
    assert fresh.state == state
    assert fresh.next_step_name == wf.next_step_name
