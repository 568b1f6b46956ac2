"""flask_geneva on the benchmark workload: real ``dramatiq`` workers, Redis, PostgreSQL.

With heroes (the default, and the headline): a workflow is ``BenchWorkflow`` with five
steps, and its hero is its own ``bench_counter`` row (``BenchCounter``, mapped on
``db.Model``): no ``may_proceed_without_hero``, no ``allow_multiple``, so every step
pays the hero check and creation the one-ongoing check, as a user's workflow does. Each
step body updates its hero through ``db.session`` (``hero.n = BenchCounter.n + 1``,
``updated_at = clock_timestamp()``: the unit of work emits the workload's very
``UPDATE bench_counter SET n = n + 1 ...``), so the write commits together with the
step's outcome (geneva's guarantee).

Without heroes (``heroes=0``, the ``geneva-noheroes`` system): ``BenchWorkflowNoHero``
(``may_proceed_without_hero = True``, ``allow_multiple = True``) whose step body runs
the same ``UPDATE`` as text through ``db.session``, keyed by ``data["wf"]``: what this
benchmark measured up to 2026-12-03.

Each body notes when it started. The commit time is taken by a ``step_finalized`` signal
receiver (it runs right after the finalize commit), which pushes the step record to the
harness's Redis list. For the timer load step 2 waits ``timer_s`` (``BENCH_TIMER_S``) in
the database; the relay publishes it when due, and its ``due`` is the execution's
``scheduled_for``.

Creating a workflow is ``BenchWorkflow.create(hero=counter, data={"wf": id})`` plus a
commit in this process, like a web request, each at once while the workers run; the
commit's fast path publishes step 1. The hero is in hand, as in a request that has
loaded the record it acts on: the harness builds a reference to each counter row before
the clock starts (a detached instance with its primary key, no query), so loading the
hero, which is the application's work and which the floor's and DBOS's harnesses do not
do either, is not timed.

Settings (``run.py --set KEY=VALUE`` or env ``BENCH_<KEY>``):
  processes / threads      default 2 / 8
  idle_timeout_ms          ``GENEVA_WORKER_IDLE_TIMEOUT_MS``, default 10
  heroes                   1 (default): hero workflows as above; 0: the hero-less variant
  hero_update              orm (default): the body sets the hero's attributes; sql: it
                           runs the ``UPDATE`` as text through ``db.session`` (heroes=1)

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
LABEL = "flask_geneva with heroes (each workflow's hero is its bench_counter row)"
ORDER = 2
VENV = ".venv"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import dramatiq  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask import Flask  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy.orm import Mapped, make_transient_to_detached, mapped_column  # noqa: E402

from flask_geneva import Geneva, signals, step  # noqa: E402

QUEUE = "geneva_bench"
TIMER_S = float(os.environ.get("BENCH_TIMER_S", "0"))
#: How a hero workflow's step updates its hero: "orm" (attributes) or "sql" (text).
HERO_UPDATE = os.environ.get("BENCH_HERO_UPDATE", "orm")

db = SQLAlchemy()
geneva = Geneva(db=db)

_started: dict[Any, tuple[str, int, float, float | None]] = {}
_local = threading.local()
#: The server's time now (``clock_timestamp()`` on PostgreSQL).
_NOW_SQL = "UTC_TIMESTAMP(6)" if common.on_mariadb() else "clock_timestamp()"
_UPDATE = sa.text(
    f"UPDATE bench_counter SET n = n + 1, updated_at = {_NOW_SQL} WHERE wf_id = :wf"
)


class BenchCounter(db.Model):  # type: ignore[name-defined,misc]
    """The workload's counter row (created by ``common.setup_bench_tables``): each hero
    workflow's hero."""

    __tablename__ = "bench_counter"
    wf_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    n: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    updated_at: Mapped[Any] = mapped_column(sa.DateTime(timezone=True), nullable=True)


