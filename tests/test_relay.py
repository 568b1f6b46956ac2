"""The transactional outbox and its relay, on SQLite, PostgreSQL and MariaDB.

The broker here is the app's in-process ``memory://`` broker, so what was published can be
read back from its queue; the real-broker runs are in ``test_e2e_workers.py``.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from flask_geneva import step
from flask_geneva.executor import EARLY_WAIT_MAX, execute_step
from flask_geneva.publishing import PENDING_PUBLISH_KEY
from flask_geneva.timeutil import as_utc, utcnow
from tests.e2e_support import terminate_other_connections, wait_until
from tests.models import Note, db, geneva

#: Runs a test on PostgreSQL only (LISTEN/NOTIFY and server-side connection kills).
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class Quick(geneva.Workflow):
    may_proceed_without_hero = True

    @step
    def first(self) -> None:
        pass

    @step(wait=timedelta(minutes=5))
    def later(self) -> None:
        pass


class SoonWorkflow(geneva.Workflow):
    may_proceed_without_hero = True

    @step(wait=timedelta(milliseconds=400))
    def soon(self) -> None:
        pass


def published(app: Flask) -> list[Any]:
    """The execution ids of the step messages waiting in the memory broker's queue."""
    state = app.extensions["geneva"]
    queue = state.broker.queues[state.config.default_queue]
    return [dramatiq.Message.decode(data).args[0] for data in list(queue.queue)]


def outbox_rows() -> list[Any]:
    db.session.rollback()
    return list(db.session.execute(sa.select(geneva.OutboxMessage.__table__)).all())


def test_a_step_due_at_once_is_published_right_after_commit(app: Flask) -> None:
    workflow = Quick.create()
    execution_id = workflow.current_execution.id
    assert published(app) == []  # nothing before the commit
    db.session.commit()
    assert published(app) == [execution_id]
    assert [row.execution_id for row in outbox_rows()] == [execution_id]


def test_a_rolled_back_step_is_never_published(app: Flask) -> None:
    Quick.create()
    db.session.rollback()
    assert published(app) == []
    assert outbox_rows() == []
    assert app.extensions["geneva"].relay.publish_due(utcnow() + timedelta(days=1)) == 0
    assert published(app) == []


def test_claiming_an_execution_removes_its_outbox_row(app: Flask) -> None:
    workflow = Quick.create()
    db.session.commit()
    execute_step(geneva, workflow.current_execution.id)
    rows = outbox_rows()
    db.session.refresh(workflow)
    # Only the later step's row is left; the claimed one went with the claim.
    assert [row.execution_id for row in rows] == [workflow.current_execution.id]


def test_a_later_step_is_published_by_the_relay_when_due(app: Flask) -> None:
    relay = app.extensions["geneva"].relay
    workflow = Quick.create()
    db.session.commit()
    execute_step(geneva, workflow.current_execution.id)
    db.session.refresh(workflow)
    later = workflow.current_execution
    before = len(published(app))
    assert relay.publish_due(later.scheduled_for - timedelta(seconds=1)) == 0
    assert relay.publish_due(later.scheduled_for) == 1
    assert published(app)[before:] == [later.id]
    # Published rows stay until claimed, and are not sent again until they look lost.
    assert relay.publish_due(later.scheduled_for + timedelta(seconds=1)) == 0
    republish = later.scheduled_for + relay.republish_after + timedelta(seconds=1)
    assert relay.publish_due(republish) == 1
    assert [row.publish_count for row in outbox_rows()] == [2]


def test_a_message_that_stays_unclaimed_is_sent_again_less_and_less_often(app: Flask) -> None:
    """A message not claimed is sent again after GENEVA_RELAY_REPUBLISH_AFTER, then after
    twice as long each time, up to sixteen times as long: a long queue is not flooded
    with copies of the messages it still holds."""
    relay = app.extensions["geneva"].relay
    after = relay.republish_after
    workflow = Quick.create()
    db.session.commit()
    execute_step(geneva, workflow.current_execution.id)
    db.session.refresh(workflow)
    later = workflow.current_execution
    sent_at = later.scheduled_for
    assert relay.publish_due(sent_at) == 1  # the first time, when due
    sends = []
    for factor in (1, 2, 4, 8, 16, 16, 16):
        too_soon = sent_at + after * factor - timedelta(seconds=1)
        assert relay.publish_due(too_soon) == 0, factor
        sent_at = sent_at + after * factor
        assert relay.publish_due(sent_at) == 1, factor
        sends.append(outbox_rows()[0].publish_count)
    assert sends == [2, 3, 4, 5, 6, 7, 8]
    assert published(app).count(later.id) == 8


