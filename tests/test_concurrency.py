"""Concurrency on PostgreSQL and MariaDB: the same execution delivered to two workers at once runs
its body once; two requests creating the same workflow at once end with one; a worker
that waits for an operator's lock decides on what the operator committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from flask_geneva import WorkflowAlreadyOngoing, step
from flask_geneva.executor import execute_step
from tests.helpers import history, note_texts, scheduled_execution, wait_for_a_blocked_backend
from tests.models import Note, User, db, geneva

pytestmark = pytest.mark.row_locks

#: How long a thread may wait for the other one before the test fails (seconds).
DEADLINE = 20


def _run_in_threads(app, *targets: Callable[[], object]) -> list[object]:
    """Run each target in its own thread and app context, released together."""
    barrier = threading.Barrier(len(targets))
    results: list[object] = [None] * len(targets)

    def run(index: int, target: Callable[[], object]) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=DEADLINE)
                results[index] = target()
            except BaseException as error:  # reported by the test, not lost in the thread
                results[index] = error
            finally:
                db.session.remove()

    threads = [
        threading.Thread(target=run, args=(index, target))
        for index, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE * 2)
        assert not thread.is_alive(), "a thread is stuck"
    return results


def test_the_same_execution_from_two_threads_runs_once(app, user):
    other_attempt_done = threading.Event()

    class RaceWorkflow(geneva.Workflow):
        @step
        def count_me(self):
            # Counted at once, outside the step's transaction: every run of the body
            # shows, even one whose outcome would be discarded.
            with db.engine.begin() as counter:
                counter.execute(Note.__table__.insert().values(text="body started"))
            db.session.add(Note(text="outcome committed"))
            # Keep the body running until the other delivery has given up, so the two
            # deliveries truly overlap. A second body run would wait here in vain.
            other_attempt_done.wait(timeout=5)

        @step
        def after(self):
            pass

    wf = RaceWorkflow.create(hero=user)
    db.session.commit()
    execution_id = scheduled_execution(wf).id

    def deliver():
        result = execute_step(geneva, execution_id)
        if result is None:
            other_attempt_done.set()
        return result

    results = _run_in_threads(app, deliver, deliver)
    assert not [r for r in results if isinstance(r, BaseException)]
    ran = [r for r in results if r is not None]
    assert len(ran) == 1
    assert ran[0].outcome == "completed"
    assert other_attempt_done.is_set()
    db.session.expire_all()
    assert note_texts() == ["body started", "outcome committed"]
    assert history(wf) == [("count_me", "completed", "success"), ("after", "scheduled", None)]


def test_two_requests_creating_the_same_workflow_end_with_one(app, user):
    class OnlyOneWorkflow(geneva.Workflow):
        @step
        def only(self):
            pass

    user_id = user.id
    first_flushed = threading.Event()

    def first_request():
        OnlyOneWorkflow.create(hero=db.session.get(User, user_id))
        first_flushed.set()  # its row is inserted, not yet committed
        wait_for_a_blocked_backend(time.monotonic() + DEADLINE)
        db.session.commit()
        return "created"

    def second_request():
        assert first_flushed.wait(timeout=DEADLINE)
        try:
            OnlyOneWorkflow.create(hero=db.session.get(User, user_id))
        except WorkflowAlreadyOngoing as error:
            db.session.rollback()
            return error
        db.session.commit()
        return "created"

    first, second = _run_in_threads(app, first_request, second_request)
    assert first == "created"
    assert isinstance(second, WorkflowAlreadyOngoing)
    assert "already ongoing" in str(second)
    db.session.expire_all()
    count = db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow))
    assert count == 1


def test_a_pause_committed_while_a_worker_waits_for_the_lock_wins(app):
    """The worker decides on the rows as they are once it holds the lock, not as they
    were when its statement started."""

    class PausedMeanwhileWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def first(self):
            db.session.add(Note(text="first ran"))

    wf = PausedMeanwhileWorkflow.create()
    db.session.commit()
    workflow_id, execution_id = wf.id, scheduled_execution(wf).id
    pause_flushed = threading.Event()

    def operator():
        try:
            db.session.get(geneva.Workflow, workflow_id).pause()  # locks the workflow row
            db.session.flush()
        finally:
            pause_flushed.set()
        wait_for_a_blocked_backend(time.monotonic() + DEADLINE)
        db.session.commit()
        return "paused"

    def worker():
        assert pause_flushed.wait(timeout=DEADLINE)
        return execute_step(geneva, execution_id)

    paused, ran = _run_in_threads(app, operator, worker)
    assert paused == "paused"
    assert ran is None
    db.session.expire_all()
    assert db.session.get(geneva.Workflow, workflow_id).state == "paused"
    assert history(wf) == [("first", "scheduled", None)]
    assert note_texts() == []
