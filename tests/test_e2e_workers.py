"""End to end: real ``dramatiq`` worker processes on Redis (and RabbitMQ), on PostgreSQL
and MariaDB.

Each test starts workers as ``dramatiq tests.e2e_app:broker`` — the relay runs inside
them — and creates workflows from this process, like a web process would.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from flask_geneva import brokers
from flask_geneva.brokers import WAKE_TOKENS_KEPT, GenevaRedisBroker, WakeableConsumer
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.publishing import PENDING_PUBLISH_KEY
from flask_geneva.timeutil import as_utc, utcnow
from tests.e2e_app import (
    HangingWorkflow,
    StepRun,
    SubSecondWaitWorkflow,
    ThreeStepWorkflow,
    TimedStepsWorkflow,
    WaitingWorkflow,
    create_app,
)
from tests.e2e_support import WorkerProcesses, terminate_other_connections, wait_until
from tests.models import db, geneva

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("GENEVA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@dataclass
class E2E:
    app: Flask
    env: dict[str, str]
    queue: str
    workers: list[WorkerProcesses] = field(default_factory=list)

    def start_workers(self, processes: int = 2, threads: int = 4) -> WorkerProcesses:
        workers = WorkerProcesses(self.env, processes=processes, threads=threads).start()
        self.workers.append(workers)
        return workers

    def states(self, ids: list[Any]) -> dict[str, int]:
        db.session.rollback()
        rows = db.session.execute(
            sa.select(geneva.Workflow.state, sa.func.count())
            .where(geneva.Workflow.id.in_(ids))
            .group_by(geneva.Workflow.state)
        )
        return {str(state): count for state, count in rows}

    def all_finished(self, ids: list[Any]) -> bool:
        return self.states(ids) == {"finished": len(ids)}

    def runs(self) -> dict[tuple[str, str], int]:
        db.session.rollback()
        rows = db.session.execute(
            sa.select(StepRun.workflow_id, StepRun.step_name, sa.func.count()).group_by(
                StepRun.workflow_id, StepRun.step_name
            )
        )
        return {(workflow_id, step): count for workflow_id, step, count in rows}


def _require_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis is required for the end-to-end tests: {error}")
    return client


def _e2e(database_url: str, broker_url: str, **config: Any) -> Iterator[E2E]:
    queue = f"e2e_{uuid.uuid4().hex[:10]}"
    app = create_app(database_url, broker_url, queue, **config)
    env = {"E2E_DATABASE_URL": database_url, "E2E_BROKER_URL": broker_url, "E2E_QUEUE": queue}
    with app.app_context():
        db.drop_all()
        db.create_all()
        context = E2E(app, env, queue)
        try:
            yield context
        finally:
            for workers in context.workers:
                workers.stop()
            db.session.remove()
            db.drop_all()
            for engine in db.engines.values():
                engine.dispose()


@pytest.fixture
def e2e(server_database_url: str) -> Iterator[E2E]:
    """Workers on Redis, on PostgreSQL and on MariaDB."""
    _require_redis()
    yield from _e2e(server_database_url, REDIS_URL)


def _create(cls: Any, count: int) -> list[Any]:
    workflows = [cls.create() for _ in range(count)]
    db.session.commit()
    return [wf.id for wf in workflows]


def test_a_workflow_with_waits_finishes_with_its_steps_on_time(e2e: E2E) -> None:
    e2e.start_workers()
    ids = _create(WaitingWorkflow, 3)
    wait_until(lambda: e2e.all_finished(ids), timeout=60, message="the workflows to finish")

    executions = db.session.execute(
        sa.select(geneva.StepExecution.scheduled_for, StepRun.started_at, StepRun.step_name)
        .join(StepRun, StepRun.execution_id == sa.cast(geneva.StepExecution.id, sa.String))
        .where(geneva.StepExecution.workflow_id.in_(ids))
    ).all()
    assert len(executions) == 9
    for scheduled_for, body_started, step_name in executions:
        lateness = body_started - as_utc(scheduled_for).timestamp()
        # Never early (one clock here), and started promptly: the relay wakes at the due
        # time rather than on its poll interval.
        assert lateness >= -0.01, (step_name, lateness)
        assert lateness < 1.0, (step_name, lateness)
    waits = db.session.execute(
        sa.select(geneva.StepExecution.step_name, geneva.StepExecution.scheduled_for)
        .where(geneva.StepExecution.workflow_id == ids[0])
        .order_by(geneva.StepExecution.sequence)
    ).all()
    assert [name for name, _ in waits] == ["start", "after_one_second", "after_two_more"]
    assert waits[2][1] - waits[1][1] >= timedelta(seconds=2)


def test_a_short_wait_scheduled_by_a_process_without_a_relay_starts_on_time(e2e: E2E) -> None:
    """This process runs no relay; the workers' relays learn of the rows it commits from
    a NOTIFY (PostgreSQL) or a wake-up on the broker (MariaDB), not from their poll, and
    each first step starts within a few milliseconds of its due time."""
    e2e.start_workers()
    lateness = []
    for _ in range(5):
        [workflow_id] = _create(SubSecondWaitWorkflow, 1)
        ids = [workflow_id]
        wait_until(lambda: e2e.all_finished(ids), timeout=30, message="the step")  # noqa: B023
        scheduled_for, body_started = db.session.execute(
            sa.select(geneva.StepExecution.scheduled_for, StepRun.started_at)
            .join(StepRun, StepRun.execution_id == sa.cast(geneva.StepExecution.id, sa.String))
            .where(geneva.StepExecution.workflow_id == workflow_id)
        ).one()
        lateness.append(body_started - as_utc(scheduled_for).timestamp())
    print(f"lateness of a first step 0.4 s after its creation, ms: "
          f"{', '.join(f'{1000 * late:.1f}' for late in lateness)}")
    assert min(lateness) >= -0.01, lateness  # never early (one clock here)
    # Typically 1-5 ms; a relay that waited for its poll would be up to a second late.
    assert sorted(lateness)[2] < 0.05, lateness
    assert max(lateness) < 0.5, lateness


def test_200_concurrent_workflows_run_every_step_exactly_once(e2e: E2E) -> None:
    e2e.start_workers(processes=2, threads=8)
    ids = _create(ThreeStepWorkflow, 200)
    wait_until(lambda: e2e.all_finished(ids), timeout=180, message="200 workflows to finish")
    runs = e2e.runs()
    assert len(runs) == 600
    assert set(runs.values()) == {1}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.OutboxMessage)) == 0


def test_each_step_of_an_inline_run_gets_the_whole_time_limit(e2e: E2E) -> None:
    """Dramatiq's time limit counts per message; the steps a worker runs inline after
    the message's own each get the class's whole limit, and a step that outlasts it is
    still stopped."""
    e2e.start_workers(processes=1, threads=1)
    [workflow_id] = _create(TimedStepsWorkflow, 1)
    wait_until(
        lambda: e2e.states([workflow_id]) == {"paused": 1},
        timeout=60,
        message="the workflow to pause at its step that is too long",
    )
    rows = db.session.execute(
        sa.select(
            geneva.StepExecution.step_name,
            geneva.StepExecution.state,
            geneva.StepExecution.error_class_name,
            geneva.StepExecution.message_id,
        )
        .where(geneva.StepExecution.workflow_id == workflow_id)
        .order_by(geneva.StepExecution.sequence)
    ).all()
    assert [(name, state, error) for name, state, error, _ in rows] == [
        ("one", "completed", None),
        ("two", "completed", None),
        ("three", "completed", None),
        ("four", "completed", None),
        ("five", "completed", None),
        ("too_long", "failed", "dramatiq.middleware.time_limit.TimeLimitExceeded"),
    ]
    # One message ran them all: 3.5 s of steps under a limit of 2 s per message.
    assert len({message_id for *_, message_id in rows}) == 1


def test_a_step_message_delivered_twice_runs_once(e2e: E2E) -> None:
    state = e2e.app.extensions["geneva"]
    workflow = ThreeStepWorkflow.create()
    db.session.commit()
    first_execution = workflow.current_execution.id
    for _ in range(3):
        state.step_actor.send(first_execution)
    state.step_actor.send(10**12)  # no such execution
    state.step_actor.send("not-an-id")  # malformed
    workers = e2e.start_workers()
    wait_until(lambda: e2e.all_finished([workflow.id]), message="the workflow to finish")
    state.step_actor.send(first_execution)  # after it finished
    second = ThreeStepWorkflow.create()
    db.session.commit()
    wait_until(lambda: e2e.all_finished([second.id]), message="the workers to go on")
    runs = e2e.runs()
    assert runs[(str(workflow.id), "first")] == 1
    assert sum(count for (wf, _), count in runs.items() if wf == str(workflow.id)) == 3
    assert workers.popen is not None and workers.popen.poll() is None
    assert "does not exist" in workers.output()
    assert "malformed step message" in workers.output()


def test_flushall_on_redis_in_the_middle_of_a_run_loses_no_workflow(e2e: E2E) -> None:
    client = _require_redis()
    e2e.start_workers()
    ids = _create(WaitingWorkflow, 30)
    wait_until(lambda: len(e2e.runs()) >= 30, message="the first steps to run")
    client.flushall()
    wait_until(lambda: e2e.all_finished(ids), timeout=120, message="every workflow to finish")
    runs = e2e.runs()
    assert len(runs) == 90
    assert set(runs.values()) == {1}


def test_a_worker_killed_in_a_step_is_recovered_by_housekeeping(e2e: E2E) -> None:
    workers = e2e.start_workers(processes=1, threads=2)
    workflow = HangingWorkflow.create()
    db.session.commit()
    wait_until(lambda: e2e.runs().get((str(workflow.id), "hang_once")), message="the hang")
    workers.kill()
    db.session.rollback()
    assert db.session.get(geneva.Workflow, workflow.id).state == "performing"

    # Later, housekeeping finds the execution stuck in progress past its threshold.
    result = run_housekeeping(now=utcnow() + timedelta(hours=2))
    assert (result.recovered_in_progress, result.recovered_scheduled) == (1, 0)

    e2e.start_workers(processes=1, threads=2)
    wait_until(lambda: e2e.all_finished([workflow.id]), message="the recovered workflow")
    db.session.expire_all()
    finished = db.session.get(geneva.Workflow, workflow.id)
    history = [(e.step_name, str(e.state), str(e.outcome)) for e in finished.execution_history]
    assert history == [
        ("hang_once", "completed", "recovered"),
        ("hang_once", "completed", "success"),
        ("after", "completed", "success"),
    ]
    assert finished.data == {"survived": True}


def test_a_broker_that_refuses_the_messages_after_the_commit_is_covered_by_the_relay(
    e2e: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = e2e.app.extensions["geneva"]

    def broker_unreachable(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("the broker went away between commit and publish")

    monkeypatch.setattr(state, "publish", broker_unreachable)
    ids = _create(ThreeStepWorkflow, 5)
    client = _require_redis()
    assert client.hlen(f"dramatiq:{e2e.queue}.msgs") == 0
    outbox = geneva.OutboxMessage.__table__
    marks = db.session.execute(sa.select(outbox.c.published_at, outbox.c.publish_count)).all()
    assert marks == [(None, 1)] * 5  # handed to the relay (the refused attempt counts)

    e2e.start_workers()  # their relays publish what the fast path missed
    wait_until(lambda: e2e.all_finished(ids), timeout=60, message="the relay to publish")
    assert set(e2e.runs().values()) == {1}


def test_a_crash_between_commit_and_publish_is_covered_by_the_relay(e2e: E2E) -> None:
    """The process dies after its commit, before its publish: the rows say published, no
    message exists; the workers' relays send them once they look lost."""
    workflows = [ThreeStepWorkflow.create() for _ in range(5)]
    db.session.info.pop(PENDING_PUBLISH_KEY)  # what the process would have published
    db.session.commit()
    ids = [wf.id for wf in workflows]
    client = _require_redis()
    assert client.hlen(f"dramatiq:{e2e.queue}.msgs") == 0
    outbox = geneva.OutboxMessage.__table__
    assert db.session.scalar(sa.select(sa.func.count()).where(outbox.c.publish_count == 1)) == 5

    e2e.start_workers()
    wait_until(lambda: e2e.all_finished(ids), timeout=60, message="the relay to republish")
    assert set(e2e.runs().values()) == {1}


