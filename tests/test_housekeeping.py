"""Housekeeping: cleanup of old finished workflows, and recovery of stuck executions.

Stuck rows are made by moving timestamps into the past in the database (a worker that
died mid-step leaves an ``in_progress`` execution; a lost message leaves a ``scheduled``
one past its time), or by running housekeeping with ``now=`` in the future. Nothing
sleeps.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from flask import Flask, current_app

from flask_geneva import WorkflowClassNotFoundError, step
from flask_geneva.housekeeping import HousekeepingResult, run_housekeeping
from flask_geneva.testing import perform_next_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from tests.helpers import executions, history, note_texts, outbox_rows, reload
from tests.models import Note, User, db, geneva
from tests.uuid_models import Customer, uuid_db, uuid_geneva

WORKFLOWS = geneva.Workflow.__table__
EXECUTIONS = geneva.StepExecution.__table__
OUTBOX = geneva.OutboxMessage.__table__


class HousekeptWorkflow(geneva.Workflow):
    """Two steps a day apart; ``first`` fails when the data asks it to."""

    allow_multiple = True

    @step
    def first(self) -> None:
        db.session.add(Note(text=f"first of #{self.id}"))
        if self.data.get("fail"):
            raise RuntimeError("first failed")

    @step(wait=timedelta(days=1))
    def second(self) -> None:
        db.session.add(Note(text=f"second of #{self.id}"))


# ----------------------------------------------------------------------------- helpers


def _create(user: Any, **data: Any) -> Any:
    workflow = HousekeptWorkflow.create(hero=user, data=data)
    db.session.commit()
    return workflow


def _finished(user: Any) -> Any:
    workflow = speedrun_workflow(_create(user))
    assert workflow.state == "finished"
    return workflow


def _canceled(user: Any) -> Any:
    workflow = _create(user)
    workflow.cancel()
    db.session.commit()
    return workflow


def _paused(user: Any) -> Any:
    """Paused by an operator: the scheduled execution of ``first`` is kept."""
    workflow = _create(user)
    workflow.pause()
    db.session.commit()
    return workflow


def _transitioned(workflow: Any, ago: timedelta) -> Any:
    """Move the workflow's ``transitioned_at`` into the past."""
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow.id)
        .values(transitioned_at=utcnow() - ago)
    )
    db.session.commit()
    return workflow


def _active_execution_id(workflow: Any) -> Any:
    return db.session.scalar(
        sa.select(EXECUTIONS.c.id).where(
            EXECUTIONS.c.workflow_id == workflow.id,
            EXECUTIONS.c.state.in_(["scheduled", "in_progress"]),
        )
    )


def _stuck_in_progress(workflow: Any, started_ago: timedelta | None = None) -> Any:
    """What a worker that died in the step leaves behind: the execution claimed (in
    progress, its outbox row gone) and the workflow performing, started ``started_ago``."""
    execution_id = _active_execution_id(workflow)
    step_name = db.session.scalar(
        sa.select(EXECUTIONS.c.step_name).where(EXECUTIONS.c.id == execution_id)
    )
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.id == execution_id)
        .values(state="in_progress", started_at=utcnow() - (started_ago or timedelta(0)))
    )
    db.session.execute(sa.delete(OUTBOX).where(OUTBOX.c.execution_id == execution_id))
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow.id)
        .values(state="performing", current_step_name=step_name)
    )
    db.session.commit()
    return execution_id


def _overdue(workflow: Any, ago: timedelta) -> Any:
    """What a lost message leaves behind: the scheduled execution ``ago`` past its time."""
    execution_id = _active_execution_id(workflow)
    past = utcnow() - ago
    db.session.execute(
        sa.update(EXECUTIONS).where(EXECUTIONS.c.id == execution_id).values(scheduled_for=past)
    )
    db.session.execute(
        sa.update(OUTBOX).where(OUTBOX.c.execution_id == execution_id).values(available_at=past)
    )
    db.session.commit()
    return execution_id


