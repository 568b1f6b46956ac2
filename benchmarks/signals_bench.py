"""External signals (SPEC section 11, issue 17): how soon a signalled step starts, and
how late a timeout fires; with DBOS's ``send``/``recv`` in the same run.

Not a benchmark *system* (it has no ``SYSTEM``, so ``run.py`` ignores it): run it by
hand with the project's virtualenv; it runs the DBOS part (``dbos_signals.py``) with
``.venv-bench`` (see README.md for creating it)::

    .venv/bin/python benchmarks/signals_bench.py --output benchmarks/RESULTS-signals-DATE.txt
    .venv/bin/python benchmarks/signals_bench.py --signals 50 --timeouts 20 --heavy 500

Like ``run.py`` it takes the benchmark lock, starts a private ``redis-server`` and uses
the ``geneva_bench`` database, with real ``dramatiq`` workers (``signals_bench:broker``,
2 processes x 8 threads, ``GENEVA_WORKER_IDLE_TIMEOUT_MS`` 100 (the default), the relay in
each).

What it measures, in milliseconds:

* **signal to step start**: ``SignalWaiter`` workflows wait (``wait_for="go"``, no
  timeout). The harness sends one signal (``geneva.send_signal`` + ``commit()``), notes
  the time in an ``after_commit`` listener that runs before geneva's (the COMMIT has
  returned; the step's message is not published yet), and waits for the step's record;
  the step body notes ``time.time()`` first thing. One signal at a time: the *light*
  figures. The *heavy* figures: the same, one signal at a time, while the heavy
  workload (2,000 five-step hero workflows created back to back, ``geneva_bench``'s)
  runs, started by a separate process.
  Also shown: the time ``commit()`` took to return (the fast path's publish included),
  and where the time goes for each signal: commit -> the message built (Dramatiq's
  ``message_timestamp``, 1 ms resolution) -> a worker thread took it
  (``before_process_message``) -> the claim's ``now`` (``started_at``: the locks and the
  signal lookup done) -> the body.
* **timeout lateness**: ``TimeoutWaiter`` workflows wait for a signal nobody sends, with
  a 2 s timeout (``on_timeout="run"``); created 50 ms apart; lateness = body start -
  deadline (``scheduled_for``). At light load, and during the heavy run.
* **DBOS**: a workflow blocked in ``DBOS.recv("go")``; ``DBOSClient.send`` from the
  harness; latency = ``recv`` returning - ``send`` returning. And ``recv`` with a 2 s
  timeout: lateness = ``recv`` returning - (its call + 2 s). See ``dbos_signals.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common
import dramatiq
import sqlalchemy as sa
from geneva_bench import QUEUE, app, broker, db, geneva, starter
from sqlalchemy import event

from flask_geneva import step

__all__ = ["broker"]

TIMEOUT_S = 2.0
SIGNAL_KEY = os.environ.get("BENCH_SIGNAL_KEY", "bench:signals")
_local = threading.local()


class _FetchTime(dramatiq.Middleware):
    """Notes when a worker thread takes a message, and when the message was built; and
    starts the thread's trace of SQL statements (what the claim spends its time on)."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        _local.fetched = time.time()
        _local.built = message.message_timestamp / 1000
        _local.trace = []


broker.add_middleware(_FetchTime())


def _before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    _local.statement_started = time.time()


def _after_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    trace = getattr(_local, "trace", None)
    if trace is not None:
        label = " ".join(statement.split()[:6])[:70]
        trace.append((label, _local.statement_started, time.time()))


def _before_commit(conn: Any) -> None:
    """A COMMIT starts (its end shows as the start of what comes next)."""
    trace = getattr(_local, "trace", None)
    if trace is not None:
        now = time.time()
        trace.append(("COMMIT (starts)", now, now))


if os.environ.get("BENCH_SIGNAL_TRACE") == "1":
    event.listen(sa.engine.Engine, "before_cursor_execute", _before_execute)
    event.listen(sa.engine.Engine, "after_cursor_execute", _after_execute)
    event.listen(sa.engine.Engine, "commit", _before_commit)


def _note(workflow: Any, kind: str) -> None:
    """The step body: note its start, and where the time went before it."""
    started = time.time()
    execution = workflow.current_execution
    record = {
        "kind": kind,
        "wf": workflow.data["wf"],
        "started": started,
        "claimed": execution.started_at.timestamp(),
        "deadline": None
        if execution.scheduled_for is None
        else execution.scheduled_for.timestamp(),
        "fetched": getattr(_local, "fetched", None),
        "built": getattr(_local, "built", None),
        "signal": None if workflow.received_signal is None else workflow.received_signal.id,
    }
    trace = getattr(_local, "trace", None)
    if trace:
        fetched = record["fetched"] or started
        record["trace"] = [
            (label, round((begin - fetched) * 1000, 2), round((end - begin) * 1000, 2))
            for label, begin, end in trace
        ]
        _local.trace = None
    client = getattr(_local, "redis", None)
    if client is None:
        client = _local.redis = common.redis_client()
    client.rpush(f"{SIGNAL_KEY}:{kind}", json.dumps(record))


