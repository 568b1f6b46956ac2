"""The chaos soak: workflows keep running, each step once, while the parts around them fail.

Two groups of real ``dramatiq`` worker processes (the relay inside them) run 40
four-step workflows (a step, a short wait, a step that waits for a signal, a last step)
on PostgreSQL and on MariaDB. As the run progresses, the test breaks something at each
of eight progress marks, in turn:

* ``kill -9`` a whole worker group mid-run (then starts it again): steps die in their
  bodies, inline runs die between their commits;
* terminates every database connection of the workers and relays;
* deletes the run's queue from Redis: published messages, delayed ones and acks vanish;
* ``kill -9`` the other worker group.

Meanwhile this process sends the workflows' signals (a third before their step waits,
a sixth of them twice with the same idempotency key) and runs housekeeping, as a cron job
would, with short stuck thresholds. At the end every workflow must be finished, every
step body must have committed exactly once, each waiting step must have taken its own
signal, and nothing may be left pending.

Each fault waits for the run to progress past the mark before it strikes (no sleeps):
a run that stops recovering fails the wait with the fault it was at.
"""

from __future__ import annotations

import os
import signal as signals
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva.housekeeping import run_housekeeping
from tests.e2e_app import ChaosWorkflow, StepRun
from tests.e2e_support import WorkerProcesses, terminate_other_connections, wait_until
from tests.models import db, geneva
from tests.test_e2e_workers import E2E, REDIS_URL, _e2e, _require_redis

pytestmark = pytest.mark.e2e

WORKFLOWS = 40
STEPS = ("first", "second", "third", "fourth")
#: Housekeeping's stuck thresholds in this run: a step killed in its body is reattempted
#: this long after it started (the steps here take milliseconds).
STUCK_AFTER = timedelta(seconds=4)


@pytest.fixture
def soak(server_database_url: str) -> Iterator[E2E]:
    _require_redis()
    yield from _e2e(
        server_database_url,
        REDIS_URL,
        GENEVA_STUCK_IN_PROGRESS_THRESHOLD=STUCK_AFTER,
        GENEVA_STUCK_SCHEDULED_THRESHOLD=STUCK_AFTER,
    )


def _committed_runs() -> int:
    db.session.rollback()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(StepRun)) or 0)


def _delete_the_queue(queue: str) -> int:
    """Delete every Redis key of ``queue``: messages, the delay queue, acks, wake tokens."""
    client = _require_redis()
    keys = list(client.scan_iter(match=f"dramatiq:*{queue}*", count=1000))
    return int(client.delete(*keys)) if keys else 0


def _kill(group: WorkerProcesses) -> WorkerProcesses:
    """SIGKILL the group's processes at once, and start a new group in its place."""
    assert group.popen is not None and group.popen.poll() is None, group.output()
    os.killpg(group.popen.pid, signals.SIGKILL)
    group.popen.wait(timeout=30)
    return WorkerProcesses(group.env, processes=group.processes, threads=group.threads)


