"""A step whose transaction the database ends (a real deadlock, a killed connection) is
recovered by its worker and runs again at once, on PostgreSQL and MariaDB; a deadlock
that comes back every time is left to housekeeping after three such recoveries."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.conflicts import RETRIES_IN_A_ROW
from flask_geneva.executor import execute_step
from tests.helpers import (
    history,
    published_execution_ids,
    scheduled_execution,
    wait_for_a_blocked_backend,
)
from tests.models import Note, db, geneva

pytestmark = pytest.mark.row_locks

#: How long a thread may wait for the other one before the test fails (seconds).
DEADLINE = 20


class Coordination:
    """What the step body and the test tell each other across threads."""

    def __init__(self) -> None:
        self.body_locked = threading.Event()
        self.blocker_ready = threading.Event()
        self.block = True  # the body waits for the blocker; False lets it run through


def _step_in_thread(app: Any, execution_id: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        with app.app_context():
            try:
                # Runs a retry scheduled a moment later too (one second, then two).
                outcome.append(execute_step(geneva, execution_id, ignore_schedule=True))
            except BaseException as error:  # reported by the test, not lost in the thread
                outcome.append(error)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _deadlock(app: Any, workflow_id: Any, execution_id: Any, note_id: int,
              talk: Coordination) -> Any:
    """Run the execution in a thread and make a real deadlock with its finalize: the
    body updates the note and waits; a blocker locks the workflow row, then waits to
    update the note; the body returns and its finalize waits for the workflow row.

    The step is the one that closes the circle, so the database ends its transaction:
    PostgreSQL checks for a deadlock ``deadlock_timeout`` after a wait begins (the
    blocker's is set far longer than the step's), and MariaDB ends the smaller
    transaction (the blocker has written 30 rows first)."""
    talk.body_locked.clear()
    talk.blocker_ready.clear()
    workflow_locked = threading.Event()
    blocker_outcome: list[BaseException] = []
    engine = db.engine

    def blocker() -> None:
        try:
            with engine.connect() as connection, connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SET LOCAL deadlock_timeout = '60s'"))
                connection.execute(
                    sa.insert(Note), [{"text": f"weight {n}"} for n in range(30)]
                )
                connection.execute(
                    sa.text("SELECT id FROM geneva_workflows WHERE id = :id FOR UPDATE"),
                    {"id": workflow_id},
                )
                workflow_locked.set()
                connection.execute(
                    sa.update(Note).where(Note.id == note_id).values(text="the blocker's")
                )
        except BaseException as error:
            blocker_outcome.append(error)
        finally:
            workflow_locked.set()

    thread, outcome = _step_in_thread(app, execution_id)
    other = threading.Thread(target=blocker)
    try:
        assert talk.body_locked.wait(DEADLINE), "the body never ran"
        other.start()
        assert workflow_locked.wait(DEADLINE)
        wait_for_a_blocked_backend(time.monotonic() + DEADLINE)  # the blocker waits
    finally:
        talk.blocker_ready.set()  # the body returns; its finalize closes the circle
        thread.join(DEADLINE)
        if other.ident is not None:
            other.join(DEADLINE)
    assert not thread.is_alive() and not other.is_alive(), "a thread is stuck"
    assert blocker_outcome == []
    return outcome[0]


def _conflicting_workflow(talk: Coordination) -> type:
    class ConflictingWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def contended(self) -> None:
            note_id = self.data["note_id"]
            db.session.execute(
                sa.update(Note).where(Note.id == note_id).values(text="the step's")
            )
            if talk.block:
                talk.body_locked.set()
                assert talk.blocker_ready.wait(DEADLINE)

        @step
        def after(self) -> None:
            pass

    return ConflictingWorkflow


def _end_the_sessions_connection() -> int:
    """End ``db.session``'s own database connection from another one, for real (as a
    failover or an administrator would); returns the server's id of it."""
    postgresql = db.engine.dialect.name == "postgresql"
    own = "SELECT pg_backend_pid()" if postgresql else "SELECT CONNECTION_ID()"
    connection_id = int(db.session.scalar(sa.text(own)))
    with db.engine.connect() as other:
        if postgresql:
            other.execute(sa.select(sa.func.pg_terminate_backend(connection_id)))
        else:
            other.execute(sa.text(f"KILL CONNECTION {connection_id}"))
    return connection_id