class SignalWaiter(geneva.Workflow):
    """One step that waits for ``go``, without a timeout."""

    may_proceed_without_hero = True
    allow_multiple = True
    step_job_options = {"queue_name": QUEUE}

    @step(wait_for="go")
    def take(self) -> None:
        _note(self, "signal")


class TimeoutWaiter(geneva.Workflow):
    """One step that waits for a signal nobody sends; it runs at its timeout."""

    may_proceed_without_hero = True
    allow_multiple = True
    step_job_options = {"queue_name": QUEUE}

    @step(wait_for="never", timeout=timedelta(seconds=TIMEOUT_S), on_timeout="run")
    def take(self) -> None:
        _note(self, "timeout")


# --------------------------------------------------------------------------- the harness

_commit_times: list[float] = []


def _note_commit(session: Any) -> None:
    _commit_times.append(time.time())


def _reset_tables() -> None:
    with app.app_context():
        for model in (geneva.WorkflowSignal, geneva.OutboxMessage, geneva.StepExecution,
                      geneva.Workflow):  # fmt: skip
            model.__table__.drop(db.engine, checkfirst=True)
        db.create_all()


def _waiting(ids: list[Any]) -> int:
    db.session.rollback()
    executions = geneva.StepExecution
    return int(
        db.session.scalar(
            sa.select(sa.func.count()).where(
                executions.workflow_id.in_(ids),
                executions.state == "scheduled",
                executions.waiting_for.is_not(None),
            )
        )
    )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _create_waiters(prefix: str, count: int) -> list[Any]:
    workflows = [SignalWaiter.create(data={"wf": f"{prefix}-{i}"}) for i in range(count)]
    db.session.commit()
    ids = [wf.id for wf in workflows]
    _wait_for(lambda: _waiting(ids) == count, 60, f"{count} workflows to wait")
    return ids


def _signal_one_at_a_time(
    ids: list[Any], rc: Any, gap_s: float, keep_going: Any = None
) -> list[dict[str, Any]]:
    """Signal each workflow in turn; wait for its step to start before the next."""
    rows = []
    for number, workflow_id in enumerate(ids):
        if keep_going is not None and not keep_going():
            break
        _commit_times.clear()
        geneva.send_signal(workflow_id, "go", {"n": number})
        db.session.commit()
        returned = time.time()
        item = common.blpop(rc, f"{SIGNAL_KEY}:signal", 60)
        if item is None:
            raise TimeoutError(f"the step of workflow {workflow_id} did not start in 60 s")
        record = json.loads(item[1])
        [committed] = _commit_times
        record.update(committed=committed, returned=returned)
        rows.append(record)
        time.sleep(gap_s)
    return rows


def _signal_paced(
    ids: list[Any], rc: Any, interval_s: float, keep_going: Any
) -> list[dict[str, Any]]:
    """Signal the workflows ``interval_s`` apart, without waiting for their steps, while
    ``keep_going()``; the records of the steps of those signalled, once all started."""
    committed: dict[str, tuple[float, float]] = {}
    start = time.monotonic()
    for number, workflow_id in enumerate(ids):
        if not keep_going():
            break
        delay = start + number * interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _commit_times.clear()
        geneva.send_signal(workflow_id, "go", {"n": number})
        db.session.commit()
        returned = time.time()
        [commit_time] = _commit_times
        committed[f"heavy-{number}"] = (commit_time, returned)
    rows = []
    for _ in committed:
        item = common.blpop(rc, f"{SIGNAL_KEY}:signal", 600)
        if item is None:
            raise TimeoutError("a signalled step did not start in 600 s")
        record = json.loads(item[1])
        record["committed"], record["returned"] = committed[record["wf"]]
        rows.append(record)
    return rows


def _create_timeouts(prefix: str, count: int, rc: Any) -> list[dict[str, Any]]:
    """Create ``count`` timeout waiters 50 ms apart; their records once all have run."""
    with app.app_context():
        start = time.monotonic()
        for i in range(count):
            delay = start + i * 0.05 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            TimeoutWaiter.create(data={"wf": f"{prefix}-{i}"})
            db.session.commit()
    return [json.loads(common.blpop(rc, f"{SIGNAL_KEY}:timeout", 120)[1]) for _ in range(count)]