def test_the_relay_covers_a_fast_path_that_failed(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app.extensions["geneva"]
    real_publish = state.publish

    def broker_down(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(state, "publish", broker_down)
    workflow = Quick.create()
    db.session.commit()  # the fast path fails; the commit does not
    assert published(app) == []
    monkeypatch.setattr(state, "publish", real_publish)
    [row] = outbox_rows()
    # The committing process marked its row unpublished (the refused attempt counts):
    # the relay's to send, after the grace period.
    assert (row.published_at, row.publish_count) == (None, 1)
    relay = state.relay
    assert relay.publish_due(utcnow()) == 0  # still within the fast path's grace period
    assert relay.publish_due(row.created_at + relay.grace_period + timedelta(seconds=1)) == 1
    assert published(app) == [workflow.current_execution.id]


@pytest.mark.parametrize(
    "app_config",
    [{"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0, "pool_timeout": 3}}],
)
def test_a_refused_message_is_handed_to_the_relay_after_the_session_lets_go_of_its_connection(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one pooled connection, the hand-over cannot wait for a second one: it runs
    once the session has given its connection back (else it would time out, log, and
    leave the row to GENEVA_RELAY_REPUBLISH_AFTER)."""
    state = app.extensions["geneva"]

    def broker_down(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(state, "publish", broker_down)
    Quick.create()
    db.session.commit()
    [row] = outbox_rows()
    assert (row.published_at, row.publish_count) == (None, 1)


def test_a_step_scheduled_in_a_savepoint_waits_for_the_transaction_around_it(
    app: Flask,
) -> None:
    """SQLAlchemy reports a released savepoint as a commit; nothing is published before
    the transaction around it commits (a worker would not find the rows yet)."""
    outer = Quick.create().current_execution.id
    savepoint = db.session.begin_nested()
    inner = Quick.create().current_execution.id
    savepoint.commit()
    assert published(app) == []
    db.session.commit()
    assert sorted(published(app)) == sorted([outer, inner])


def test_a_commit_from_inside_a_savepoint_publishes_once_the_whole_transaction_commits(
    app: Flask,
) -> None:
    """``session.commit()`` with a savepoint open releases it, then commits the rest."""
    outer = Quick.create().current_execution.id
    db.session.begin_nested()
    inner = Quick.create().current_execution.id
    db.session.commit()
    assert sorted(published(app)) == sorted([outer, inner])
    assert len(outbox_rows()) == 2


def test_a_savepoint_rolled_back_forgets_only_its_own_steps(app: Flask) -> None:
    kept = Quick.create().current_execution.id
    savepoint = db.session.begin_nested()
    Quick.create()
    savepoint.rollback()
    db.session.commit()
    assert published(app) == [kept]
    assert [row.execution_id for row in outbox_rows()] == [kept]


def test_a_flush_that_fails_in_a_savepoint_forgets_only_the_savepoint_s_steps(
    app: Flask,
) -> None:
    kept = Quick.create().current_execution.id
    db.session.add(Note(id=1, text="first"))
    db.session.flush()
    with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():
        Quick.create()
        db.session.add(Note(id=1, text="the same key again"))
        db.session.flush()
    db.session.commit()
    assert published(app) == [kept]
    assert [row.execution_id for row in outbox_rows()] == [kept]


def test_a_session_closed_without_a_commit_publishes_nothing_later(app: Flask) -> None:
    Quick.create()
    db.session.close()
    kept = Quick.create().current_execution.id
    db.session.commit()
    assert published(app) == [kept]


def test_a_step_published_at_commit_is_not_sent_again_while_it_waits_in_a_long_queue(
    app: Flask,
) -> None:
    """The fast path marks a step due at once as published when it writes its row: a
    message waiting behind a queue longer than GENEVA_RELAY_GRACE_PERIOD gets no copy
    before GENEVA_RELAY_REPUBLISH_AFTER (then fewer and fewer, as for any message)."""
    relay = app.extensions["geneva"].relay
    workflow = Quick.create()
    db.session.commit()
    assert published(app) == [workflow.current_execution.id]
    [row] = outbox_rows()
    assert (row.published_at, row.publish_count) == (row.created_at, 1)
    created = row.created_at
    assert relay.grace_period < relay.republish_after
    assert relay.publish_due(created + relay.grace_period + timedelta(seconds=1)) == 0
    assert relay.publish_due(created + relay.republish_after - timedelta(seconds=1)) == 0
    assert relay.publish_due(created + relay.republish_after) == 1
    assert outbox_rows()[0].publish_count == 2
    again = created + relay.republish_after * 3  # then twice as long
    assert relay.publish_due(again - timedelta(seconds=1)) == 0
    assert relay.publish_due(again) == 1
    assert published(app) == [workflow.current_execution.id] * 3


def test_a_step_whose_committing_process_died_before_publishing_it_is_sent_by_the_relay(
    app: Flask,
) -> None:
    """The process dies between its commit and its publish: the row is marked published
    but its message never left; the relay sends it once it looks lost."""
    relay = app.extensions["geneva"].relay
    workflow = Quick.create()
    db.session.info.pop(PENDING_PUBLISH_KEY)  # what the process would have published
    db.session.commit()
    assert published(app) == []
    created = outbox_rows()[0].created_at
    assert relay.publish_due(created + relay.republish_after - timedelta(seconds=1)) == 0
    assert relay.publish_due(created + relay.republish_after) == 1
    assert published(app) == [workflow.current_execution.id]


def test_a_broker_refusal_releases_the_rows_for_the_next_pass(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app.extensions["geneva"]
    workflow = Quick.create()
    db.session.commit()
    execute_step(geneva, workflow.current_execution.id)
    db.session.refresh(workflow)
    due = workflow.current_execution.scheduled_for
    real_publish = state.publish

    def broker_down(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(state, "publish", broker_down)
    with pytest.raises(RuntimeError, match="refused 1 step message"):
        state.relay.publish_due(due)
    assert [row.published_at for row in outbox_rows()] == [None]
    monkeypatch.setattr(state, "publish", real_publish)
    assert state.relay.publish_due(due) == 1


def test_pause_withdraws_the_message_and_resume_publishes_it_again(app: Flask) -> None:
    workflow = Quick.create()
    db.session.commit()
    workflow.pause()
    db.session.commit()
    assert outbox_rows() == []
    workflow.resume()
    db.session.commit()
    [row] = outbox_rows()
    assert row.execution_id == workflow.current_execution.id
    # Written through the ORM (not the prebuilt statements): marked published all the same.
    assert (row.published_at, row.publish_count) == (row.created_at, 1)
    assert published(app)[-1] == workflow.current_execution.id


def test_a_step_scheduled_in_a_plain_session_is_published_after_that_session_commits(
    app: Flask,
) -> None:
    """Not db.session: a session of another class gets the publishing listeners too."""
    workflow = Quick.create()
    db.session.commit()
    workflow.pause()
    db.session.commit()
    before = len(published(app))
    with Session(db.engine) as operator:
        operator.get(geneva.Workflow, workflow.id).resume()
        assert len(published(app)) == before  # not before the commit
        operator.commit()
    db.session.expire_all()
    assert published(app)[before:] == [workflow.current_execution.id]


def test_a_later_step_is_published_its_lead_time_ahead_and_no_sooner(app: Flask) -> None:
    relay = app.extensions["geneva"].relay
    assert timedelta(0) < relay.lead <= EARLY_WAIT_MAX
    workflow = Quick.create()
    db.session.commit()
    execute_step(geneva, workflow.current_execution.id)
    db.session.refresh(workflow)
    later = workflow.current_execution
    too_soon = later.scheduled_for - relay.lead - timedelta(milliseconds=10)
    assert relay.publish_due(too_soon) == 0
    assert relay.publish_due(later.scheduled_for - relay.lead) == 1
    assert published(app)[-1] == later.id


def test_the_relay_thread_wakes_when_a_later_step_is_due(app: Flask) -> None:
    """The relay sleeps until the earliest due time (or a NOTIFY), not a fixed poll."""
    state = app.extensions["geneva"]
    state.start_relay()
    try:
        workflow = SoonWorkflow.create()
        db.session.commit()
        execution = workflow.current_execution
        due = execution.scheduled_for
        seen: dict[str, float] = {}

        def arrived() -> bool:
            if execution.id in published(app):
                seen["at"] = time.time()
                return True
            return False

        wait_until(arrived, timeout=10, message="the relay to publish the later step")
        lateness = seen["at"] - due.timestamp()
        # Published ahead by the relay's lead at most (the worker waits for the due time).
        assert lateness >= -(state.relay.lead.total_seconds() + 0.05)
        # Publishing well inside the poll interval (1 s on SQLite, 5 s on PostgreSQL)
        # means it woke for the due time; half of PostgreSQL's leaves room for a stalled
        # thread on a loaded machine (a clean-clone CI run once measured 2.2 s there).
        assert lateness < (0.9 if db.engine.dialect.name == "sqlite" else 2.5)
    finally:
        state.stop_relay()


@postgresql_only
def test_the_relay_thread_hears_rows_committed_by_another_process(
    app: Flask, database_url: str
) -> None:
    """On PostgreSQL a NOTIFY from any connection wakes it (SQLite relies on its poll)."""
    state = app.extensions["geneva"]
    state.start_relay()
    try:
        wait_until(lambda: state.relay._listener is not None, message="the LISTEN connection")
        # Schedule through a second engine, as another process would: no in-process wake.
        other = sa.create_engine(database_url)
        now = utcnow()
        due = now + timedelta(milliseconds=300)
        with other.begin() as connection:
            workflow_id = connection.execute(
                geneva.Workflow.__table__.insert()
                .values(
                    workflow_class="SoonWorkflow", state="ready", data={}, allow_multiple=False,
                    execution_count=1, created_at=now, updated_at=now, next_step_name="soon",
                )
                .returning(geneva.Workflow.__table__.c.id)
            ).scalar_one()
            execution_id = connection.execute(
                geneva.StepExecution.__table__.insert()
                .values(
                    workflow_id=workflow_id, sequence=1, step_name="soon", state="scheduled",
                    scheduled_for=due, created_at=now,
                )
                .returning(geneva.StepExecution.__table__.c.id)
            ).scalar_one()
            connection.execute(
                geneva.OutboxMessage.__table__.insert().values(
                    execution_id=execution_id, workflow_id=workflow_id, queue_name="geneva",
                    priority=0, available_at=due, publish_count=0, created_at=now,
                )
            )
            connection.execute(sa.select(sa.func.pg_notify("geneva_outbox", "new")))
        other.dispose()
        wait_until(lambda: execution_id in published(app), timeout=10, message="the NOTIFY")
        assert time.time() - due.timestamp() < 0.9
    finally:
        state.stop_relay()


@postgresql_only
def test_the_relay_survives_a_database_outage(app: Flask, database_url: str) -> None:
    state = app.extensions["geneva"]
    state.start_relay()
    try:
        wait_until(lambda: state.relay._listener is not None, message="the LISTEN connection")
        terminate_other_connections(db.session)
        workflow = SoonWorkflow.create()
        db.session.commit()
        execution_id = workflow.current_execution.id
        wait_until(lambda: execution_id in published(app), timeout=30, message="recovery")
        assert state.relay.running
    finally:
        state.stop_relay()


def test_several_relays_never_publish_a_row_twice(app: Flask, database_url: str) -> None:
    workflows = [Quick.create() for _ in range(40)]
    db.session.commit()
    for workflow in workflows:
        execute_step(geneva, workflow.current_execution.id)
    due = utcnow() + timedelta(minutes=6)
    state = app.extensions["geneva"]
    before = len(published(app))
    counts: list[int] = []
    barrier = threading.Barrier(4)

    def relay_pass() -> None:
        with app.app_context():
            barrier.wait()
            counts.append(state.relay.publish_due(due))
            db.session.remove()

    threads = [threading.Thread(target=relay_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 40
    assert len(published(app)) - before == 40
    assert len(set(published(app)[before:])) == 40


class CriticalWorkflow(geneva.Workflow):
    may_proceed_without_hero = True
    step_job_options = {"queue_name": "critical", "priority": 5, "time_limit": 30_000}

    @step
    def urgent(self) -> None:
        pass


def test_step_job_options_choose_the_queue_priority_and_time_limit(app: Flask) -> None:
    state = app.extensions["geneva"]
    workflow = CriticalWorkflow.create()
    db.session.commit()
    queue = state.broker.queues["critical"]
    messages = [dramatiq.Message.decode(data) for data in list(queue.queue)]
    assert [m.args[0] for m in messages] == [workflow.current_execution.id]
    message = messages[0]
    assert message.options["time_limit"] == 30_000
    actor = state.broker.get_actor(message.actor_name)
    assert actor.priority == 5
    # The relay sends it the same way.
    execute_step(geneva, workflow.current_execution.id)
    row = {"queue_name": "critical", "priority": 5, "time_limit_ms": 30_000}
    assert state.message_options_for(CriticalWorkflow) == tuple(row.values())


@pytest.mark.parametrize("relay_in_workers", [True, False])
def test_worker_processes_run_the_relay_unless_told_not_to(
    database_url: str, relay_in_workers: bool
) -> None:
    from tests.conftest import make_app

    app = make_app(database_url, GENEVA_RELAY_IN_WORKERS=relay_in_workers)
    state = app.extensions["geneva"]
    worker = dramatiq.Worker(state.broker, worker_threads=1)
    worker.start()
    try:
        assert state.relay.running is relay_in_workers
    finally:
        worker.stop()
    assert not state.relay.running


class ChainWorkflow(geneva.Workflow):
    may_proceed_without_hero = True

    @step
    def one(self) -> None:
        pass

    @step
    def two(self) -> None:
        pass

    @step
    def three(self) -> None:
        pass


@pytest.mark.parametrize(
    ("app_config", "distinct_messages"),
    [({}, 1), ({"GENEVA_INLINE_STEPS": 0}, 3), ({"GENEVA_INLINE_STEPS": 1}, 2)],
    ids=["inline-default", "inline-off", "inline-one"],
)
def test_a_worker_runs_due_steps_of_a_workflow_in_one_message(
    app: Flask, distinct_messages: int
) -> None:
    state = app.extensions["geneva"]
    worker = dramatiq.Worker(state.broker, worker_threads=2)
    worker.start()
    try:
        workflow = ChainWorkflow.create()
        db.session.commit()
        state.broker.join(state.config.default_queue, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    db.session.expire_all()
    assert workflow.state == "finished"
    history = workflow.execution_history
    assert [e.step_name for e in history] == ["one", "two", "three"]
    assert all(e.message_id for e in history)
    assert len({e.message_id for e in history}) == distinct_messages
    assert outbox_rows() == []


class ConditionalChain(geneva.Workflow):
    """Its second step has a condition: an inline run withholds its message and claims
    it after the commit (steps without one are claimed in the finalize itself, see
    ``test_inline_runs.py``)."""

    may_proceed_without_hero = True

    @step
    def one(self) -> None:
        pass

    @step(only_if=lambda wf: True)
    def two(self) -> None:
        pass


def test_a_step_withheld_for_an_inline_run_is_covered_by_the_relay(app: Flask) -> None:
    """If the worker dies before it runs the withheld step, the outbox still has it."""
    state = app.extensions["geneva"]
    workflow = ConditionalChain.create()
    db.session.commit()
    first = workflow.current_execution.id
    before = len(published(app))
    result = execute_step(geneva, first, inline_next=True)
    assert result is not None and result.continue_with is not None
    assert len(published(app)) == before  # not published: the caller was to run it
    rows = outbox_rows()
    assert [row.execution_id for row in rows] == [result.continue_with]
    # Marked published (the caller's to run): sent once it looks lost, not before.
    lost = rows[0].created_at + state.relay.republish_after
    assert state.relay.publish_due(lost - timedelta(seconds=1)) == 0
    assert state.relay.publish_due(lost) == 1
    assert published(app)[-1] == result.continue_with


REDIS_URL = os.environ.get("GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _schedule_from_another_process(database_url: str, due: Any) -> Any:
    """Write a workflow, its execution and its outbox row due at ``due`` through an
    engine of their own (no in-process wake-up); the execution's id."""
    other = sa.create_engine(database_url)
    now = utcnow()
    try:
        with other.begin() as connection:
            workflow_id = connection.execute(
                geneva.Workflow.__table__.insert().values(
                    workflow_class="SoonWorkflow", state="ready", data={}, allow_multiple=False,
                    execution_count=1, created_at=now, updated_at=now, next_step_name="soon",
                )
            ).inserted_primary_key[0]
            execution_id = connection.execute(
                geneva.StepExecution.__table__.insert().values(
                    workflow_id=workflow_id, sequence=1, step_name="soon", state="scheduled",
                    scheduled_for=due, created_at=now,
                )
            ).inserted_primary_key[0]
            connection.execute(
                geneva.OutboxMessage.__table__.insert().values(
                    execution_id=execution_id, workflow_id=workflow_id, queue_name="geneva",
                    priority=0, available_at=due, publish_count=0, created_at=now,
                )
            )
    finally:
        other.dispose()
    return execution_id


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
@pytest.mark.parametrize(
    "app_config",
    [{"GENEVA_BROKER_URL": REDIS_URL, "GENEVA_DEFAULT_QUEUE": "relay_wakeups_test"}],
)
def test_on_mariadb_a_wake_up_through_redis_brings_rows_another_process_committed(
    app: Flask, database_url: str
) -> None:
    """MariaDB has no NOTIFY: the committing process publishes a wake-up on the Redis
    broker, and the relay publishes a step due sooner than its poll at the due time less
    its lead, not on its next poll (up to a second later). Three times, so that a relay
    that only polled would be caught (each time it has about one chance in six)."""
    state = app.extensions["geneva"]
    wakeups = state.wakeups
    assert wakeups is not None
    client = state.broker.client
    state.start_relay()
    lead = state.relay.lead.total_seconds()
    try:
        wait_until(
            lambda: client.pubsub_numsub(wakeups.channel)[0][1] >= 1,
            message="the relay's wake-up subscription",
        )
        outbox = geneva.OutboxMessage.__table__
        late_by = []
        for _ in range(3):
            due = utcnow() + timedelta(seconds=lead + 0.15)
            execution_id = _schedule_from_another_process(database_url, due)
            wakeups.announce()  # what the other process does after its commit

            def published_at(execution_id: Any = execution_id) -> Any:
                db.session.rollback()
                return db.session.scalar(
                    sa.select(outbox.c.published_at).where(outbox.c.execution_id == execution_id)
                )

            wait_until(lambda: published_at() is not None, timeout=10, message="the wake-up")
            published = as_utc(published_at())
            late_by.append((published - (due - state.relay.lead)).total_seconds())
        assert min(late_by) >= -0.005, late_by  # never ahead of its lead
        assert max(late_by) < 0.1, late_by  # a poll would be up to a second late
    finally:
        state.stop_relay()
        client.delete(f"{state.broker.namespace}:relay_wakeups_test")


@postgresql_only
def test_a_relay_whose_listen_is_refused_still_publishes(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection that refuses ``LISTEN`` (a proxy in front of PostgreSQL, say) costs
    the relay its wake-ups, not its publishing: each pass still publishes what is due."""
    state = app.extensions["geneva"]
    relay = state.relay

    def refused() -> None:
        raise RuntimeError("LISTEN is not supported by this connection")

    monkeypatch.setattr(relay, "_ensure_listener", refused)
    state.start_relay()
    try:
        workflow = SoonWorkflow.create()
        db.session.commit()
        execution_id = workflow.current_execution.id
        wait_until(lambda: execution_id in published(app), timeout=20,
                   message="the relay to publish without LISTEN")  # fmt: skip
    finally:
        state.stop_relay()
    assert "LISTEN is not supported" in caplog.text  # the failure is still reported