def _execution(execution_id: Any) -> Any:
    return db.session.get(geneva.StepExecution, execution_id, populate_existing=True)


def test_a_deadlock_in_the_finalize_runs_the_step_again_at_once(app: Any) -> None:
    talk = Coordination()
    note = Note(text="before")
    db.session.add(note)
    db.session.commit()
    wf = _conflicting_workflow(talk).create(data={"note_id": note.id})
    db.session.commit()
    first = scheduled_execution(wf)
    first_id = first.id

    result = _deadlock(app, wf.id, first_id, note.id, talk)

    assert result is None  # no outcome: the database ended the transaction
    db.session.expire_all()
    assert history(wf) == [
        ("contended", "completed", "recovered"), ("contended", "scheduled", None)
    ]
    ended = _execution(first_id)
    assert "deadlock" in (ended.error_message or "").lower()
    assert ended.error_class_name
    assert db.session.get(Note, note.id).text == "the blocker's"  # the step's write undone
    again = scheduled_execution(wf)
    assert again.scheduled_for <= ended.finished_at  # at once, not after a wait
    assert again.id in published_execution_ids(app)
    assert db.session.get(geneva.Workflow, wf.id).state == "ready"

    talk.block = False
    assert execute_step(geneva, again.id).outcome == "completed"
    db.session.expire_all()
    assert db.session.get(Note, note.id).text == "the step's"
    assert history(wf)[1:] == [("contended", "completed", "success"), ("after", "scheduled", None)]