def _summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": common.percentile(ms, 50),
        "p90": common.percentile(ms, 90),
        "p99": common.percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def _signal_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "signal_to_start_ms": _summary([r["started"] - r["committed"] for r in rows]),
        "returned_to_start_ms": _summary([r["started"] - r["returned"] for r in rows]),
        "breakdown_p50_ms": {
            "commit_to_message_built": _p50([r["built"] - r["committed"] for r in rows]),
            "commit_returned(publish)": _p50([r["returned"] - r["committed"] for r in rows]),
            "message_built_to_worker_took_it": _p50([r["fetched"] - r["built"] for r in rows]),
            "worker_took_it_to_claim_now": _p50([r["claimed"] - r["fetched"] for r in rows]),
            "claim_now_to_body": _p50([r["started"] - r["claimed"] for r in rows]),
        },
        "breakdown_p99_ms": {
            "message_built_to_worker_took_it": _p99([r["fetched"] - r["built"] for r in rows]),
            "worker_took_it_to_claim_now": _p99([r["claimed"] - r["fetched"] for r in rows]),
            "claim_now_to_body": _p99([r["started"] - r["claimed"] for r in rows]),
        },
    }


def _timeout_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "lateness_ms": _summary([r["started"] - r["deadline"] for r in rows]),
        "breakdown_p50_ms": {
            "deadline_to_worker_took_it": _p50([r["fetched"] - r["deadline"] for r in rows]),
            "worker_took_it_to_claim_now": _p50([r["claimed"] - r["fetched"] for r in rows]),
            "claim_now_to_body": _p50([r["started"] - r["claimed"] for r in rows]),
        },
    }


def _p50(values: list[float]) -> float | None:
    value = common.percentile([v * 1000 for v in values], 50)
    return None if value is None else round(value, 2)


def _p99(values: list[float]) -> float | None:
    value = common.percentile([v * 1000 for v in values], 99)
    return None if value is None else round(value, 2)


def run_geneva(args: argparse.Namespace) -> dict[str, Any]:
    """The geneva part, in this process (BENCH_REDIS_URL is the private Redis)."""
    rc = common.redis_client()
    rc.flushdb()
    heavy = common.LOADS["heavy"]
    heavy_ids = [f"sig-heavy-{i:05d}" for i in range(args.heavy)]
    common.setup_bench_tables(heavy_ids)
    _reset_tables()
    with app.app_context():  # before geneva's listener, which publishes
        event.listen(type(db.session()), "after_commit", _note_commit, insert=True)
    workdir = Path(args.workdir)
    ready_dir = workdir / "ready"
    ready_dir.mkdir(parents=True, exist_ok=True)
    steplog_key = "bench:signals:heavy-steplog"
    env = {
        "BENCH_READY_DIR": str(ready_dir),
        "BENCH_STEPLOG_KEY": steplog_key,
        "BENCH_SIGNAL_KEY": SIGNAL_KEY,
        "BENCH_IDLE_TIMEOUT_MS": str(args.idle_timeout_ms),
        "BENCH_SIGNAL_TRACE": os.environ.get("BENCH_SIGNAL_TRACE", "0"),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "dramatiq", "signals_bench:broker",
        "--path", str(common.BENCH_DIR), "--processes", "2", "--threads", "8",
        "--queues", QUEUE, "--worker-shutdown-timeout", "5000",
    ]  # fmt: skip
    proc = common.start_process(cmd, env=env, log_path=workdir / "dramatiq.log")
    result: dict[str, Any] = {}
    try:
        common.wait_for_dramatiq_boot(ready_dir, proc, 2, workdir)
        with app.app_context():
            ids = _create_waiters("light", args.signals)
            time.sleep(common.SETTLE_S)  # the workers idle again, as in run.py's rounds
            rows = _signal_one_at_a_time(ids, rc, gap_s=0.02)
        result["light_signals"] = _signal_summary(rows)
        result["light_traces"] = [r.get("trace") for r in rows]
        result["light_signals_raw_ms"] = [
            round((r["started"] - r["committed"]) * 1000, 2) for r in rows
        ]
        time.sleep(common.SETTLE_S)
        timeouts = _create_timeouts("light-timeout", args.timeouts, rc)
        result["light_timeouts"] = _timeout_summary(timeouts)

        if not args.heavy:
            return result
        # Under the heavy load: another process creates the heavy workflows and the
        # timeout waiters; this one sends a signal every 200 ms until the load is done.
        with app.app_context():
            ids = _create_waiters("heavy", args.signals)
        time.sleep(common.SETTLE_S)
        loader = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "heavy-load", "--heavy",
             str(args.heavy), "--timeouts", str(args.timeouts)],
            env={**os.environ, **env}, cwd=str(common.BENCH_DIR),
        )  # fmt: skip
        try:
            _wait_for(lambda: rc.get("bench:signals:heavy-started"), 60, "the heavy load")
            expected = heavy.steps_expected * args.heavy // heavy.n

            def heavy_running() -> bool:
                return int(rc.llen(steplog_key)) < expected

            with app.app_context():
                rows = _signal_paced(ids, rc, 0.2, keep_going=heavy_running)
            heavy_steps_left = expected - int(rc.llen(steplog_key))
            common.wait_for_records(rc, steplog_key, expected, heavy.timeout_s,
                                    alive=lambda: proc.poll() is None)  # fmt: skip
            loader.wait(timeout=300)
        finally:
            if loader.poll() is None:
                loader.kill()
        timeout_key = f"{SIGNAL_KEY}:timeout"
        _wait_for(lambda: rc.llen(timeout_key) >= args.timeouts, 120, "the heavy timeouts")
        timeouts = [json.loads(x) for x in rc.lrange(timeout_key, 0, -1)]
        result["heavy_signals"] = _signal_summary(rows)
        result["heavy_signals_raw_ms"] = [
            round((r["started"] - r["committed"]) * 1000, 2) for r in rows
        ]
        result["heavy_timeouts"] = _timeout_summary(timeouts)
        result["heavy"] = {
            "workflows": args.heavy,
            "signals_sent_while_it_ran (every 200 ms)": len(rows),
            "steps_left_after_the_last_signal": heavy_steps_left,
            "counters": common.verify_counters(heavy_ids),
        }
    finally:
        common.stop_process(proc)
    return result


