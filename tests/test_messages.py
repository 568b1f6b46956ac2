"""Step messages carry a StepExecution id. A message for an unknown id, a malformed id,
an execution that already ran, or the kept execution of a paused workflow runs nothing
and raises nothing; it is logged."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.executor import execute_step
from flask_geneva.timeutil import utcnow
from tests.e2e_support import wait_until
from tests.helpers import history, note_texts, published_execution_ids, scheduled_execution
from tests.models import Note, db, geneva


class MessageWorkflow(geneva.Workflow):
    @step
    def first(self):
        db.session.add(Note(text="first ran"))

    @step(wait=timedelta(hours=1))
    def second(self):
        db.session.add(Note(text="second ran"))


@pytest.fixture
def workflow(app, user):
    wf = MessageWorkflow.create(hero=user)
    db.session.commit()
    return wf


def _messages(caplog):
    return [record.getMessage() for record in caplog.records if record.name == "flask_geneva"]


def test_a_message_runs_its_execution(workflow):
    execution_id = scheduled_execution(workflow).id
    result = execute_step(geneva, execution_id)
    assert result is not None
    assert result.outcome == "completed"
    assert note_texts() == ["first ran"]
    assert history(workflow)[0] == ("first", "completed", "success")


def test_the_id_may_come_as_text(workflow):
    execution_id = scheduled_execution(workflow).id
    assert execute_step(geneva, str(execution_id)) is not None
    assert note_texts() == ["first ran"]


def test_a_second_delivery_runs_nothing(workflow, caplog):
    execution_id = scheduled_execution(workflow).id
    execute_step(geneva, execution_id)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, execution_id) is None
    assert note_texts() == ["first ran"]
    assert any(f"execution {execution_id} is already completed" in m for m in _messages(caplog))


def test_a_message_for_an_unknown_id_runs_nothing(app, caplog):
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, 987654) is None
    assert any("987654 does not exist" in m for m in _messages(caplog))


@pytest.mark.parametrize(
    "bad",
    [None, "", "twelve", "12abc", "1.5", 3.5, True, {"id": 1}, [1], 2**70, "99999999999999999999"],
)
def test_a_malformed_id_runs_nothing_and_raises_nothing(workflow, caplog, bad):
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, bad) is None
    assert any("malformed step message" in m for m in _messages(caplog))
    assert history(workflow) == [("first", "scheduled", None)]


def test_a_message_for_the_kept_execution_of_a_paused_workflow_runs_nothing(
    app, workflow, caplog
):
    kept = scheduled_execution(workflow)
    workflow.pause()
    db.session.commit()
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, kept.id) is None
    assert any("workflow is paused" in m for m in _messages(caplog))
    assert note_texts() == []
    assert scheduled_execution(workflow).id == kept.id  # still scheduled
    published_before = published_execution_ids(app).count(kept.id)
    workflow.resume()
    db.session.commit()
    assert published_execution_ids(app).count(kept.id) == published_before + 1
    assert execute_step(geneva, kept.id) is not None
    assert note_texts() == ["first ran"]


def test_a_message_for_a_canceled_execution_runs_nothing(workflow):
    execution_id = scheduled_execution(workflow).id
    workflow.cancel()
    db.session.commit()
    assert execute_step(geneva, execution_id) is None
    assert note_texts() == []


def test_an_early_message_runs_nothing_until_the_execution_is_due(workflow, caplog):
    execute_step(geneva, scheduled_execution(workflow).id)
    later = scheduled_execution(workflow)  # "second", due in an hour
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, later.id) is None
    assert any("is not due until" in m for m in _messages(caplog))
    assert note_texts() == ["first ran"]
    assert scheduled_execution(workflow).id == later.id


#: When ShortWaitWorkflow's second body started.
SECOND_STARTS: list[Any] = []


class ShortWaitWorkflow(geneva.Workflow):
    @step
    def first(self):
        pass

    @step(wait=timedelta(milliseconds=150))
    def second(self):
        SECOND_STARTS.append(utcnow())
        db.session.add(Note(text="second ran"))


def _second_step_due_in(user: Any, delay: timedelta) -> tuple[Any, Any]:
    """A ShortWaitWorkflow whose first step ran and whose second is due ``delay`` from now."""
    SECOND_STARTS.clear()
    wf = ShortWaitWorkflow.create(hero=user)
    db.session.commit()
    execute_step(geneva, scheduled_execution(wf).id)
    second = scheduled_execution(wf)
    second.scheduled_for = utcnow() + delay
    db.session.commit()
    return wf, second


def test_a_message_a_little_early_waits_for_the_due_time(app, user, monkeypatch):
    """The relay publishes waited steps a little ahead; the step still starts on time."""
    # A wider window than the real one, so that a slow commit below cannot make the
    # message late (or too early) before it is handed over.
    monkeypatch.setattr("flask_geneva.executor.EARLY_WAIT_MAX", timedelta(seconds=5))
    # Due a little ahead, whatever step 1 took: the message is early by less than the max.
    _, second = _second_step_due_in(user, timedelta(milliseconds=800))
    assert timedelta(0) < second.scheduled_for - utcnow() <= timedelta(seconds=5)
    result = execute_step(geneva, second.id)
    assert result is not None and result.exception is None
    db.session.expire_all()
    ran = db.session.get(geneva.StepExecution, second.id)
    assert ran.state == "completed"
    assert ran.started_at >= ran.scheduled_for
    [body_started] = SECOND_STARTS
    assert body_started >= ran.scheduled_for  # the body itself, not only the claim
    assert note_texts() == ["second ran"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_waited_step_locks_its_rows_just_before_its_due_time(
    app, user, monkeypatch
):
    """The lock comes ahead (executor.PRELOCK, widened here), the checks, the claim and
    the body at the due time."""
    monkeypatch.setattr("flask_geneva.executor.EARLY_TOLERANCE", timedelta(seconds=5))
    monkeypatch.setattr("flask_geneva.executor.EARLY_WAIT_MAX", timedelta(seconds=5))
    monkeypatch.setattr("flask_geneva.executor.PRELOCK", timedelta(seconds=4))
    # Early by more than PRELOCK: the worker first sleeps without the locks, as it would.
    wf, second = _second_step_due_in(user, timedelta(seconds=4.5))
    workflow_id, second_id, due = wf.id, second.id, second.scheduled_for
    results: list[Any] = []

    def worker() -> None:
        with app.app_context():
            results.append(execute_step(geneva, second_id))

    thread = threading.Thread(target=worker)
    thread.start()
    try:

        def workflow_row_locked() -> bool:
            with db.engine.connect() as connection:
                try:
                    connection.execute(
                        sa.text("SELECT id FROM geneva_workflows WHERE id = :id FOR UPDATE NOWAIT"),
                        {"id": workflow_id},
                    )
                except sa.exc.OperationalError:
                    return True
                return False

        locked_since: list[float] = []

        def locked_for_half_a_second() -> bool:
            # Held, not only taken for an instant (every claim locks briefly on arrival).
            if not workflow_row_locked():
                locked_since.clear()
                return False
            locked_since[:1] = locked_since[:1] or [time.monotonic()]
            return time.monotonic() - locked_since[0] >= 0.5

        wait_until(locked_for_half_a_second, timeout=10, message="the worker to hold the lock")
        assert utcnow() < due  # held ahead of the due time
        with db.engine.connect() as connection:  # and not claimed yet
            state = connection.scalar(
                sa.text("SELECT state FROM geneva_step_executions WHERE id = :id"),
                {"id": second_id},
            )
        assert state == "scheduled"
    finally:
        thread.join(15)
    assert not thread.is_alive()
    [result] = results
    assert result is not None and result.exception is None
    db.session.expire_all()
    ran = db.session.get(geneva.StepExecution, second_id)
    assert ran.started_at >= due
    [body_started] = SECOND_STARTS
    assert body_started >= due


def test_the_dramatiq_message_id_is_recorded_on_the_execution(workflow):
    execution_id = scheduled_execution(workflow).id
    execute_step(geneva, execution_id, message_id="a1b2c3")
    db.session.expire_all()
    assert db.session.get(geneva.StepExecution, execution_id).message_id == "a1b2c3"


def test_a_step_due_at_once_from_a_clock_ahead_of_ours_runs_without_waiting(app, user):
    """Only waited steps wait for their due time; a step scheduled "now" by a machine
    whose clock is a little ahead runs at once (within the 1 s clock-skew tolerance)."""
    wf = ShortWaitWorkflow.create(hero=user)
    db.session.commit()
    first = scheduled_execution(wf)
    ahead = utcnow() + timedelta(milliseconds=200)
    first.scheduled_for = first.created_at = ahead
    db.session.commit()
    result = execute_step(geneva, first.id)
    assert result is not None and result.exception is None
    db.session.expire_all()
    ran = db.session.get(geneva.StepExecution, first.id)
    assert ran.state == "completed"
    assert ran.started_at < ran.scheduled_for