def _row_counts(workflow: Any) -> tuple[int, int, int]:
    """``(workflow rows, execution rows, outbox rows)`` left for ``workflow``."""
    key = sa.inspect(workflow).identity[0]  # without loading: the row may be gone
    return (
        db.session.scalar(sa.select(sa.func.count()).where(WORKFLOWS.c.id == key)),
        db.session.scalar(sa.select(sa.func.count()).where(EXECUTIONS.c.workflow_id == key)),
        db.session.scalar(sa.select(sa.func.count()).where(OUTBOX.c.workflow_id == key)),
    )


def _add_leftover_outbox_row(workflow: Any) -> None:
    """An outbox row left behind for an ended workflow (cleanup must remove it too)."""
    last_execution_id = db.session.scalar(
        sa.select(sa.func.max(EXECUTIONS.c.id)).where(EXECUTIONS.c.workflow_id == workflow.id)
    )
    now = utcnow()
    db.session.execute(
        sa.insert(OUTBOX).values(
            execution_id=last_execution_id,
            workflow_id=workflow.id,
            queue_name="geneva",
            priority=0,
            available_at=now,
            publish_count=0,
            created_at=now,
        )
    )
    db.session.commit()


def _queued_execution_ids(app: Flask) -> list[Any]:
    """The execution ids of the step messages waiting in the memory broker's queue."""
    state = app.extensions["geneva"]
    queue = state.broker.queues[state.config.default_queue]
    messages = [dramatiq.Message.decode(data) for data in list(queue.queue)]
    return [m.args[0] for m in messages if m.actor_name.startswith("geneva_step")]