def heavy_load(args: argparse.Namespace) -> None:
    """The heavy workload's creations, and the timeout waiters 50 ms apart alongside."""
    rc = common.redis_client()
    heavy_ids = [f"sig-heavy-{i:05d}" for i in range(args.heavy)]
    load = common.Load("heavy", n=args.heavy, interval_s=0.0, timer_s=0.0, timeout_s=420)
    rc.set("bench:signals:heavy-started", "1")

    def timeouts() -> None:
        with app.app_context():
            for i in range(args.timeouts):
                TimeoutWaiter.create(data={"wf": f"heavy-timeout-{i}"})
                db.session.commit()
                time.sleep(0.05)

    thread = threading.Thread(target=timeouts)
    thread.start()
    with app.app_context():
        common.drive_starts(load, heavy_ids, starter(True, heavy_ids))
    thread.join()


def run_dbos(args: argparse.Namespace) -> dict[str, Any]:
    python = common.REPO_ROOT / ".venv-bench" / "bin" / "python"
    out = Path(args.workdir) / "dbos.json"
    subprocess.run(
        [str(python), str(common.BENCH_DIR / "dbos_signals.py"), "run", "--signals",
         str(args.signals), "--timeouts", str(args.timeouts), "--workdir", args.workdir,
         "--json-out", str(out)],
        check=True, cwd=str(common.BENCH_DIR), timeout=900,
    )  # fmt: skip
    return json.loads(out.read_text())


def _row(label: str, summary: dict[str, Any] | None) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:8.2f}"

    if summary is None:
        return f"  {label:<46} (not run)"
    return (
        f"  {label:<46} n={summary['n']:<4} p50 {f(summary['p50'])}  "
        f"p90 {f(summary['p90'])}  p99 {f(summary['p99'])}  max {f(summary['max'])}"
    )


