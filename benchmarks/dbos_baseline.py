"""DBOS Transact baseline: the same 5 steps as a DBOS workflow on a DBOS queue.

Written against dbos 3.x (checked with 3.4.0), whose API differs from the 1.x/2.x
docs one finds around:

* DBOS 3.0 removed the "application database" and ``@DBOS.transaction()``.  A
  transactional step is now a *datasource transaction*:
  ``ds = SQLAlchemyDatasource.create(url)`` and ``@ds.transaction()``; the
  function's SQL runs in ``ds.sql_session()`` and DBOS writes the step checkpoint
  (``dbos.datasource_outputs``) in the *same* transaction, then records the step in
  the system database (``operation_outputs``) as it does for any step.
* Queues cannot be constructed any more; they are rows in the system database
  (``DBOS.register_queue`` / ``DBOSClient.register_queue``) which every launched
  process polls (``polling_interval_sec``, default 1 s) unless it restricted itself
  with ``DBOS.listen_queues``.  ``worker_concurrency`` caps how many of the queue's
  workflows one process runs at once.
* ``DBOS.sleep(s)`` is the durable sleep: it checkpoints the wake-up time, then
  ``time.sleep``s in the workflow's thread (the workflow keeps its executor slot).

Layout used here
----------------
* app tables (``bench_counter``, ``bench_step_log``) and the datasource checkpoint
  table (schema ``dbos``) live in ``geneva_bench``;
* DBOS's system database is the sibling database ``geneva_bench_dbos_sys``, dropped
  and re-created (migrated) by the runner before every round, so each round starts
  from an empty queue.
* The runner (the "driver") enqueues with ``DBOSClient`` (it runs no workflow);
  2 worker processes (``python dbos_baseline.py worker ...``), each a launched DBOS
  app with its own ``executor_id`` (two processes sharing the default ``local``
  would recover each other's workflows), dequeue from queue ``bench``.
* Steps use READ COMMITTED (DBOS's datasource default is SERIALIZABLE) to run the
  very same transaction as the floor.
* Commit time of a step = SQLAlchemy ``after_commit`` on the datasource's
  sessionmaker (i.e. right after COMMIT returned, before DBOS records the step in the
  system database).  The workflow pushes its 5 records to Redis after its last step.

Settings (``run.py --set KEY=VALUE`` or env ``BENCH_<KEY>``):
  dbos_polling_interval     queue polling interval, s (default 0.1; DBOS's default is 1.0)
  dbos_worker_concurrency   per-process cap on running workflows (default 8, like the
                            floor's 8 threads per process; 0 = unlimited)
  processes                 worker processes (default 2)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

SYSTEM = "dbos"
LABEL = "DBOS Transact: workflow of 5 datasource transactions on a DBOS queue"
ORDER = 10
VENV = ".venv-bench"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

APP_NAME = "geneva_bench"
APP_VERSION = "bench-1"
QUEUE = "bench"
WORKFLOW_NAME = "bench_workflow"
SYS_DB = os.environ.get("BENCH_DBOS_SYS_DB", f"{common.BENCH_DB}_dbos_sys")
UPDATE_SQL = "UPDATE bench_counter SET n = n + 1, updated_at = clock_timestamp() WHERE wf_id = :wf"


def _sys_url() -> str:
    return common.sqlalchemy_url(SYS_DB)


# --------------------------------------------------------------------------- worker


def worker_main(executor_id: str, ready_file: str) -> None:
    import sqlalchemy as sa
    from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource
    from sqlalchemy import event
    from sqlalchemy.orm import sessionmaker

    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": _sys_url(),
        "application_version": APP_VERSION,
        "executor_id": executor_id,
        "log_level": "WARNING",
        "run_migrations": False,  # the runner migrated before starting us
    }
    DBOS(config=config)

    commits: dict[tuple[str, int], tuple[float, float]] = {}
    sm = sessionmaker(expire_on_commit=False)

    @event.listens_for(sm, "after_commit")
    def _after_commit(session) -> None:
        info = session.info.pop("bench", None)
        if info is not None:
            wf, i, started = info
            commits[(wf, i)] = (started, time.time())

    ds = SQLAlchemyDatasource.create(
        common.sqlalchemy_url(common.BENCH_DB),
        engine_kwargs={"pool_size": 10, "max_overflow": 10},
        sessionmaker=sm,
        run_migrations=False,
    )
    redis = common.redis_client()
    steplog_key = os.environ["BENCH_STEPLOG_KEY"]
    update = sa.text(UPDATE_SQL)

    @ds.transaction(name="bench_step", isolation_level="READ COMMITTED")
    def bench_step(wf_id: str, i: int) -> None:
        started = time.time()
        session = ds.sql_session()
        session.execute(update, {"wf": wf_id})
        session.info["bench"] = (wf_id, i, started)

    @DBOS.workflow(name=WORKFLOW_NAME)
    def bench_workflow(wf_id: str, timer_s: float) -> None:
        records = []
        for i in range(1, common.STEPS + 1):
            due = None
            if timer_s and i == 2:
                due = time.time() + timer_s
                DBOS.sleep(timer_s)
            bench_step(wf_id, i)
            t = commits.pop((wf_id, i), None)
            if t is not None:  # None only if the step was replayed from its checkpoint
                records.append(common.step_record(wf_id, i, t[0], t[1], due))
        common.push_step_records(redis, steplog_key, records)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    DBOS.launch()
    # The queue thread re-lists queues once a second; give it one round to start the
    # worker thread of queue "bench" before saying we are ready.
    time.sleep(1.2)
    Path(ready_file).touch()
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)


# --------------------------------------------------------------------------- runner


def _prepare_databases() -> None:
    """Fresh system DB, fresh datasource checkpoint table. Outside the clock."""
    import sqlalchemy as sa
    from dbos import DBOS, SQLAlchemyDatasource

    common.drop_database(SYS_DB)
    common.ensure_database(SYS_DB)
    DBOS.migrate(_sys_url())
    eng = sa.create_engine(common.sqlalchemy_url(common.BENCH_DB))
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS dbos CASCADE"))
    finally:
        eng.dispose()
    SQLAlchemyDatasource.migrate(common.sqlalchemy_url(common.BENCH_DB))


def run(load: common.Load, ctx: common.RunContext) -> common.RunOutput:
    import dbos as dbos_pkg
    from dbos import DBOSClient

    polling = float(ctx.get("dbos_polling_interval", "0.1"))
    wconc = int(ctx.get("dbos_worker_concurrency", "8"))
    processes = int(ctx.get("processes", "2"))
    ids = common.workflow_ids(ctx.system, load, ctx.round_no)

    rc = common.redis_client()
    rc.delete(ctx.steplog_key)
    common.setup_bench_tables(ids)
    _prepare_databases()

    client = DBOSClient(system_database_url=_sys_url(), application_name=APP_NAME)
    procs = []
    try:
        client.register_queue(
            QUEUE,
            worker_concurrency=wconc or None,
            polling_interval_sec=polling,
            application_name=APP_NAME,
        )
        ready = []
        env = {"BENCH_STEPLOG_KEY": ctx.steplog_key, "PYTHONUNBUFFERED": "1"}
        for k in range(processes):
            rf = ctx.workdir / f"ready-{k}"
            ready.append(rf)
            cmd = [sys.executable, os.path.abspath(__file__), "worker", f"bench-w{k}", str(rf)]
            procs.append(
                common.start_process(cmd, env=env, log_path=ctx.workdir / f"worker-{k}.log")
            )
        common.wait_ready_files(ready, procs, timeout_s=90)
        time.sleep(common.SETTLE_S)

        def start(wf: str) -> None:
            client.enqueue(
                {
                    "workflow_name": WORKFLOW_NAME,
                    "queue_name": QUEUE,
                    "workflow_id": wf,
                    "app_version": APP_VERSION,
                },
                wf,
                load.timer_s,
            )

        created = common.drive_starts(load, ids, start)
        common.wait_for_records(
            rc, ctx.steplog_key, load.steps_expected, load.timeout_s,
            alive=lambda: all(p.poll() is None for p in procs),
        )  # fmt: skip
        counters = common.verify_counters(ids)
        records = common.drain_step_records(rc, ctx.steplog_key)
    finally:
        for p in procs:
            common.stop_process(p)
        client.destroy()
    return common.RunOutput(
        created=created,
        records=records,
        counters=counters,
        settings={
            "dbos": getattr(dbos_pkg, "__version__", None) or _dist_version("dbos"),
            "dbos_polling_interval_s": polling,
            "dbos_worker_concurrency": wconc or None,
            "processes": processes,
            "system_database": SYS_DB,
        },
    )


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        common.runner_main(SYSTEM, run)