def test_a_deadlock_that_keeps_coming_back_is_left_to_housekeeping(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    talk = Coordination()
    note = Note(text="before")
    db.session.add(note)
    db.session.commit()
    wf = _conflicting_workflow(talk).create(data={"note_id": note.id})
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    with caplog.at_level(logging.WARNING, logger="flask_geneva"):
        for _ in range(RETRIES_IN_A_ROW + 1):
            assert _deadlock(app, wf.id, execution_id, note.id, talk) is None
            db.session.expire_all()
            scheduled = scheduled_execution(wf)
            if scheduled is not None:
                execution_id = scheduled.id
    db.session.expire_all()
    recovered = ("contended", "completed", "recovered")
    assert history(wf) == [recovered] * RETRIES_IN_A_ROW + [("contended", "in_progress", None)]
    assert "the 4th time in a row" in caplog.text
    assert "housekeeping will recover it" in caplog.text


def test_a_step_whose_connection_is_killed_runs_again_at_once(app: Any) -> None:
    kills = []

    class KilledWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def cut_off(self) -> None:
            db.session.add(Note(text="written by the step"))
            db.session.flush()
            if kills:
                return
            connection_id = _end_the_sessions_connection()
            kills.append(connection_id)

    wf = KilledWorkflow.create()
    db.session.commit()
    first_id = scheduled_execution(wf).id
    thread, outcome = _step_in_thread(app, first_id)
    thread.join(DEADLINE)
    assert outcome == [None]
    db.session.expire_all()
    assert history(wf) == [("cut_off", "completed", "recovered"), ("cut_off", "scheduled", None)]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
    again = scheduled_execution(wf)
    assert again.id in published_execution_ids(app)
    assert execute_step(geneva, again.id).outcome == "completed"
    db.session.expire_all()
    assert db.session.scalars(sa.select(Note.text)).all() == ["written by the step"]
    assert db.session.get(geneva.Workflow, wf.id).state == "finished"


class KillAtTheFinalize:
    """Ends the step's database connection (for real, from another connection) just
    before its next locking statement once ``arm()`` is called: the finalize's lock,
    when the body arms it."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.armed = False
        self.kills = 0

    def arm(self) -> None:
        self.armed = True

    def __call__(self, connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.armed or "FOR UPDATE" not in statement:
            return
        self.armed = False
        raw = connection.connection.dbapi_connection
        postgresql = connection.dialect.name == "postgresql"
        own = raw.info.backend_pid if postgresql else raw.thread_id()
        with self.engine.connect() as other:
            if postgresql:
                other.execute(sa.select(sa.func.pg_terminate_backend(own)))
            else:
                other.execute(sa.text(f"KILL CONNECTION {int(own)}"))
        self.kills += 1


@pytest.fixture
def kill_at_the_finalize(app: Any) -> Any:
    killer = KillAtTheFinalize(db.engine)
    sa.event.listen(db.engine, "before_cursor_execute", killer)
    yield killer
    sa.event.remove(db.engine, "before_cursor_execute", killer)


def _run(workflow: Any) -> Any:
    execution_id = scheduled_execution(workflow).id
    result = execute_step(geneva, execution_id)
    db.session.expire_all()
    return result


def test_a_failure_whose_finalize_is_cut_off_is_recorded_as_the_step_failed(
    app: Any, kill_at_the_finalize: KillAtTheFinalize
) -> None:
    class FailingWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step  # the default policy pauses
        def fails(self) -> None:
            kill_at_the_finalize.arm()
            raise RuntimeError("the step's own failure")

    wf = FailingWorkflow.create()
    db.session.commit()
    assert _run(wf) is None
    assert kill_at_the_finalize.kills == 1
    assert history(wf) == [("fails", "failed", "failed")]  # not run again
    [execution] = db.session.scalars(
        sa.select(geneva.StepExecution).where(geneva.StepExecution.workflow_id == wf.id)
    ).all()
    assert execution.error_class_name == "RuntimeError"
    assert execution.error_message == "the step's own failure"
    assert db.session.get(geneva.Workflow, wf.id).state == "paused"


def test_a_reattempt_whose_finalize_is_cut_off_keeps_its_wait(
    app: Any, kill_at_the_finalize: KillAtTheFinalize
) -> None:
    class WaitingWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def later(self) -> None:
            kill_at_the_finalize.arm()
            self.reattempt(wait=timedelta(minutes=10))

    wf = WaitingWorkflow.create()
    db.session.commit()
    first_id = scheduled_execution(wf).id
    assert _run(wf) is None
    assert history(wf) == [("later", "completed", "recovered"), ("later", "scheduled", None)]
    ended = _execution(first_id)
    again = scheduled_execution(wf)
    waited = again.scheduled_for - ended.finished_at
    assert timedelta(minutes=9) < waited <= timedelta(minutes=10)


@pytest.mark.parametrize("app_config", [{"GENEVA_STUCK_RECOVERY_ACTION": "cancel"}])
def test_with_the_cancel_recovery_action_a_cut_off_step_cancels_the_workflow(
    app: Any, kill_at_the_finalize: KillAtTheFinalize
) -> None:
    class CancelledWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def once(self) -> None:
            kill_at_the_finalize.arm()

    wf = CancelledWorkflow.create()
    db.session.commit()
    assert _run(wf) is None
    assert history(wf) == [("once", "canceled", "recovered")]
    assert db.session.get(geneva.Workflow, wf.id).state == "canceled"


def test_an_attempt_the_database_ended_does_not_reset_the_reattempt_count(
    app: Any, kill_at_the_finalize: KillAtTheFinalize
) -> None:
    attempts: list[int] = []

    class CountingWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step(on_exception="reattempt", wait=timedelta(0), max_reattempts=1)
        def flaky(self) -> None:
            attempts.append(1)
            if len(attempts) == 2:  # this one returns, but its finalize is cut off
                kill_at_the_finalize.arm()
                return
            raise RuntimeError(f"attempt {len(attempts)}")

    wf = CountingWorkflow.create()
    db.session.commit()
    for _ in range(3):
        _run(wf)
    assert history(wf) == [
        ("flaky", "failed", "reattempted"),
        ("flaky", "completed", "recovered"),
        ("flaky", "failed", "failed"),  # past max_reattempts: the terminal action
    ]
    assert db.session.get(geneva.Workflow, wf.id).state == "paused"


def test_a_step_whose_own_statement_loses_the_connection_runs_again_not_paused(
    app: Any,
) -> None:
    runs: list[int] = []

    class CutOffWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step  # the default policy would pause on an exception of the step's own
        def reads(self) -> None:
            runs.append(1)
            if len(runs) > 1:
                db.session.add(Note(text="second run"))
                return
            _end_the_sessions_connection()
            db.session.scalar(sa.text("SELECT 1"))  # raises: the connection is gone

    wf = CutOffWorkflow.create()
    db.session.commit()
    first_id = scheduled_execution(wf).id
    assert _run(wf) is None
    assert history(wf) == [("reads", "completed", "recovered"), ("reads", "scheduled", None)]
    assert _execution(first_id).error_class_name  # the database's error, kept
    assert db.session.get(geneva.Workflow, wf.id).state == "ready"  # not paused
    assert _run(wf).outcome == "completed"
    assert db.session.scalars(sa.select(Note.text)).all() == ["second run"]


def test_a_handler_whose_writes_are_lost_with_the_finalize_runs_again_with_its_step(
    app: Any, kill_at_the_finalize: KillAtTheFinalize
) -> None:
    runs: list[int] = []

    def handle(wf: Any, error: BaseException) -> None:
        db.session.add(Note(text=f"handled run {len(runs)}"))
        if len(runs) == 1:
            kill_at_the_finalize.arm()  # this handler's writes go with the finalize
        wf.skip()

    class HandledWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step(on_exception=handle)
        def fails(self) -> None:
            runs.append(1)
            raise RuntimeError("the step's own failure")

    wf = HandledWorkflow.create()
    db.session.commit()
    assert _run(wf) is None
    # Not skipped without the handler's note: the step runs again, its handler too.
    assert history(wf) == [("fails", "completed", "recovered"), ("fails", "scheduled", None)]
    assert db.session.scalars(sa.select(Note.text)).all() == []
    _run(wf)
    assert history(wf)[1:] == [("fails", "failed", "skipped")]
    assert db.session.scalars(sa.select(Note.text)).all() == ["handled run 2"]
    assert db.session.get(geneva.Workflow, wf.id).state == "finished"


def test_a_precondition_whose_query_loses_the_connection_leaves_the_step_scheduled(
    app: Any,
) -> None:
    checks: list[int] = []

    def lose_the_connection(wf: Any) -> bool:
        checks.append(1)
        if len(checks) == 1:
            _end_the_sessions_connection()
            db.session.scalar(sa.text("SELECT 1"))  # raises: the connection is gone
        return False

    class CheckedWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step(skip_if=lose_the_connection)
        def checked(self) -> None:
            db.session.add(Note(text="ran"))

    wf = CheckedWorkflow.create()
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    assert _run(wf) is None
    assert history(wf) == [("checked", "scheduled", None)]  # not failed, not paused
    assert scheduled_execution(wf).id == execution_id
    assert db.session.get(geneva.Workflow, wf.id).state == "ready"
    assert _run(wf).outcome == "completed"
    assert db.session.scalars(sa.select(Note.text)).all() == ["ran"]


def test_a_reattempt_whose_writes_fail_to_flush_for_a_lost_connection_keeps_its_wait(
    app: Any,
) -> None:

    class FlushLostWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def later(self) -> None:
            db.session.add(Note(text="flushed when the body ends"))
            _end_the_sessions_connection()
            self.reattempt(wait=timedelta(minutes=10))  # its writes then fail to flush

    wf = FlushLostWorkflow.create()
    db.session.commit()
    first_id = scheduled_execution(wf).id
    assert _run(wf) is None
    assert history(wf) == [("later", "completed", "recovered"), ("later", "scheduled", None)]
    waited = scheduled_execution(wf).scheduled_for - _execution(first_id).finished_at
    assert timedelta(minutes=9) < waited <= timedelta(minutes=10)
    assert db.session.scalars(sa.select(Note.text)).all() == []