def test_only_the_step_queues_wait_on_the_wake_channel(pg_database_url: str) -> None:
    """A step queue's consumer waits on its wake list for up to
    GENEVA_WORKER_IDLE_TIMEOUT_MS, while the delay queue (geneva sends no delayed
    messages) and the worker threads keep the worker's own timeout."""
    _require_redis()
    app = create_app(pg_database_url, REDIS_URL, f"idle_{uuid.uuid4().hex[:8]}")
    state = app.extensions["geneva"]
    queue = state.config.default_queue
    worker = dramatiq.Worker(state.broker, queues={queue}, worker_threads=1, worker_timeout=900)
    worker.start()
    try:
        consumers = worker.consumers
        assert set(consumers) == {queue, f"{queue}.DQ"}
        wait_until(
            lambda: all(getattr(c, "consumer", None) for c in consumers.values()),
            message="the consumers to start",
        )
        step_consumer = consumers[queue].consumer
        assert isinstance(step_consumer, WakeableConsumer)
        assert step_consumer.idle_seconds * 1000 == state.config.worker_idle_timeout_ms == 20
        assert step_consumer.wake_key == f"dramatiq:geneva-wake:{queue}"
        assert not isinstance(consumers[f"{queue}.DQ"].consumer, WakeableConsumer)
        assert consumers[f"{queue}.DQ"].consumer.timeout == 900
        assert worker.worker_timeout == 900
    finally:
        worker.stop()


