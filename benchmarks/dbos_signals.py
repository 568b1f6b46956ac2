"""DBOS's messages, for ``signals_bench.py``: ``send`` -> ``recv`` latency, and how late
``recv`` with a timeout returns. Runs with ``.venv-bench`` (DBOS 3.x, see README.md).

Not a benchmark *system* (no ``SYSTEM``): ``signals_bench.py`` runs it::

    .venv-bench/bin/python benchmarks/dbos_signals.py run --signals 200 --timeouts 100 \\
        --json-out /tmp/dbos.json

One launched DBOS worker process (its own system database, ``geneva_bench_dbos_sig_sys``,
dropped and migrated before the run) starts ``--signals`` workflows, each blocked in
``DBOS.recv("go")`` (DBOS wakes a ``recv`` from its LISTEN/NOTIFY listener thread). The
harness sends one message at a time with ``DBOSClient.send`` and waits for the workflow's
record (pushed to Redis right after ``recv`` returned): latency = ``recv`` returned -
``send`` returned (the send's transaction has committed when it returns). Then the
worker starts ``--timeouts`` workflows 50 ms apart, each in ``DBOS.recv("never",
timeout_seconds=2)``: lateness = ``recv`` returned - (the moment it was called + 2 s);
DBOS records its deadline inside ``recv``, a round trip after that call, so this
overstates DBOS's lateness by about one round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

APP_NAME = "geneva_bench_signals"
SYS_DB = os.environ.get("BENCH_DBOS_SIGNALS_SYS_DB", f"{common.BENCH_DB}_dbos_sig_sys")
TIMEOUT_S = 2.0
KEY = "bench:dbos-signals"


def _sys_url() -> str:
    return common.sqlalchemy_url(SYS_DB)


def worker_main(signals: int, timeouts: int, ready_file: str) -> None:
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    DBOS(
        config=DBOSConfig(
            name=APP_NAME,
            system_database_url=_sys_url(),
            executor_id="sig-w0",
            log_level="WARNING",
            run_migrations=False,
        )
    )
    redis = common.redis_client()

    @DBOS.workflow(name="signal_waiter")
    def signal_waiter(wf: str) -> None:
        redis.rpush(f"{KEY}:waiting", wf)
        DBOS.recv("go", timeout_seconds=3600)
        received = time.time()
        redis.rpush(f"{KEY}:signal", json.dumps({"wf": wf, "received": received}))

    @DBOS.workflow(name="timeout_waiter")
    def timeout_waiter(wf: str) -> None:
        called = time.time()
        message = DBOS.recv("never", timeout_seconds=TIMEOUT_S)
        returned = time.time()
        redis.rpush(
            f"{KEY}:timeout",
            json.dumps({"wf": wf, "late": returned - (called + TIMEOUT_S), "msg": message}),
        )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    DBOS.launch()
    for i in range(signals):
        with SetWorkflowID(f"sig-{i}"):
            DBOS.start_workflow(signal_waiter, f"sig-{i}")
    Path(ready_file).touch()
    while not stop.is_set():
        if redis.blpop(f"{KEY}:start-timeouts", timeout=1) is not None:
            for i in range(timeouts):
                with SetWorkflowID(f"timeout-{i}"):
                    DBOS.start_workflow(timeout_waiter, f"timeout-{i}")
                time.sleep(0.05)
            break
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)


def _summary(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50": common.percentile(ms, 50),
        "p90": common.percentile(ms, 90),
        "p99": common.percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dbos as dbos_pkg
    from dbos import DBOS, DBOSClient

    rc = common.redis_client()
    for suffix in ("waiting", "signal", "timeout", "start-timeouts"):
        rc.delete(f"{KEY}:{suffix}")
    common.drop_database(SYS_DB)
    common.ensure_database(SYS_DB)
    DBOS.migrate(_sys_url())
    workdir = Path(args.workdir or "/tmp")
    ready = workdir / f"dbos-signals-ready-{os.getpid()}"
    ready.unlink(missing_ok=True)
    worker = common.start_process(
        [sys.executable, os.path.abspath(__file__), "worker", str(args.signals),
         str(args.timeouts), str(ready)],
        env={"PYTHONUNBUFFERED": "1"}, log_path=workdir / "dbos-signals-worker.log",
    )  # fmt: skip
    client = DBOSClient(system_database_url=_sys_url(), application_name=APP_NAME)
    try:
        common.wait_ready_files([ready], [worker], timeout_s=90)
        deadline = time.monotonic() + 120
        while rc.llen(f"{KEY}:waiting") < args.signals:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise TimeoutError("the DBOS workflows did not all start")
            time.sleep(0.05)
        time.sleep(common.SETTLE_S)  # every workflow is in recv() by now
        latencies = []
        for i in range(args.signals):
            client.send(f"sig-{i}", {"n": i}, "go")
            sent = time.time()
            item = common.blpop(rc, f"{KEY}:signal", 60)
            if item is None:
                raise TimeoutError(f"recv() of sig-{i} did not return in 60 s")
            record = json.loads(item[1])
            assert record["wf"] == f"sig-{i}", record
            latencies.append(record["received"] - sent)
            time.sleep(0.02)
        time.sleep(common.SETTLE_S)
        rc.rpush(f"{KEY}:start-timeouts", "go")
        late = []
        for _ in range(args.timeouts):
            item = common.blpop(rc, f"{KEY}:timeout", 120)
            if item is None:
                raise TimeoutError("a DBOS recv() with a timeout did not return")
            late.append(json.loads(item[1])["late"])
    finally:
        common.stop_process(worker)
        client.destroy()
    return {
        "signals_ms": _summary(latencies),
        "signals_raw_ms": [round(v * 1000, 2) for v in latencies],
        "timeouts_ms": _summary(late),
        "settings": {
            "dbos": _version("dbos") or getattr(dbos_pkg, "__version__", None),
            "worker processes": 1,
            "system_database": SYS_DB,
        },
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        worker_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--signals", type=int, default=200)
    p.add_argument("--timeouts", type=int, default=100)
    p.add_argument("--workdir", default="")
    p.add_argument("--json-out", required=True)
    args = parser.parse_args()
    Path(args.json_out).write_text(json.dumps(run(args)))


if __name__ == "__main__":
    main()
