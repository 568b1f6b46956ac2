"""Code changes under running workflows: a workflow class that was removed, a step that
was removed from its class. Their rows still load, list and show; running them fails
clearly and pauses the workflow."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_geneva import InvalidStateError, step
from flask_geneva.executor import execute_step
from flask_geneva.testing import perform_next_step
from tests.helpers import history, scheduled_execution
from tests.models import db, geneva


def _retire_class(workflow, identity="RetiredWorkflow"):
    """Make the row name a workflow class this application no longer defines, as after a
    deploy that deleted the class."""
    table = geneva.Workflow.__table__
    db.session.execute(
        table.update().where(table.c.id == workflow.id).values(workflow_class=identity)
    )
    db.session.commit()
    db.session.expunge_all()


def _orphan(user):
    class SoonRemovedWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    wf = SoonRemovedWorkflow.create(hero=user, data={"kept": True})
    db.session.commit()
    workflow_id, execution_id = wf.id, scheduled_execution(wf).id
    _retire_class(wf)
    return workflow_id, execution_id


def test_a_row_whose_class_is_gone_loads_as_the_base_workflow(app, user):
    user_id = user.id
    workflow_id, _ = _orphan(user)
    wf = db.session.get(geneva.Workflow, workflow_id)
    assert type(wf) is geneva.Workflow
    assert wf.workflow_class == "RetiredWorkflow"
    assert (wf.state, wf.next_step_name, wf.data) == ("ready", "only", {"kept": True})
    assert wf.hero.id == user_id
    assert [e.step_name for e in wf.execution_history] == ["only"]
    assert not wf.is_defined()


def test_a_row_whose_class_is_gone_is_listed(app, user):
    workflow_id, _ = _orphan(user)
    listed = db.session.scalars(
        sa.select(geneva.Workflow).where(geneva.Workflow.state == "ready")
    ).all()
    assert [wf.id for wf in listed] == [workflow_id]


def test_a_row_whose_class_is_gone_is_shown_by_the_cli(app, user):
    workflow_id, _ = _orphan(user)
    result = app.test_cli_runner().invoke(args=["geneva", "show", str(workflow_id)])
    assert result.exit_code == 0, result.output
    assert "RetiredWorkflow" in result.output


def test_running_a_step_of_a_removed_class_fails_clearly_and_pauses(app, user):
    workflow_id, execution_id = _orphan(user)
    result = execute_step(geneva, execution_id)
    assert result is not None
    wf = db.session.get(geneva.Workflow, workflow_id)
    assert wf.state == "paused"
    assert wf.transitioned_at is not None
    assert wf.next_step_name == "only"
    [execution] = wf.execution_history
    assert (execution.state, execution.outcome) == ("failed", "failed")
    assert execution.error_class_name == "flask_geneva.errors.WorkflowClassNotFoundError"
    assert "'RetiredWorkflow' is not defined in this application" in execution.error_message


def test_a_workflow_of_a_removed_class_can_be_canceled_but_not_resumed(app, user):
    workflow_id, execution_id = _orphan(user)
    execute_step(geneva, execution_id)
    wf = db.session.get(geneva.Workflow, workflow_id)
    with pytest.raises(InvalidStateError, match="no longer defined"):
        wf.resume()
    with pytest.raises(InvalidStateError, match="no longer defined"):
        wf.skip()
    db.session.rollback()
    wf.cancel()
    db.session.commit()
    assert wf.state == "canceled"


def test_a_removed_step_fails_clearly_and_pauses(app, user):
    class ShrinkingWorkflow(geneva.Workflow):
        @step
        def old_step(self):
            pass

        @step
        def kept_step(self):
            pass

    wf = ShrinkingWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    db.session.expunge_all()

    # A new deploy: the class no longer has old_step.
    class ShrinkingWorkflow(geneva.Workflow):
        @step
        def kept_step(self):
            pass

    wf = db.session.get(geneva.Workflow, workflow_id)
    assert type(wf) is ShrinkingWorkflow
    with pytest.raises(Exception, match="step 'old_step' is not defined in ShrinkingWorkflow"):
        perform_next_step(wf)
    assert wf.state == "paused"
    assert wf.next_step_name == "old_step"
    assert history(wf) == [("old_step", "failed", "failed")]
    [execution] = wf.execution_history
    assert execution.error_class_name == "flask_geneva.errors.StepNotDefinedError"
    assert "its steps: kept_step" in execution.error_message
    # resume() would run the missing step again, and skip() cannot know what follows a
    # step that is gone: both are refused and point to cancel().
    for action in (wf.resume, wf.skip):
        with pytest.raises(InvalidStateError, match=r"no longer exists.*cancel it instead"):
            action()
        db.session.rollback()
    wf.cancel()
    db.session.commit()
    assert wf.state == "canceled"
