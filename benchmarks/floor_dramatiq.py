"""The floor: a plain Dramatiq actor chain on Redis, no workflow engine at all.

``step(wf_id, i)`` runs the UPDATE in one psycopg transaction, commits, then sends
``step(wf_id, i + 1)`` until step 5.  Nothing is durable beyond what Dramatiq's
Redis broker gives, so this is the lower bound on the overhead a Dramatiq-based
workflow engine (flask_geneva) can have on this machine.

For the timer load, step 1 sends step 2 with ``delay=2000`` ms: Dramatiq's own
delayed message (it goes to the ``.DQ`` delay queue, a worker's consumer holds it in
memory until its eta, then re-enqueues it on the real queue).  Its lateness is
reported.

Workers: real ``dramatiq`` CLI processes (``--processes 2 --threads 8`` by default)
started by the runner and stopped (SIGTERM, then SIGKILL of the group) in a finally.

Settings (``run.py --set KEY=VALUE`` or env ``BENCH_<KEY>``):
  dramatiq_worker_timeout  ms, default 100. Exported to the workers as
                           ``dramatiq_worker_timeout``; it is also the Redis consumer's
                           *maximum idle backoff* (an idle consumer sleeps
                           5 ms * 2**misses * U(1,2), capped to 50-100 % of it, between
                           fetches).  Dramatiq's own default is 1000.
  processes / threads      default 2 / 8.

Run one round by hand (normally run.py does this)::

    .venv-bench/bin/python benchmarks/floor_dramatiq.py run --load light --json-out /tmp/r.json
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

SYSTEM = "floor"
LABEL = "plain Dramatiq actor chain on Redis + psycopg (no engine)"
ORDER = 0
VENV = ".venv-bench"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import dramatiq  # noqa: E402
import psycopg  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

QUEUE = "bench_floor"
UPDATE_SQL = "UPDATE bench_counter SET n = n + 1, updated_at = clock_timestamp() WHERE wf_id = %s"


class _ReadyFile(dramatiq.Middleware):
    """Touches $BENCH_READY_DIR/ready-<pid> once a worker process has booted."""

    def after_worker_boot(self, broker, worker):
        d = os.environ.get("BENCH_READY_DIR")
        if d:
            Path(d, f"ready-{os.getpid()}").touch()


broker = RedisBroker(url=common.REDIS_URL)
broker.add_middleware(_ReadyFile())
dramatiq.set_broker(broker)

_local = threading.local()


def _db() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(common.pg_conninfo(), autocommit=True)
    return conn


def _redis():
    client = getattr(_local, "redis", None)
    if client is None:
        client = _local.redis = common.redis_client()
    return client


@dramatiq.actor(actor_name="bench_floor_step", queue_name=QUEUE, max_retries=0)
def step(wf_id: str, i: int, timer_s: float = 0.0, due: float | None = None) -> None:
    started = time.time()
    conn = _db()
    with conn.transaction():
        conn.execute(UPDATE_SQL, (wf_id,))
    committed = time.time()
    if i < common.STEPS:
        if timer_s and i + 1 == 2:
            next_due = time.time() + timer_s
            step.send_with_options(
                args=(wf_id, i + 1, timer_s, next_due), delay=int(timer_s * 1000)
            )
        else:
            step.send(wf_id, i + 1, timer_s)
    key = os.environ.get("BENCH_STEPLOG_KEY")
    if key:
        common.push_step_records(
            _redis(), key, [common.step_record(wf_id, i, started, committed, due)]
        )


def run(load: common.Load, ctx: common.RunContext) -> common.RunOutput:
    worker_timeout = int(ctx.get("dramatiq_worker_timeout", "100"))
    processes = int(ctx.get("processes", "2"))
    threads = int(ctx.get("threads", "8"))
    ids = common.workflow_ids(ctx.system, load, ctx.round_no)

    rc = common.redis_client()
    rc.flushdb()  # the bench's own Redis DB: no stale messages from an earlier run
    common.setup_bench_tables(ids)

    ready_dir = ctx.workdir / "ready"
    ready_dir.mkdir()
    env = {
        "dramatiq_worker_timeout": str(worker_timeout),
        "BENCH_READY_DIR": str(ready_dir),
        "BENCH_STEPLOG_KEY": ctx.steplog_key,
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "dramatiq", "floor_dramatiq",
        "--path", str(common.BENCH_DIR),
        "--processes", str(processes), "--threads", str(threads),
        "--queues", QUEUE,
        "--worker-shutdown-timeout", "5000",
    ]  # fmt: skip
    proc = common.start_process(cmd, env=env, log_path=ctx.workdir / "dramatiq.log")
    try:
        common.wait_for_dramatiq_boot(ready_dir, proc, processes, ctx.workdir)

        created = common.drive_starts(load, ids, lambda wf: step.send(wf, 1, load.timer_s))
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
            "dramatiq": dramatiq.__version__,
            "dramatiq_worker_timeout_ms": worker_timeout,
            "processes": processes,
            "threads": threads,
            "prefetch": min(threads * 2, 65535),
        },
    )


if __name__ == "__main__":
    common.runner_main(SYSTEM, run)