def _get(part: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if part is None:
            return None
        part = part.get(key)
    return part


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    g, d = result["geneva"], result.get("dbos")
    lines = [
        f"signals_bench  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  commit {result['commit']}",
        f"signals {args.signals} per load, timeouts {args.timeouts} per load (T = "
        f"{TIMEOUT_S:g} s), heavy {args.heavy} workflows, GENEVA_WORKER_IDLE_TIMEOUT_MS "
        f"{args.idle_timeout_ms}, 2 worker processes x 8 threads; load average before "
        f"{result['load_before']:.2f}, after {result['load_after']:.2f}",
        "",
        "signal to step start (ms; from the COMMIT returning, before geneva's publish)",
        _row("geneva, light (one signal at a time)",
             _get(g, "light_signals", "signal_to_start_ms")),
        _row("geneva, heavy load (a signal every 200 ms)",
             _get(g, "heavy_signals", "signal_to_start_ms")),
        _row("DBOS send -> recv returns, light", _get(d, "signals_ms")),
        "",
        "signal to step start, from commit() returning (the publish done)",
        _row("geneva, light", _get(g, "light_signals", "returned_to_start_ms")),
        _row("geneva, heavy load", _get(g, "heavy_signals", "returned_to_start_ms")),
        "",
        "timeout lateness (ms; body start - deadline)",
        _row("geneva, light", _get(g, "light_timeouts", "lateness_ms")),
        _row("geneva, heavy load", _get(g, "heavy_timeouts", "lateness_ms")),
        _row("DBOS recv(timeout) returns - (call + T), light", _get(d, "timeouts_ms")),
        "",
        "where the time goes, geneva (ms)",
    ]  # fmt: skip
    for label, keys in (
        ("light signals   p50 ", ("light_signals", "breakdown_p50_ms")),
        ("                p99 ", ("light_signals", "breakdown_p99_ms")),
        ("heavy signals   p50 ", ("heavy_signals", "breakdown_p50_ms")),
        ("                p99 ", ("heavy_signals", "breakdown_p99_ms")),
        ("light timeouts  p50 ", ("light_timeouts", "breakdown_p50_ms")),
        ("heavy timeouts  p50 ", ("heavy_timeouts", "breakdown_p50_ms")),
    ):
        lines.append("  " + label + json.dumps(_get(g, *keys)))
    lines += [
        "",
        "heavy load: " + json.dumps(g.get("heavy")),
        "DBOS: " + json.dumps(_get(d, "settings")),
        "",
        "raw signal to step start, geneva light (ms, in order sent):",
        "  " + " ".join(f"{v:.1f}" for v in g["light_signals_raw_ms"]),
        "raw signal to step start, geneva heavy load (ms, in order sent):",
        "  " + " ".join(f"{v:.1f}" for v in g.get("heavy_signals_raw_ms", [])),
        "raw DBOS send -> recv (ms, in order sent):",
        "  " + " ".join(f"{v:.1f}" for v in (_get(d, "signals_raw_ms") or [])),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    heavy = sub.add_parser("heavy-load")
    heavy.add_argument("--heavy", type=int, default=2000)
    heavy.add_argument("--timeouts", type=int, default=50)
    for part in ("geneva", "all"):
        p = sub.add_parser(part)
        p.add_argument("--signals", type=int, default=200)
        p.add_argument("--timeouts", type=int, default=100)
        p.add_argument("--heavy", type=int, default=2000, help="0: no heavy part")
        p.add_argument("--idle-timeout-ms", type=int, default=100,
                       help="GENEVA_WORKER_IDLE_TIMEOUT_MS of the workers")  # fmt: skip
        p.add_argument("--workdir", default="")
        p.add_argument("--output", default="")
        p.add_argument("--json-out", default="")
        p.add_argument("--no-dbos", action="store_true", help="skip the DBOS part")
        p.add_argument("--reuse-geneva", default="", help="the geneva part's JSON of an "
                       "earlier run (runs only the DBOS part)")  # fmt: skip
    args = parser.parse_args(sys.argv[1:] or ["all"])
    if args.command == "heavy-load":
        heavy_load(args)
        return
    if args.command == "geneva":
        Path(args.json_out).write_text(json.dumps(run_geneva(args)))
        return
    import tempfile

    args.workdir = args.workdir or tempfile.mkdtemp(prefix="geneva-bench-signals-")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=common.REPO_ROOT).stdout.strip()  # fmt: skip
    result: dict[str, Any] = {"commit": commit, "load_before": os.getloadavg()[0]}
    with contextlib.ExitStack() as stack:
        stack.enter_context(common.bench_lock(1800, "signals"))
        os.environ["BENCH_REDIS_URL"] = stack.enter_context(common.private_redis())
        geneva_out = Path(args.reuse_geneva or Path(args.workdir) / "geneva.json")
        if not args.reuse_geneva:
            subprocess.run(
                [sys.executable, os.path.abspath(__file__), "geneva", "--signals",
                 str(args.signals), "--timeouts", str(args.timeouts), "--heavy",
                 str(args.heavy), "--idle-timeout-ms", str(args.idle_timeout_ms),
                 "--workdir", args.workdir, "--json-out", str(geneva_out)],
                check=True, timeout=1800,
            )  # fmt: skip
        result["geneva"] = json.loads(geneva_out.read_text())
        if not args.no_dbos:
            result["dbos"] = run_dbos(args)
    result["load_after"] = os.getloadavg()[0]
    text = report(result, args)
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
