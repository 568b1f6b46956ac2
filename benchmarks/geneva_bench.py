"""flask_geneva on the benchmark workload: real ``dramatiq`` workers, Redis, PostgreSQL.

A workflow is ``BenchWorkflow`` with five steps; each step body runs the workload's
``UPDATE bench_counter ...`` through ``db.session``, so it commits together with the
step's outcome (geneva's guarantee), and notes when it started. The commit time is taken
by a ``step_finalized`` signal receiver (it runs right after the finalize commit), which
pushes the step record to the harness's Redis list. For the timer load step 2 waits
``timer_s`` (``BENCH_TIMER_S``) in the database; the relay publishes it when due, and
its ``due`` is the execution's ``scheduled_for``.

Creating a workflow is ``BenchWorkflow.create(data={"wf": id})`` plus a commit in this
process, like a web request; the commit's fast path publishes step 1.

Settings (``run.py --set KEY=VALUE`` or env ``BENCH_<KEY>``):
  processes / threads      default 2 / 8
  idle_timeout_ms          ``GENEVA_WORKER_IDLE_TIMEOUT_MS``, default 10

Run one round by hand (normally run.py does this)::

    .venv/bin/python benchmarks/geneva_bench.py run --load light --json-out /tmp/r.json
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

SYSTEM = "geneva"
LABEL = "flask_geneva (outbox, 1-2 commits per step) on Redis + PostgreSQL"
ORDER = 2
VENV = ".venv"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import dramatiq  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402

from flask_geneva import Geneva, signals, step  # noqa: E402

QUEUE = "geneva_bench"
TIMER_S = float(os.environ.get("BENCH_TIMER_S", "0"))

db = SQLAlchemy()
geneva = Geneva(db=db)

_started: dict[Any, tuple[str, int, float, float | None]] = {}
_local = threading.local()


def _work(workflow: Any, number: int, due: float | None = None) -> None:
    started = time.time()
    db.session.execute(
        sa.text(
            "UPDATE bench_counter SET n = n + 1, updated_at = clock_timestamp() "
            "WHERE wf_id = :wf"
        ),
        {"wf": workflow.data["wf"]},
    )
    _started[workflow.current_execution.id] = (workflow.data["wf"], number, started, due)


class BenchWorkflow(geneva.Workflow):
    may_proceed_without_hero = True
    allow_multiple = True
    step_job_options = {"queue_name": QUEUE}

    @step
    def step_1(self) -> None:
        _work(self, 1)

    @step(wait=timedelta(seconds=TIMER_S))
    def step_2(self) -> None:
        due = self.current_execution.scheduled_for.timestamp() if TIMER_S else None
        _work(self, 2, due)

    @step
    def step_3(self) -> None:
        _work(self, 3)

    @step
    def step_4(self) -> None:
        _work(self, 4)

    @step
    def step_5(self) -> None:
        _work(self, 5)


def _record_commit(sender: Any, **payload: Any) -> None:
    entry = _started.pop(payload["execution_id"], None)
    key = os.environ.get("BENCH_STEPLOG_KEY")
    if entry is None or not key or payload["step_state"] not in ("completed",):
        return
    client = getattr(_local, "redis", None)
    if client is None:
        client = _local.redis = common.redis_client()
    wf, number, started, due = entry
    common.push_step_records(
        client, key, [common.step_record(wf, number, started, time.time(), due)]
    )


signals.step_finalized.connect(_record_commit, weak=False)


class _ReadyFile(dramatiq.Middleware):
    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        directory = os.environ.get("BENCH_READY_DIR")
        if directory:
            Path(directory, f"ready-{os.getpid()}").touch()


def create_app() -> Flask:
    app = Flask("geneva_bench")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=common.sqlalchemy_url(),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 20},
        GENEVA_BROKER_URL=common.REDIS_URL,
        GENEVA_WORKER_IDLE_TIMEOUT_MS=int(os.environ.get("BENCH_IDLE_TIMEOUT_MS", "10")),
    )
    db.init_app(app)
    geneva.init_app(app)
    return app


app = create_app()
broker = app.extensions["geneva"].broker
broker.add_middleware(_ReadyFile())


def run(load: common.Load, ctx: common.RunContext) -> common.RunOutput:
    processes = int(ctx.get("processes", "2"))
    threads = int(ctx.get("threads", "8"))
    idle_timeout = ctx.get("idle_timeout_ms", os.environ.get("BENCH_IDLE_TIMEOUT_MS", "10"))
    ids = common.workflow_ids(ctx.system, load, ctx.round_no)
    # Only the workers schedule step 2, so only they need the timer's wait.

    rc = common.redis_client()
    rc.flushdb()
    common.setup_bench_tables(ids)
    with app.app_context():
        geneva.OutboxMessage.__table__.drop(db.engine, checkfirst=True)
        geneva.StepExecution.__table__.drop(db.engine, checkfirst=True)
        geneva.Workflow.__table__.drop(db.engine, checkfirst=True)
        db.create_all()

    ready_dir = ctx.workdir / "ready"
    ready_dir.mkdir()
    env = {
        "BENCH_READY_DIR": str(ready_dir),
        "BENCH_STEPLOG_KEY": ctx.steplog_key,
        "BENCH_TIMER_S": str(load.timer_s),
        "BENCH_IDLE_TIMEOUT_MS": str(idle_timeout),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "dramatiq", "geneva_bench:broker",
        "--path", str(common.BENCH_DIR),
        "--processes", str(processes), "--threads", str(threads),
        "--queues", QUEUE,
        "--worker-shutdown-timeout", "5000",
    ]  # fmt: skip
    proc = common.start_process(cmd, env=env, log_path=ctx.workdir / "dramatiq.log")
    try:
        common.wait_for_dramatiq_boot(ready_dir, proc, processes, ctx.workdir)

        with app.app_context():

            def start(wf: str) -> None:
                BenchWorkflow.create(data={"wf": wf})
                db.session.commit()

            created = common.drive_starts(load, ids, start)
        common.wait_for_records(
            rc, ctx.steplog_key, load.steps_expected, load.timeout_s,
            alive=lambda: proc.poll() is None,
        )  # fmt: skip
        counters = common.verify_counters(ids)
        records = common.drain_step_records(rc, ctx.steplog_key)
    finally:
        common.stop_process(proc)
    return common.RunOutput(
        created=created,
        records=records,
        counters=counters,
        settings={
            "processes": processes,
            "threads": threads,
            "GENEVA_WORKER_IDLE_TIMEOUT_MS": int(idle_timeout),
            "relay": "in every worker process",
        },
    )


if __name__ == "__main__":
    common.runner_main(SYSTEM, run)