@pytest.mark.timeout(1200)  # its own waits fail first, naming the fault they were at
def test_workflows_survive_killed_workers_dropped_connections_and_a_lost_queue(
    soak: E2E,
) -> None:
    groups = [soak.start_workers(processes=1, threads=4) for _ in range(2)]
    workflows = [ChaosWorkflow.create() for _ in range(WORKFLOWS)]
    db.session.commit()
    ids = [wf.id for wf in workflows]
    payloads = {wf_id: {"for": str(wf_id)} for wf_id in ids}
    sent: dict[Any, Any] = {}

    def send(batch: list[Any], twice: bool = False) -> None:
        for wf_id in batch:
            stored = geneva.send_signal(wf_id, "go", payloads[wf_id], idempotency_key=f"go-{wf_id}")
            if twice:
                assert stored.duplicate
            else:
                assert not stored.duplicate
                sent[wf_id] = stored.id
        db.session.commit()

    thirds = [ids[0::3], ids[1::3], ids[2::3]]
    send(thirds[0])  # before any of them waits: held for the step

    def kill_group(index: int) -> Callable[[], str]:
        def fault() -> str:
            groups[index] = _kill(groups[index])
            groups[index].start()
            soak.workers.append(groups[index])
            return f"kill -9 worker group {index}"

        return fault

    def drop_connections() -> str:
        terminate_other_connections(db.session)
        return "terminated the database connections"

    def lose_the_queue() -> str:
        return f"deleted {_delete_the_queue(soak.queue)} Redis keys of the queue"

    faults = [kill_group(0), drop_connections, lose_the_queue, kill_group(1)] * 2
    done: list[str] = []
    expected = WORKFLOWS * len(STEPS)

    def past(mark: int) -> bool:
        run_housekeeping()  # as cron would; idempotent, cheap when nothing is stuck
        return _committed_runs() >= mark

    for number, fault in enumerate(faults, start=1):
        mark = number * expected // (len(faults) + 3)
        wait_until(lambda mark=mark: past(mark), timeout=120,
                   message=f"{mark} step runs (after: {done or 'nothing yet'})")  # fmt: skip
        done.append(fault())
        if number == 2:
            send(thirds[1])
            send(thirds[0][::2], twice=True)
        if number == 4:
            send(thirds[2])
            send(thirds[1][::2], twice=True)

    try:
        wait_until(lambda: past(expected) and soak.all_finished(ids), timeout=180,
                   message=f"every workflow to finish (after: {done})")  # fmt: skip
    except AssertionError as stuck:
        raise AssertionError(f"{stuck}; unfinished: {_unfinished(ids)}") from None

    outcomes = Counter(  # shown when an assertion below fails
        str(outcome) for (outcome,) in db.session.execute(sa.select(geneva.StepExecution.outcome))
    )
    print(f"\nchaos soak on {db.engine.dialect.name}: {done}; executions by outcome {outcomes}")

    # Each step body committed exactly once.
    runs = soak.runs()
    assert len(runs) == expected
    assert Counter(runs.values()) == Counter({1: expected})

    db.session.expire_all()
    for wf_id in ids:
        finished = db.session.get(geneva.Workflow, wf_id)
        # One successful execution per step, whatever was recovered or refused before it.
        successes = Counter(
            e.step_name for e in finished.execution_history if str(e.outcome) == "success"
        )
        assert successes == Counter(dict.fromkeys(STEPS, 1)), finished.execution_history
        # The waiting step took its own signal, the one stored by the first send.
        assert finished.data == {"got": payloads[wf_id], "signal_id": sent[wf_id]}

    # One signal stored per workflow (the repeats were duplicates), every one consumed.
    stored = db.session.execute(
        sa.select(geneva.WorkflowSignal.workflow_id, geneva.WorkflowSignal.state)
    ).all()
    assert sorted(str(wf_id) for wf_id, _ in stored) == sorted(str(wf_id) for wf_id in ids)
    assert {str(state) for _, state in stored} == {"consumed"}
    for group in groups:
        assert group.popen is not None and group.popen.poll() is None, group.output()


def _unfinished(ids: list[Any]) -> list[tuple[Any, ...]]:
    """Each workflow not finished: its id and state, and its executions' step, state,
    outcome and error class (what a failed soak needs to say)."""
    db.session.rollback()
    workflows = geneva.Workflow.__table__
    executions = geneva.StepExecution.__table__
    rows = db.session.execute(
        sa.select(workflows.c.id, workflows.c.state)
        .where(workflows.c.id.in_(ids), workflows.c.state != "finished")
    ).all()
    described = []
    for workflow_id, state in rows:
        steps = db.session.execute(
            sa.select(executions.c.step_name, executions.c.state, executions.c.outcome,
                      executions.c.error_class_name)
            .where(executions.c.workflow_id == workflow_id)
            .order_by(executions.c.sequence)
        ).all()  # fmt: skip
        described.append((workflow_id, str(state), [tuple(map(str, s)) for s in steps]))
    return described