def _statements_counter(prefix: str) -> tuple[list[str], Any]:
    """Record the SQL statements starting with ``prefix`` (to see how work is batched)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(prefix):
            seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    return seen, record


# ----------------------------------------------------------------------------- cleanup


def test_old_finished_and_canceled_workflows_are_deleted_with_their_rows(app, user):
    finished = _transitioned(_finished(user), timedelta(days=31))
    canceled = _transitioned(_canceled(user), timedelta(days=31))
    _add_leftover_outbox_row(finished)
    _add_leftover_outbox_row(canceled)
    assert _row_counts(finished) == (1, 2, 1)
    assert _row_counts(canceled) == (1, 1, 1)

    result = run_housekeeping()

    assert result == HousekeepingResult(
        deleted_workflows=2, recovered_in_progress=0, recovered_scheduled=0
    )
    assert _row_counts(finished) == (0, 0, 0)
    assert _row_counts(canceled) == (0, 0, 0)


def test_recent_and_ongoing_workflows_are_kept(app, user):
    recent = _transitioned(_finished(user), timedelta(days=29))
    # Ongoing ones are kept however old their timestamps are.
    ready = _transitioned(_create(user), timedelta(days=400))
    paused = _transitioned(_paused(user), timedelta(days=400))
    performing = _transitioned(_create(user), timedelta(days=400))
    _stuck_in_progress(performing)
    failed = _create(user, fail=True)
    with pytest.raises(RuntimeError, match="first failed"):
        perform_next_step(failed)
    _transitioned(failed, timedelta(days=400))
    assert reload(failed).state == "paused"
    kept = {w.id: _row_counts(w) for w in (recent, ready, paused, performing, failed)}

    result = run_housekeeping()

    assert result.deleted_workflows == 0
    assert {w.id: _row_counts(w) for w in (recent, ready, paused, performing, failed)} == kept


@pytest.mark.parametrize(
    "app_config", [{"GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER": timedelta(hours=6)}]
)
def test_the_retention_is_the_configured_one(app, user):
    old = _transitioned(_finished(user), timedelta(hours=7))
    young = _transitioned(_finished(user), timedelta(hours=5))

    assert run_housekeeping().deleted_workflows == 1

    assert _row_counts(old) == (0, 0, 0)
    assert _row_counts(young)[0] == 1


def test_the_retention_is_measured_from_now_given(app, user):
    finished = _finished(user)  # transitioned just now

    assert run_housekeeping(now=utcnow() + timedelta(days=29)).deleted_workflows == 0
    assert run_housekeeping(now=utcnow() + timedelta(days=31)).deleted_workflows == 1
    assert _row_counts(finished) == (0, 0, 0)


@pytest.mark.parametrize("app_config", [{"GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER": None}])
def test_cleanup_is_off_when_the_retention_is_none(app, user):
    finished = _transitioned(_finished(user), timedelta(days=10_000))
    canceled = _transitioned(_canceled(user), timedelta(days=10_000))

    result = run_housekeeping(now=utcnow() + timedelta(days=10_000))

    assert result.deleted_workflows == 0
    assert _row_counts(finished) == (1, 2, 0)
    assert _row_counts(canceled) == (1, 1, 0)


@pytest.mark.parametrize("app_config", [{"GENEVA_HOUSEKEEPING_BATCH_SIZE": 2}])
def test_cleanup_deletes_in_batches(app, user):
    workflows = [_transitioned(_finished(user), timedelta(days=31)) for _ in range(5)]
    survivor = _finished(user)
    deletes, listener = _statements_counter("DELETE FROM GENEVA_WORKFLOWS")
    try:
        result = run_housekeeping()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", listener)

    assert result.deleted_workflows == 5
    assert len(deletes) == 3  # 2 + 2 + 1
    assert all(_row_counts(w) == (0, 0, 0) for w in workflows)
    assert _row_counts(survivor)[0] == 1


def test_cleanup_deletes_workflows_whose_class_is_gone(app, user):
    finished = _transitioned(_finished(user), timedelta(days=31))
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == finished.id)
        .values(workflow_class="RemovedLongAgoWorkflow")
    )
    db.session.commit()

    assert run_housekeeping().deleted_workflows == 1
    assert _row_counts(finished) == (0, 0, 0)


# ---------------------------------------------------------------------------- recovery


def test_an_execution_stuck_in_progress_is_reattempted(app, user):
    workflow = _create(user)
    stuck_id = _stuck_in_progress(workflow, started_ago=timedelta(hours=2))

    result = run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (1, 0)
    assert result.recovered == 1
    stuck, again = executions(workflow)
    assert stuck.id == stuck_id
    assert (stuck.state, stuck.outcome) == ("completed", "recovered")
    assert stuck.finished_at is not None
    assert (again.step_name, again.state) == ("first", "scheduled")
    assert again.scheduled_for <= utcnow()
    workflow = reload(workflow)
    assert workflow.state == "ready"
    assert workflow.next_step_name == "first"
    assert workflow.current_step_name is None
    # The same step is driven again: an outbox row and, after the commit, a message.
    assert [row.execution_id for row in outbox_rows(workflow)] == [again.id]
    assert again.id in _queued_execution_ids(app)
    # ... and it runs to the end.
    speedrun_workflow(workflow)
    assert history(workflow) == [
        ("first", "completed", "recovered"),
        ("first", "completed", "success"),
        ("second", "completed", "success"),
    ]
    assert workflow.state == "finished"


def test_an_overdue_scheduled_execution_is_reattempted(app, user):
    workflow = _create(user)
    lost_id = _overdue(workflow, timedelta(minutes=20))

    result = run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (0, 1)
    lost, again = executions(workflow)
    assert lost.id == lost_id
    assert (lost.state, lost.outcome) == ("completed", "recovered")
    assert (again.step_name, again.state) == ("first", "scheduled")
    assert reload(workflow).state == "ready"
    assert [row.execution_id for row in outbox_rows(workflow)] == [again.id]
    assert again.id in _queued_execution_ids(app)


def test_executions_within_their_thresholds_are_left_alone(app, user):
    running = _create(user)
    _stuck_in_progress(running, started_ago=timedelta(minutes=59))
    late = _create(user)
    _overdue(late, timedelta(minutes=14))
    waiting = perform_next_step(_create(user))  # second is due tomorrow
    before = {w.id: history(w) for w in (running, late, waiting)}

    result = run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (0, 0)
    assert {w.id: history(w) for w in (running, late, waiting)} == before
    assert reload(running).state == "performing"


@pytest.mark.parametrize(
    "app_config",
    [
        {
            "GENEVA_STUCK_IN_PROGRESS_THRESHOLD": timedelta(minutes=5),
            "GENEVA_STUCK_SCHEDULED_THRESHOLD": 60,  # seconds
        }
    ],
)
def test_the_thresholds_are_the_configured_ones(app, user):
    running = _create(user)
    _stuck_in_progress(running, started_ago=timedelta(minutes=6))
    running_briefly = _create(user)
    _stuck_in_progress(running_briefly, started_ago=timedelta(minutes=4))
    late = _create(user)
    _overdue(late, timedelta(seconds=90))
    barely_late = _create(user)
    _overdue(barely_late, timedelta(seconds=30))

    result = run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (1, 1)
    assert [s for _, s, _ in history(running)] == ["completed", "scheduled"]
    assert [s for _, s, _ in history(late)] == ["completed", "scheduled"]
    assert history(running_briefly) == [("first", "in_progress", None)]
    assert history(barely_late) == [("first", "scheduled", None)]


def test_a_paused_workflows_kept_execution_is_left_alone(app, user):
    paused = _paused(user)
    kept_id = _overdue(paused, timedelta(days=60))
    before = history(paused)

    result = run_housekeeping(now=utcnow() + timedelta(days=1))

    assert result.recovered == 0
    assert history(paused) == before == [("first", "scheduled", None)]
    assert reload(paused).state == "paused"
    # Resuming runs the kept execution, at once since it is overdue.
    paused.resume()
    db.session.commit()
    assert kept_id in _queued_execution_ids(app)


@pytest.mark.parametrize("app_config", [{"GENEVA_STUCK_RECOVERY_ACTION": "cancel"}])
def test_with_cancel_the_stuck_execution_and_its_workflow_are_canceled(app, user):
    running = _create(user)
    _stuck_in_progress(running, started_ago=timedelta(hours=2))
    late = _create(user)
    _overdue(late, timedelta(hours=1))

    result = run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (1, 1)
    for workflow in (running, late):
        assert history(workflow) == [("first", "canceled", "recovered")]
        workflow = reload(workflow)
        assert workflow.state == "canceled"
        assert workflow.next_step_name is None
        assert workflow.current_step_name is None
        assert workflow.transitioned_at is not None
        assert outbox_rows(workflow) == []


def test_recovery_is_measured_from_now_given(app, user):
    late = _create(user)  # first is due now: overdue in two hours' time
    running = _create(user)
    _stuck_in_progress(running)  # started just now

    result = run_housekeeping(now=utcnow() + timedelta(hours=2))

    assert (result.recovered_in_progress, result.recovered_scheduled) == (1, 1)
    assert history(late) == [("first", "completed", "recovered"), ("first", "scheduled", None)]
    assert history(running) == [
        ("first", "completed", "recovered"),
        ("first", "scheduled", None),
    ]
    # The step is scheduled again for the real now, not for the future ``now``.
    for workflow in (late, running):
        assert executions(workflow)[-1].scheduled_for <= utcnow()


@pytest.mark.parametrize("app_config", [{"GENEVA_HOUSEKEEPING_BATCH_SIZE": 2}])
@pytest.mark.parametrize("future", [False, True], ids=["old-rows", "now-in-the-future"])
def test_recovery_works_in_batches_and_recovers_each_execution_once(app, user, future):
    late = [_create(user) for _ in range(5)]
    running = [_create(user) for _ in range(5)]
    for workflow in running:
        _stuck_in_progress(workflow, started_ago=timedelta(hours=0 if future else 3))
    if not future:
        for workflow in late:
            _overdue(workflow, timedelta(hours=1))

    result = run_housekeeping(now=utcnow() + timedelta(hours=3)) if future else run_housekeeping()

    assert (result.recovered_in_progress, result.recovered_scheduled) == (5, 5)
    for workflow in late + running:
        assert history(workflow) == [
            ("first", "completed", "recovered"),
            ("first", "scheduled", None),
        ]
        assert reload(workflow).state == "ready"


def test_a_second_run_finds_nothing_more_to_do(app, user):
    _transitioned(_finished(user), timedelta(days=31))
    _stuck_in_progress(_create(user), started_ago=timedelta(hours=2))
    _overdue(_create(user), timedelta(hours=2))

    first = run_housekeeping()
    second = run_housekeeping()

    assert first == HousekeepingResult(1, 1, 1)
    assert second == HousekeepingResult(0, 0, 0)


def test_a_stuck_execution_of_a_class_that_is_gone_is_recovered(app, user):
    workflow = _create(user)
    workflow_id = workflow.id
    _stuck_in_progress(workflow, started_ago=timedelta(hours=2))
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow_id)
        .values(workflow_class="RenamedAwayWorkflow")
    )
    db.session.commit()
    db.session.expunge_all()

    assert run_housekeeping().recovered_in_progress == 1

    workflow = db.session.get(geneva.Workflow, workflow_id)
    assert type(workflow) is geneva.Workflow
    assert workflow.state == "ready"
    assert history(workflow) == [("first", "completed", "recovered"), ("first", "scheduled", None)]
    assert outbox_rows(workflow)
    # When it runs, the missing class pauses it with a clear error.
    with pytest.raises(WorkflowClassNotFoundError):
        perform_next_step(workflow)
    assert workflow.state == "paused"


def test_housekeeping_leaves_the_callers_session_usable(app, user):
    _transitioned(_finished(user), timedelta(days=31))
    run_housekeeping()
    fresh = _create(user)
    assert reload(fresh).state == "ready"


# ----------------------------------------------------------------- a body that ends late


def test_a_body_ending_after_housekeeping_recovered_it_records_nothing(app, user):
    """SPEC §3: when the body ends and its execution is no longer in progress, its writes
    are rolled back and nothing is recorded; the recovery's outcome stands."""
    runs: list[HousekeepingResult] = []

    class OutlivedWorkflow(geneva.Workflow):
        @step
        def slow(self) -> None:
            if not runs:
                # Meanwhile another process (its own app context, its own session) runs
                # housekeeping, which takes this execution for one whose worker died.
                with current_app.app_context():
                    runs.append(run_housekeeping(now=utcnow() + timedelta(hours=2)))
            db.session.add(Note(text=f"slow run {len(runs)}"))
            self.hero.counter += 1
            self.data["runs"] = self.data.get("runs", 0) + 1

        @step
        def after(self) -> None:
            pass

    workflow = OutlivedWorkflow.create(hero=user)
    db.session.commit()

    perform_next_step(workflow)

    assert runs[0].recovered_in_progress == 1
    db.session.expire_all()
    assert history(workflow) == [("slow", "completed", "recovered"), ("slow", "scheduled", None)]
    assert note_texts() == []
    assert db.session.get(User, user.id).counter == 0
    assert workflow.data == {}
    assert workflow.state == "ready"
    assert workflow.next_step_name == "slow"

    # The rescheduled execution runs normally; only its writes are kept.
    perform_next_step(workflow)
    db.session.expire_all()
    assert history(workflow) == [
        ("slow", "completed", "recovered"),
        ("slow", "completed", "success"),
        ("after", "scheduled", None),
    ]
    assert note_texts() == ["slow run 1"]
    assert db.session.get(User, user.id).counter == 1
    assert workflow.data == {"runs": 1}


