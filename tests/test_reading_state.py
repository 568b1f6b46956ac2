"""Reading a workflow's state: the step names, current_execution, execution_history,
timestamps, WorkflowState, and plain SQLAlchemy queries."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from flask_geneva import StepOutcome, StepState, WorkflowState, step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from tests.helpers import reload, scheduled_execution
from tests.models import db, geneva


class PaymentWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def authorize(self):
        seen = self.data.setdefault("seen", {})
        seen["authorize"] = _observe(self)
        if self.data.get("fail"):
            raise RuntimeError("declined")

    @step(wait=timedelta(days=2))
    def capture(self):
        self.data["seen"]["capture"] = _observe(self)


class RefundWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def refund(self):
        self.pause()


def _observe(wf):
    """What a step sees of its own workflow while it runs."""
    execution = wf.current_execution
    return {
        "state": str(wf.state),
        "current_step_name": wf.current_step_name,
        "next_step_name": wf.next_step_name,
        "previous_step_name": wf.previous_step_name,
        "execution_step": execution.step_name,
        "execution_state": str(execution.state),
        "execution_id": execution.id,
    }


def test_step_names_through_a_run(app, user):
    wf = PaymentWorkflow.create(hero=user)
    db.session.commit()
    assert (wf.next_step_name, wf.current_step_name, wf.previous_step_name) == (
        "authorize", None, None,
    )
    perform_next_step(wf)
    assert (wf.next_step_name, wf.current_step_name, wf.previous_step_name) == (
        "capture", None, "authorize",
    )
    perform_next_step(wf)
    assert (wf.next_step_name, wf.current_step_name, wf.previous_step_name) == (
        None, None, "capture",
    )
    first, second = wf.execution_history
    assert wf.data["seen"]["authorize"] == {
        "state": "performing",
        "current_step_name": "authorize",
        "next_step_name": "authorize",
        "previous_step_name": None,
        "execution_step": "authorize",
        "execution_state": "in_progress",
        "execution_id": first.id,
    }
    assert wf.data["seen"]["capture"]["execution_id"] == second.id
    assert wf.data["seen"]["capture"]["previous_step_name"] == "authorize"


def test_next_step_name_while_paused_is_the_step_resume_runs(app, user):
    failed = PaymentWorkflow.create(hero=user, data={"fail": True})
    paused_in_step = RefundWorkflow.create(hero=user)
    paused_by_operator = PaymentWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(failed)
    perform_next_step(paused_in_step)
    paused_by_operator.pause()
    db.session.commit()
    assert (failed.state, failed.next_step_name) == ("paused", "authorize")
    assert (paused_in_step.state, paused_in_step.next_step_name) == ("paused", "refund")
    assert (paused_by_operator.state, paused_by_operator.next_step_name) == (
        "paused", "authorize",
    )


def test_current_execution_outside_a_step_is_the_scheduled_one(app, user):
    wf = PaymentWorkflow.create(hero=user)
    assert wf.current_execution is not None  # before the commit, too
    db.session.commit()
    assert wf.current_execution.id == scheduled_execution(wf).id
    assert wf.current_execution.state == "scheduled"
    wf.pause()
    db.session.commit()
    assert wf.current_execution.step_name == "authorize"  # the kept one
    wf.resume()
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.current_execution is None


def test_current_execution_is_none_after_a_failure(app, user):
    wf = PaymentWorkflow.create(hero=user, data={"fail": True})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    assert wf.current_execution is None


def test_transitioned_at_is_set_when_a_workflow_finishes_cancels_or_pauses(app, user):
    finished = PaymentWorkflow.create(hero=user)
    canceled = PaymentWorkflow.create(hero=user)
    paused = PaymentWorkflow.create(hero=user)
    db.session.commit()
    assert finished.transitioned_at is None
    started = utcnow()
    speedrun_workflow(finished)
    canceled.cancel()
    paused.pause()
    db.session.commit()
    for wf in (finished, canceled, paused):
        assert started <= reload(wf).transitioned_at <= utcnow()


def test_execution_history_is_oldest_first(app, user):
    class LongHistoryWorkflow(geneva.Workflow):
        @step
        def poll(self):
            self.data["n"] = self.data.get("n", 0) + 1
            if self.data["n"] < 3:
                self.reattempt()

        @step
        def done(self):
            pass

    wf = LongHistoryWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    history = reload(wf).execution_history
    assert [(e.step_name, e.outcome) for e in history] == [
        ("poll", "reattempted"),
        ("poll", "reattempted"),
        ("poll", "success"),
        ("done", "success"),
    ]
    assert [e.finished_at for e in history] == sorted(e.finished_at for e in history)
    assert all(e.workflow_id == wf.id for e in history)
    assert history[0].workflow is wf


def test_every_timestamp_is_timezone_aware_utc(app, user):
    wf = PaymentWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    fresh = reload(wf)
    stamps = [fresh.created_at, fresh.transitioned_at]
    for execution in fresh.execution_history:
        stamps += [execution.scheduled_for, execution.started_at, execution.finished_at]
        stamps.append(execution.created_at)
    db.session.expire_all()
    queried = db.session.scalars(sa.select(geneva.StepExecution)).all()
    stamps += [e.scheduled_for for e in queried]
    assert all(stamp is not None for stamp in stamps)
    for stamp in stamps:
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
        assert stamp.astimezone(UTC) == stamp
    # Comparable with an aware "now": nothing is in the future, nothing is naive.
    assert max(s for s in stamps if s != fresh.execution_history[1].scheduled_for) <= utcnow()


def test_state_is_a_str_enum(app, user):
    wf = PaymentWorkflow.create(hero=user)
    db.session.commit()
    fresh = reload(wf)
    assert fresh.state is WorkflowState.READY
    assert fresh.state == "ready"
    assert isinstance(fresh.state, str)
    assert f"{fresh.state}" == "ready"
    assert [s.value for s in WorkflowState] == [
        "ready", "performing", "finished", "canceled", "paused",
    ]
    assert {s.value for s in StepState} == {
        "scheduled", "in_progress", "completed", "failed", "canceled", "skipped",
    }
    assert {s.value for s in StepOutcome} == {
        "success", "reattempted", "skipped", "canceled", "failed", "recovered",
    }
    assert fresh.execution_history[0].state is StepState.SCHEDULED


def test_plain_sqlalchemy_queries(app, user):
    payments = [PaymentWorkflow.create(hero=user) for _ in range(2)]
    refund = RefundWorkflow.create(hero=user)
    db.session.commit()
    payments[1].pause()
    perform_next_step(refund)  # pauses itself
    db.session.commit()
    db.session.expire_all()

    assert {wf.id for wf in db.session.scalars(sa.select(PaymentWorkflow))} == {
        p.id for p in payments
    }
    assert all(type(wf) is PaymentWorkflow for wf in db.session.scalars(sa.select(PaymentWorkflow)))
    paused = db.session.scalars(
        sa.select(geneva.Workflow).where(geneva.Workflow.state == "paused")
    ).all()
    assert {(type(wf), wf.id) for wf in paused} == {
        (PaymentWorkflow, payments[1].id),
        (RefundWorkflow, refund.id),
    }
    assert {wf.id for wf in db.session.scalars(sa.select(geneva.Workflow))} == {
        payments[0].id, payments[1].id, refund.id,
    }
    by_columns = db.session.scalars(
        sa.select(geneva.Workflow.id).where(
            geneva.Workflow.hero_type == "User",
            geneva.Workflow.hero_id == str(user.id),
            geneva.Workflow.next_step_name == "authorize",
            geneva.Workflow.current_step_name.is_(None),
            geneva.Workflow.transitioned_at.is_(None),
            geneva.Workflow.created_at <= utcnow(),
        )
    ).all()
    assert by_columns == [payments[0].id]
    canceled_refunds = db.session.scalars(
        sa.select(geneva.StepExecution.workflow_id).where(
            geneva.StepExecution.step_name == "refund",
            geneva.StepExecution.state == "canceled",
            geneva.StepExecution.outcome == "canceled",
            geneva.StepExecution.error_class_name.is_(None),
            geneva.StepExecution.message_id.is_(None),
            geneva.StepExecution.finished_at >= geneva.StepExecution.started_at,
        )
    ).all()
    assert canceled_refunds == [refund.id]


def test_ids_are_the_primary_keys(app, user):
    wf = PaymentWorkflow.create(hero=user)
    db.session.commit()
    execution = scheduled_execution(wf)
    assert db.session.get(geneva.Workflow, wf.id) is wf
    assert db.session.get(geneva.StepExecution, execution.id) is execution
    assert isinstance(wf.id, int)
    assert isinstance(execution.id, int)