def test_a_published_message_wakes_an_idle_consumer_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle consumer waiting 4 s on its wake list gets a message well before that:
    the message's token ends its blocking pop. (Without the token it would fetch only
    when the 4 s are over.)"""
    client = _require_redis()
    monkeypatch.setattr(brokers, "WAKE_WAIT_MAX", 4.0)
    queue = f"wake_{uuid.uuid4().hex[:8]}"
    broker = GenevaRedisBroker(url=REDIS_URL, idle_timeout_ms=4_000)
    received = threading.Event()

    @dramatiq.actor(broker=broker, queue_name=queue, actor_name=f"{queue}_actor")
    def note(value: int) -> None:
        received.set()

    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        def consumer_blocked() -> bool:
            return any(
                entry.get("cmd") == "blpop" for entry in client.client_list()
            )

        wait_until(consumer_blocked, timeout=10, message="the idle consumer to wait")
        note.send(1)
        assert received.wait(timeout=2), "the idle consumer did not wake for the message"
        # The woken consumer took the token; the list never grows past twice the kept.
        assert client.llen(broker.wake_key(queue)) <= 2 * WAKE_TOKENS_KEPT
    finally:
        worker.stop()
        client.delete(broker.wake_key(queue))
        broker.close()


def test_a_rolled_back_creation_publishes_nothing(e2e: E2E) -> None:
    client = _require_redis()
    ThreeStepWorkflow.create()
    db.session.rollback()
    assert client.hlen(f"dramatiq:{e2e.queue}.msgs") == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 0

    kept = ThreeStepWorkflow.create()
    db.session.commit()
    assert client.hlen(f"dramatiq:{e2e.queue}.msgs") == 1
    e2e.start_workers()
    wait_until(lambda: e2e.all_finished([kept.id]), message="the committed workflow")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 1


def test_workflows_run_on_rabbitmq(pg_database_url: str) -> None:
    for e2e in _e2e(pg_database_url, AMQP_URL):
        e2e.start_workers()
        ids = _create(ThreeStepWorkflow, 20) + _create(WaitingWorkflow, 2)
        wait_until(lambda e2e=e2e, ids=ids: e2e.all_finished(ids), timeout=90, message="AMQP")
        assert set(e2e.runs().values()) == {1}
        assert len(e2e.runs()) == 66


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[Any]:
    """A Redis server of this test's own, so it can be killed and restarted."""
    import shutil
    import socket
    import subprocess

    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is required for the broker outage test")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class PrivateRedis:
        url = f"redis://127.0.0.1:{port}/0"
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            client = redis.Redis.from_url(self.url)
            wait_until(lambda: _pings(client), timeout=20, message="the private Redis")

        def kill(self) -> None:
            if self.process is not None:
                self.process.kill()
                self.process.wait(timeout=20)

    private = PrivateRedis()
    private.start()
    yield private
    private.kill()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_workers_and_relays_survive_a_broker_outage(
    server_database_url: str, private_redis: Any
) -> None:
    for e2e in _e2e(server_database_url, private_redis.url):
        workers = e2e.start_workers()
        ids = _create(WaitingWorkflow, 20)
        wait_until(lambda e2e=e2e: len(e2e.runs()) >= 20, message="the first steps")
        private_redis.kill()
        wait_until(
            lambda workers=workers: "Connection" in workers.output(),
            timeout=60,
            message="the workers to notice the outage",
        )
        private_redis.start()
        wait_until(
            lambda e2e=e2e, ids=ids: e2e.all_finished(ids), timeout=120, message="recovery"
        )
        assert workers.popen is not None and workers.popen.poll() is None
        assert set(e2e.runs().values()) == {1}