def _work(workflow: Any, number: int, due: float | None = None) -> None:
    """A hero workflow's step: update its hero row through ``db.session``."""
    started = time.time()
    wf = workflow.data["wf"]
    if HERO_UPDATE == "sql":
        db.session.execute(_UPDATE, {"wf": wf})
    else:
        hero = workflow.hero
        hero.n = BenchCounter.n + 1
        hero.updated_at = sa.literal_column(_NOW_SQL)
    _started[workflow.current_execution.id] = (wf, number, started, due)


def _work_without_hero(workflow: Any, number: int, due: float | None = None) -> None:
    """A hero-less workflow's step: the same ``UPDATE``, as text through ``db.session``."""
    started = time.time()
    db.session.execute(_UPDATE, {"wf": workflow.data["wf"]})
    _started[workflow.current_execution.id] = (workflow.data["wf"], number, started, due)


def _due(workflow: Any) -> float | None:
    return workflow.current_execution.scheduled_for.timestamp() if TIMER_S else None


class BenchWorkflow(geneva.Workflow):
    """Five steps on the workflow's hero, its ``bench_counter`` row (the headline)."""

    step_job_options = {"queue_name": QUEUE}

    @step
    def step_1(self) -> None:
        _work(self, 1)

    @step(wait=timedelta(seconds=TIMER_S))
    def step_2(self) -> None:
        _work(self, 2, _due(self))

    @step
    def step_3(self) -> None:
        _work(self, 3)

    @step
    def step_4(self) -> None:
        _work(self, 4)

    @step
    def step_5(self) -> None:
        _work(self, 5)


class BenchWorkflowNoHero(geneva.Workflow):
    """The same five steps without a hero (no hero check, no one-ongoing index)."""

    may_proceed_without_hero = True
    allow_multiple = True
    step_job_options = {"queue_name": QUEUE}

    @step
    def step_1(self) -> None:
        _work_without_hero(self, 1)

    @step(wait=timedelta(seconds=TIMER_S))
    def step_2(self) -> None:
        _work_without_hero(self, 2, _due(self))

    @step
    def step_3(self) -> None:
        _work_without_hero(self, 3)

    @step
    def step_4(self) -> None:
        _work_without_hero(self, 4)

    @step
    def step_5(self) -> None:
        _work_without_hero(self, 5)


def hero_references(ids: list[str]) -> dict[str, BenchCounter]:
    """A reference to each counter row, as a request that loaded it would hold: a
    detached instance with its primary key (no query; ``create()`` needs only that)."""
    heroes = {}
    for wf in ids:
        counter = BenchCounter(wf_id=wf)
        make_transient_to_detached(counter)
        heroes[wf] = counter
    return heroes


def starter(heroes: bool, ids: list[str]) -> Any:
    """The harness's "start one workflow": ``create()`` and a commit (call it inside an
    app context)."""
    if not heroes:

        def start_without_hero(wf: str) -> None:
            BenchWorkflowNoHero.create(data={"wf": wf})
            db.session.commit()

        return start_without_hero
    references = hero_references(ids)

    def start(wf: str) -> None:
        BenchWorkflow.create(hero=references[wf], data={"wf": wf})
        db.session.commit()

    return start


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
    heroes = ctx.get("heroes", "1") not in ("0", "false", "no")
    hero_update = ctx.get("hero_update", "orm")
    if hero_update not in ("orm", "sql"):
        raise ValueError(f"hero_update must be orm or sql, got {hero_update!r}")
    ids = common.workflow_ids(ctx.system, load, ctx.round_no)
    # Only the workers schedule step 2, so only they need the timer's wait.

    rc = common.redis_client()
    rc.flushdb()
    common.setup_bench_tables(ids)
    with app.app_context():
        # The signals table (SPEC section 11) refers to the workflows: it goes first.
        geneva.WorkflowSignal.__table__.drop(db.engine, checkfirst=True)
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
        "BENCH_HERO_UPDATE": hero_update,
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
            created = common.drive_starts(load, ids, starter(heroes, ids))
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
            "heroes": heroes,
            "step body": (
                f"hero update through db.session ({hero_update})"
                if heroes
                else "text UPDATE through db.session"
            ),
        },
    )


if __name__ == "__main__":
    common.runner_main(SYSTEM, run)