# -------------------------------------------------------------------------- the actor


@pytest.mark.parametrize("app_config", [{"GENEVA_RELAY_IN_WORKERS": False}])
def test_the_housekeeping_actor_runs_housekeeping_on_a_worker(app, user):
    state = app.extensions["geneva"]
    old = _transitioned(_finished(user), timedelta(days=31))
    stuck = _create(user)
    _stuck_in_progress(stuck, started_ago=timedelta(hours=2))
    state.broker.flush_all()  # only the housekeeping message (and what it sends) runs

    worker = dramatiq.Worker(state.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        state.housekeeping_actor.send()
        state.broker.join(state.config.default_queue)
        worker.join()
    finally:
        worker.stop()

    db.session.expire_all()
    assert _row_counts(old) == (0, 0, 0)
    # Recovered, rescheduled at once, and the worker ran the step again.
    assert history(stuck) == [
        ("first", "completed", "recovered"),
        ("first", "completed", "success"),
        ("second", "scheduled", None),
    ]
    assert f"first of #{stuck.id}" in note_texts()
    assert reload(stuck).state == "ready"


def test_the_housekeeping_actor_is_a_dramatiq_actor_of_the_app(app):
    state = app.extensions["geneva"]
    actor = state.housekeeping_actor
    assert isinstance(actor, dramatiq.Actor)
    assert actor.broker is state.broker
    assert state.broker.get_actor(actor.actor_name) is actor
    assert actor.queue_name == state.config.default_queue


# ---------------------------------------------------------------------- concurrency


def test_concurrent_runs_delete_and_recover_each_row_once(app, user):
    old = [_transitioned(_finished(user), timedelta(days=31)) for _ in range(4)]
    running = [_create(user) for _ in range(4)]
    for workflow in running:
        _stuck_in_progress(workflow, started_ago=timedelta(hours=2))
    late = [_create(user) for _ in range(4)]
    for workflow in late:
        _overdue(workflow, timedelta(hours=1))
    runs = 3
    start = threading.Barrier(runs)
    results: list[HousekeepingResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        with app.app_context():  # a session of its own, like another process
            start.wait(timeout=30)
            try:
                results.append(run_housekeeping())
            except BaseException as error:  # reported below
                errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(results) == runs
    assert sum(r.deleted_workflows for r in results) == 4
    assert sum(r.recovered_in_progress for r in results) == 4
    assert sum(r.recovered_scheduled for r in results) == 4
    db.session.expire_all()
    assert all(_row_counts(w) == (0, 0, 0) for w in old)
    for workflow in running + late:
        assert history(workflow) == [
            ("first", "completed", "recovered"),
            ("first", "scheduled", None),
        ]


# ------------------------------------------------------------------------ UUID keys


class UuidHousekeptWorkflow(uuid_geneva.Workflow):
    @step
    def first(self) -> None:
        pass


@pytest.fixture
def uuid_app_config() -> dict[str, Any]:
    return {"GENEVA_HOUSEKEEPING_BATCH_SIZE": 2}


def test_housekeeping_works_with_uuid_keys(uuid_app):
    session = uuid_db.session
    workflows = uuid_geneva.Workflow.__table__
    executions_table = uuid_geneva.StepExecution.__table__
    customers = [Customer(name=f"c{i}") for i in range(6)]
    session.add_all(customers)
    session.commit()
    created = [UuidHousekeptWorkflow.create(hero=c) for c in customers]
    session.commit()
    done, stuck = created[:3], created[3:]
    for workflow in done:
        perform_next_step(workflow)
    session.execute(
        sa.update(workflows)
        .where(workflows.c.id.in_([w.id for w in done]))
        .values(transitioned_at=utcnow() - timedelta(days=31))
    )
    session.execute(
        sa.update(executions_table)
        .where(executions_table.c.workflow_id.in_([w.id for w in stuck]))
        .values(scheduled_for=utcnow() - timedelta(hours=1))
    )
    session.commit()
    done_ids = [w.id for w in done]

    result = run_housekeeping()

    assert result == HousekeepingResult(3, 0, 3)
    assert session.scalar(sa.select(sa.func.count()).select_from(workflows)) == 3
    assert (
        session.scalar(
            sa.select(sa.func.count()).where(executions_table.c.workflow_id.in_(done_ids))
        )
        == 0
    )
    for workflow in stuck:
        states = session.execute(
            sa.select(executions_table.c.state, executions_table.c.outcome)
            .where(executions_table.c.workflow_id == workflow.id)
            .order_by(executions_table.c.sequence)
        ).all()
        assert [tuple(row) for row in states] == [("completed", "recovered"), ("scheduled", None)]