def test_workers_survive_a_database_outage(e2e: E2E) -> None:
    workers = e2e.start_workers()
    ids = _create(WaitingWorkflow, 20)
    wait_until(lambda: len(e2e.runs()) >= 20, message="the first steps")
    terminate_other_connections(db.session)
    wait_until(lambda: e2e.all_finished(ids), timeout=120, message="the workflows to finish")
    assert workers.popen is not None and workers.popen.poll() is None
    assert set(e2e.runs().values()) == {1}


def test_the_wake_list_stays_short_when_nobody_takes_its_tokens() -> None:
    client = _require_redis()
    queue = f"wake_{uuid.uuid4().hex[:8]}"
    broker = GenevaRedisBroker(url=REDIS_URL, idle_timeout_ms=100)

    @dramatiq.actor(broker=broker, queue_name=queue, actor_name=f"{queue}_actor")
    def note(value: int) -> None:
        pass

    try:
        for value in range(3 * WAKE_TOKENS_KEPT):
            note.send(value)
        length = client.llen(broker.wake_key(queue))
        assert WAKE_TOKENS_KEPT <= length <= 2 * WAKE_TOKENS_KEPT
    finally:
        client.delete(broker.wake_key(queue), f"dramatiq:{queue}", f"dramatiq:{queue}.msgs")
        broker.close()
