"""Shared plumbing for the flask_geneva benchmark suite.

Everything here is system-agnostic: the floor (plain Dramatiq), DBOS, and later
flask_geneva itself all use the same workload, the same pacing, the same timing
sink and the same metric code, so their figures compare.

Workload (identical for every system)
-------------------------------------
* ``bench_counter(wf_id text primary key, n int, updated_at timestamptz)`` in the
  database ``geneva_bench``: one row per workflow, inserted *before* the clock starts.
* A workflow is ``STEPS`` (5) sequential steps.  Each step body runs, in one
  database transaction::

      UPDATE bench_counter SET n = n + 1, updated_at = clock_timestamp() WHERE wf_id = %s

  and notes ``time.time()`` at the very start of the body (``started``) and right
  after its COMMIT returned (``committed``).
* Loads (see ``LOADS``): ``light`` = 20 workflows started 50 ms apart,
  ``heavy`` = 2,000 workflows started back to back, ``timer`` = 50 workflows
  started back to back whose step 2 waits 2 s before it runs, ``timer-paced`` = the
  same 50 timer workflows started 50 ms apart.

Timing records (the "step log")
-------------------------------
Each step produces one record ``{"wf", "step", "started", "committed", "due"}``
(epoch seconds, floats; ``due`` is set only on a step that waited for a timer: the
moment it was due).  Workers push them, JSON-encoded, onto the Redis list named by
the environment variable ``BENCH_STEPLOG_KEY`` (``push_step_records``), *after*
the step's commit, so the push never sits between a commit and the next body.
Redis (``BENCH_REDIS_URL``; run.py points it at a private redis-server it starts, else
DB 13 of the shared one, reserved for the benchmark) is used
rather than an extra table write so that collecting timings costs the database
under test nothing.  After the clock stops the harness copies the records into
``bench_step_log(wf_id, step, started_at, committed_at, due_at)`` for ad-hoc SQL
(it holds the last run only).

Metrics (``compute_metrics``)
-----------------------------
* step latency = body start - previous step's commit (for step 1: the moment the
  harness's "start workflow" call returned, i.e. the creating commit/enqueue).
  Timer-waited steps are excluded from latency and reported as lateness instead.
* timer lateness = body start - due time.
* throughput = ``STEPS * N / (last commit - first creation)`` steps/s.
* percentiles: linear interpolation between closest ranks (numpy's default).

Runner interface (how a system plugs in)
----------------------------------------
A system is one module ``benchmarks/<anything>.py`` that

1. declares, at top level, the string constants ``SYSTEM = "<name>"`` (used on
   the ``--systems`` command line), ``LABEL = "<human label>"`` and optionally
   ``ORDER = <int>`` (table position; the floor is 0) and ``VENV = "<dir>"``
   (virtualenv, relative to the repo root, whose python runs it; default
   ``.venv-bench``).  ``run.py`` finds these by parsing the file (it never imports
   it), so adding a module is all it takes to register a system;
2. ends with ``if __name__ == "__main__": common.runner_main(SYSTEM, run)``, where
   ``run(load: Load, ctx: RunContext) -> RunOutput`` sets up, starts the
   workflows through ``drive_starts`` (same pacing for all), waits with
   ``wait_for_records``, verifies with ``verify_counters``, and tears its worker
   processes down (``start_process`` / ``stop_process`` in a ``finally``).

``runner_main`` handles the command line
``python <module>.py run --load NAME --round K --json-out PATH [--set KEY=VALUE ...]``,
computes the metrics and writes one JSON object to PATH::

    {"system", "load", "round", "ok", "error", "n_workflows", "steps_expected",
     "steps_recorded", "throughput", "latency_ms": {"p50","p95","p99","n"},
     "lateness_ms": {"p50","p99","n"} | null, "span_s", "settings": {...},
     "cost_per_step": {"cpu_ms", "redis_calls", "pg_xacts"} | null}

``invoke_runner`` is the driver-side counterpart (subprocess with a hard timeout,
process-group kill on overrun).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

STEPS = 5

# --------------------------------------------------------------------------- config

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("BENCH_PG_ADMIN_DB", "test")  # any db we may connect to
BENCH_DB = os.environ.get("BENCH_DB", "geneva_bench")
#: The database flask_geneva's runners use: "postgresql" (default) or "mariadb" (set by
#: the ``geneva-mariadb`` system). The floor and DBOS always run on PostgreSQL.
DATABASE = os.environ.get("BENCH_DATABASE", "postgresql")
#: The MariaDB server (without a database name), as root by default.
MARIADB_URL = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

# Seconds the harness waits, once the workers say they are up, before it starts the
# clock, so every system is measured from the same idle steady state.
SETTLE_S = float(os.environ.get("BENCH_SETTLE_S", "2.0"))


def pg_conninfo(dbname: str = BENCH_DB) -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={dbname}"


def sqlalchemy_url(dbname: str = BENCH_DB) -> str:
    if on_mariadb():
        return f"{MARIADB_URL.rstrip('/')}/{dbname}"
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def on_mariadb() -> bool:
    """Whether this runner's database is MariaDB (``BENCH_DATABASE=mariadb``)."""
    return DATABASE == "mariadb"


def _mariadb(dbname: str | None = None):  # -> pymysql.Connection, autocommit
    import pymysql
    import sqlalchemy as sa

    url = sa.engine.make_url(MARIADB_URL)
    return pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", database=dbname, autocommit=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- loads


@dataclass(frozen=True)
class Load:
    name: str
    n: int  # workflows
    interval_s: float  # gap between two starts (0 = back to back)
    timer_s: float  # wait before step 2 (0 = none)
    timeout_s: float  # how long the harness waits for all steps
    timer_step: int = 2

    @property
    def steps_expected(self) -> int:
        return STEPS * self.n


LOADS: dict[str, Load] = {
    "light": Load("light", n=20, interval_s=0.050, timer_s=0.0, timeout_s=60),
    "heavy": Load("heavy", n=2000, interval_s=0.0, timer_s=0.0, timeout_s=420),
    "timer": Load("timer", n=50, interval_s=0.0, timer_s=2.0, timeout_s=120),
    # The same timers, their workflows started 50 ms apart (as the light load's): the
    # waits end one by one instead of in a burst that saturates the cores.
    "timer-paced": Load("timer-paced", n=50, interval_s=0.050, timer_s=2.0, timeout_s=120),
}


def workflow_ids(system: str, load: Load, round_no: int) -> list[str]:
    return [f"{system}-{load.name}-r{round_no}-{i:05d}" for i in range(load.n)]


# --------------------------------------------------------------------------- database


def _connect(dbname: str, autocommit: bool = True):  # -> psycopg.Connection
    import psycopg

    return psycopg.connect(pg_conninfo(dbname), autocommit=autocommit)


def ensure_database(dbname: str = BENCH_DB) -> None:
    """Create ``dbname`` if it does not exist."""
    if on_mariadb():
        with _mariadb() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{dbname}`")
        return
    with _connect(PG_ADMIN_DB) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def drop_database(dbname: str) -> None:
    """Drop ``dbname`` (terminating its sessions). Never use it on BENCH_DB's admin db."""
    if dbname in (PG_ADMIN_DB, "postgres", "template0", "template1"):
        raise ValueError(f"refusing to drop {dbname}")
    if on_mariadb():
        with _mariadb() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{dbname}`")
        return
    with _connect(PG_ADMIN_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def setup_bench_tables(wf_ids: Sequence[str]) -> None:
    """(Re)create the bench tables in BENCH_DB and insert one counter row per workflow."""
    ensure_database(BENCH_DB)
    if on_mariadb():
        with _mariadb(BENCH_DB) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_counter, bench_step_log")
            cur.execute(
                "CREATE TABLE bench_counter (wf_id VARCHAR(64) PRIMARY KEY,"
                " n INT NOT NULL DEFAULT 0, updated_at DATETIME(6))"
            )
            cur.execute(
                "CREATE TABLE bench_step_log (wf_id VARCHAR(64) NOT NULL, step INT NOT NULL,"
                " started_at DOUBLE NOT NULL, committed_at DOUBLE NOT NULL, due_at DOUBLE,"
                " PRIMARY KEY (wf_id, step))"
            )
            cur.executemany("INSERT INTO bench_counter (wf_id, n) VALUES (%s, 0)", list(wf_ids))
            cur.execute("ANALYZE TABLE bench_counter")
        return
    with _connect(BENCH_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_counter, bench_step_log")
        conn.execute(
            "CREATE TABLE bench_counter ("
            " wf_id text PRIMARY KEY, n int NOT NULL DEFAULT 0, updated_at timestamptz)"
        )
        conn.execute(
            "CREATE TABLE bench_step_log ("
            " wf_id text NOT NULL, step int NOT NULL,"
            " started_at double precision NOT NULL, committed_at double precision NOT NULL,"
            " due_at double precision, PRIMARY KEY (wf_id, step))"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_counter (wf_id, n) FROM STDIN") as cp:
            for wf in wf_ids:
                cp.write_row((wf, 0))
        conn.execute("ANALYZE bench_counter")


def teardown_bench_tables() -> None:
    """Drop the bench tables (the database itself is kept)."""
    if on_mariadb():
        with contextlib.suppress(Exception), _mariadb(BENCH_DB) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_counter, bench_step_log")
        return
    with contextlib.suppress(Exception), _connect(BENCH_DB) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_counter, bench_step_log")


def store_step_log(records: Iterable[dict[str, Any]]) -> None:
    """Copy the collected step records into bench_step_log (after the clock stopped)."""
    if on_mariadb():
        unique = {(r["wf"], r["step"]): r for r in reversed(list(records))}
        with _mariadb(BENCH_DB) as conn, conn.cursor() as cur:
            cur.execute("TRUNCATE bench_step_log")
            cur.executemany(
                "INSERT INTO bench_step_log (wf_id, step, started_at, committed_at, due_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(r["wf"], r["step"], r["started"], r["committed"], r.get("due"))
                 for r in unique.values()],
            )  # fmt: skip
        return
    with _connect(BENCH_DB) as conn:
        conn.execute("TRUNCATE bench_step_log")
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY bench_step_log (wf_id, step, started_at, committed_at, due_at) FROM STDIN"
            ) as cp,
        ):
            seen = set()
            for r in records:
                key = (r["wf"], r["step"])
                if key in seen:
                    continue
                seen.add(key)
                cp.write_row((r["wf"], r["step"], r["started"], r["committed"], r.get("due")))


def verify_counters(wf_ids: Sequence[str]) -> dict[str, int]:
    """How many counter rows reached n == STEPS, and how many are off."""
    if on_mariadb():
        wanted = set(wf_ids)
        with _mariadb(BENCH_DB) as conn, conn.cursor() as cur:
            cur.execute("SELECT wf_id, n FROM bench_counter")
            counts: dict[int, int] = {}
            for wf_id, n in cur.fetchall():
                if wf_id in wanted:
                    counts[int(n)] = counts.get(int(n), 0) + 1
        rows = list(counts.items())
    else:
        with _connect(BENCH_DB) as conn:
            rows = conn.execute(
                "SELECT n, count(*) FROM bench_counter WHERE wf_id = ANY(%s) GROUP BY n",
                (list(wf_ids),),
            ).fetchall()
    hist = {int(n): int(c) for n, c in rows}
    done = hist.get(STEPS, 0)
    return {"done": done, "wrong": sum(c for n, c in hist.items() if n != STEPS)}


# --------------------------------------------------------------------------- step log sink


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def push_step_records(client, key: str, records: Sequence[dict[str, Any]]) -> None:
    if records:
        client.rpush(key, *(json.dumps(r, separators=(",", ":")) for r in records))


def step_record(
    wf: str, step: int, started: float, committed: float, due: float | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {"wf": wf, "step": step, "started": started, "committed": committed}
    if due is not None:
        rec["due"] = due
    return rec


def blpop(client: Any, key: str, timeout_s: float) -> Any:
    """``BLPOP`` for up to ``timeout_s``, one second at a time (redis-py 6+ gives its
    connections a 5 s socket timeout, which a longer ``BLPOP`` would run into)."""
    deadline = time.monotonic() + timeout_s
    while True:
        item = client.blpop(key, timeout=1)
        if item is not None or time.monotonic() > deadline:
            return item


def drain_step_records(client, key: str) -> list[dict[str, Any]]:
    raw = client.lrange(key, 0, -1)
    client.delete(key)
    return [json.loads(x) for x in raw]


class WorkerDied(RuntimeError):
    pass


def wait_for_records(
    client,
    key: str,
    expected: int,
    timeout_s: float,
    *,
    alive: Callable[[], bool] | None = None,
    poll_s: float = 0.05,
) -> int:
    """Poll the step-log list until it holds ``expected`` records. Returns the count.

    Raises TimeoutError (with the count reached) or WorkerDied if ``alive()`` turns False.
    """
    deadline = time.monotonic() + timeout_s
    count = 0
    while True:
        prev, count = count, int(client.llen(key))
        if count < prev:
            raise RuntimeError(
                f"the step-log list shrank ({prev} -> {count}): was Redis flushed by "
                "someone else (e.g. a test suite's FLUSHALL) during the run?"
            )
        if count >= expected:
            _WINDOW["end"] = cost_snapshot(cpu_first=True)
            return count
        if alive is not None and not alive():
            raise WorkerDied(f"a worker process exited early ({count}/{expected} steps logged)")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s with {count}/{expected} steps")
        time.sleep(poll_s)


# --------------------------------------------------------------------------- pacing


def drive_starts(
    load: Load, wf_ids: Sequence[str], start: Callable[[str], None]
) -> dict[str, float]:
    """Start every workflow with the load's pacing; return wf_id -> creation time.

    The creation time is ``time.time()`` right after ``start(wf)`` returned, i.e. after
    the system acknowledged (committed / enqueued) the new workflow.
    """
    created: dict[str, float] = {}
    _WINDOW.clear()
    _WINDOW["start"] = cost_snapshot(cpu_first=False)
    t0 = time.monotonic()
    for i, wf in enumerate(wf_ids):
        if load.interval_s:
            delay = t0 + i * load.interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        start(wf)
        created[wf] = time.time()
    return created


# --------------------------------------------------------------------------- cost per step

#: Counters read by ``drive_starts`` before the first start and by ``wait_for_records``
#: once every record is in: the window that ``cost_per_step`` divides by the steps.
_WINDOW: dict[str, dict[str, float] | None] = {}


def cost_snapshot(*, cpu_first: bool) -> dict[str, float] | None:
    """What the whole machine has spent so far, or None if a counter cannot be read.

    * ``cpu_s``: CPU seconds busy on every core, every process (``/proc/stat``): the
      workers, the harness, PostgreSQL and Redis alike, and anything else running;
    * ``redis_calls``: calls of Lua scripts on the Redis server (server-wide: exact with
      ``run.py --redis private``). Dramatiq's Redis broker does every enqueue, fetch
      (with its heartbeat) and acknowledgement as one ``EVALSHA``, so these are its
      round trips, idle polls included; the harness calls none;
    * ``pg_xid``: PostgreSQL's latest completed transaction id (the snapshot's xmax,
      read without taking an id): the difference counts the transactions that took an
      id, i.e. wrote or locked a row (rolled back or not, savepoints that wrote too), in
      every database of the cluster (DBOS's system database included). On MariaDB
      (``geneva-mariadb``) the server's count of ``COMMIT`` statements instead.

    The CPU is read first at the end of the window and last at its start (``cpu_first``),
    so that the probe's own connections stay out of it.
    """
    try:
        cpu_at_end = _cpu_busy_seconds() if cpu_first else None
        client = redis_client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        calls = sum(
            int(v.get("calls", 0))
            for k, v in stats.items()
            if k in ("cmdstat_evalsha", "cmdstat_eval")
        )
        if on_mariadb():
            # COMMIT statements, server-wide: a transaction each (the probe's none).
            with _mariadb() as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                    " WHERE VARIABLE_NAME = 'COM_COMMIT'"
                )
                (xid,) = cur.fetchone()
        else:
            with _connect(PG_ADMIN_DB) as conn:
                (xid,) = conn.execute(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                ).fetchone()
        cpu = cpu_at_end if cpu_at_end is not None else _cpu_busy_seconds()
    except Exception:
        return None
    return {"cpu_s": cpu, "redis_calls": float(calls), "pg_xid": float(xid)}


def _cpu_busy_seconds() -> float:
    total, not_busy = _cpu_times()
    return (total - not_busy) / os.sysconf("SC_CLK_TCK")


def cost_per_step(steps: int) -> dict[str, float] | None:
    """The window's cost divided by ``steps``: machine CPU ms, Dramatiq's Redis calls
    and PostgreSQL transactions that wrote, per step (None without both snapshots)."""
    start, end = _WINDOW.get("start"), _WINDOW.get("end")
    if not start or not end or steps <= 0:
        return None
    return {
        "cpu_ms": 1000 * (end["cpu_s"] - start["cpu_s"]) / steps,
        "redis_calls": (end["redis_calls"] - start["redis_calls"]) / steps,
        "pg_xacts": (end["pg_xid"] - start["pg_xid"]) / steps,
    }


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """q in [0, 100]; linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def compute_metrics(
    load: Load, created: dict[str, float], records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    by_wf: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_wf.setdefault(r["wf"], {}).setdefault(int(r["step"]), r)  # first record wins
    latencies: list[float] = []
    first: list[float] = []  # step 1: creation -> body
    nxt: list[float] = []  # steps 2..5: previous commit -> body
    lateness: list[float] = []
    commits: list[float] = []
    recorded = 0
    for wf, steps in by_wf.items():
        for s, r in steps.items():
            recorded += 1
            commits.append(r["committed"])
            if r.get("due") is not None:
                lateness.append(r["started"] - r["due"])
                continue
            if s == 1:
                ref = created.get(wf)
            else:
                prev = steps.get(s - 1)
                ref = prev["committed"] if prev else None
            if ref is not None:
                latencies.append(r["started"] - ref)
                (first if s == 1 else nxt).append(r["started"] - ref)
    first_created = min(created.values()) if created else None
    last_commit = max(commits) if commits else None
    span = (last_commit - first_created) if (first_created and last_commit) else None
    ms = 1000.0

    def pct(vals: list[float], q: float) -> float | None:
        p = percentile(vals, q)
        return None if p is None else p * ms

    return {
        "n_workflows": load.n,
        "steps_expected": load.steps_expected,
        "steps_recorded": recorded,
        "span_s": span,
        # how long the harness took to create all workflows (enqueue cost, not pacing)
        "starts_span_s": (max(created.values()) - first_created) if created else None,
        "throughput": (recorded / span) if span and span > 0 else None,
        "latency_ms": {
            "p50": pct(latencies, 50),
            "p95": pct(latencies, 95),
            "p99": pct(latencies, 99),
            "max": pct(latencies, 100),
            "n": len(latencies),
        },
        "latency_first_ms": {"p50": pct(first, 50), "p99": pct(first, 99), "n": len(first)},
        "latency_next_ms": {"p50": pct(nxt, 50), "p99": pct(nxt, 99), "n": len(nxt)},
        "lateness_ms": (
            {
                "p50": pct(lateness, 50),
                "p99": pct(lateness, 99),
                "max": pct(lateness, 100),
                "n": len(lateness),
            }
            if load.timer_s
            else None
        ),
    }


# --------------------------------------------------------------------------- processes


def start_process(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path, cwd: Path = BENCH_DIR
) -> subprocess.Popen:
    """Start a worker in its own process group, stdout+stderr to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed by stop_process
    proc = subprocess.Popen(
        list(cmd),
        cwd=str(cwd),
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._bench_log = log  # type: ignore[attr-defined]
    _register_pgid(proc.pid)
    return proc


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the group leader, wait up to ``grace_s``, then SIGKILL the whole group.

    Only the leader gets SIGTERM: a supervisor such as the dramatiq CLI forwards it to
    its children itself (a second SIGTERM would make them hard-kill themselves).
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        # The group may outlive its leader (forked children): always finish it off.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    finally:
        log = getattr(proc, "_bench_log", None)
        if log is not None:
            log.close()


def wait_for_dramatiq_boot(
    ready_dir: Path, proc: subprocess.Popen, processes: int, workdir: Path
) -> None:
    """Wait until ``processes`` dramatiq worker processes touched their ready file in
    ``ready_dir`` (a middleware does it after boot), then let the machine settle."""
    deadline = time.monotonic() + 60
    while len(list(ready_dir.iterdir())) < processes:
        if proc.poll() is not None:
            raise WorkerDied(f"dramatiq exited early, see {workdir}/dramatiq.log")
        if time.monotonic() > deadline:
            raise TimeoutError("dramatiq workers did not boot in 60s")
        time.sleep(0.05)
    time.sleep(SETTLE_S)


def wait_ready_files(
    paths: Sequence[Path], procs: Sequence[subprocess.Popen], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if any(pr.poll() is not None for pr in procs):
            raise WorkerDied("a worker process exited during start-up")
        if time.monotonic() >= deadline:
            raise TimeoutError("workers did not report ready in time")
        time.sleep(0.05)


# A runner records the process groups it starts in a side file, so that the driver can
# clean up if it ever has to SIGKILL the runner itself.
_PGID_FILE: Path | None = None


def _register_pgid(pgid: int) -> None:
    if _PGID_FILE is not None:
        with open(_PGID_FILE, "a") as f:
            f.write(f"{pgid}\n")


@contextlib.contextmanager
def private_redis(db: int = 13):
    """A throw-away redis-server on a free loopback port; yields its URL.

    Used by run.py by default so that nothing else on the machine (a test suite's
    FLUSHALL, other clients' load) touches the benchmark's broker and step log.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_dir = Path(tempfile.mkdtemp(prefix="geneva-bench-redis-"))
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(log_dir)]
    proc = start_process(cmd, log_path=log_dir / "redis.log", cwd=log_dir)
    url = f"redis://127.0.0.1:{port}/{db}"
    try:
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"private redis-server did not start, see {log_dir}"
                    ) from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        stop_process(proc, grace_s=5)
        shutil.rmtree(log_dir, ignore_errors=True)


def _cpu_times() -> tuple[int, int]:
    """(all ticks, ticks not busy) of the machine so far: idle, iowait and steal (the
    hypervisor's) are not busy; guest time is already counted in user and nice."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    fields += [0] * (8 - len(fields))
    not_busy = fields[3] + fields[4] + fields[7]  # idle + iowait + steal
    return sum(fields[:8]), not_busy


def cpu_busy(interval_s: float = 1.0) -> float:
    """Machine-wide CPU busy fraction (0..1) over ``interval_s``."""
    t0, i0 = _cpu_times()
    time.sleep(interval_s)
    t1, i1 = _cpu_times()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_until_quiet(max_busy: float, need_s: int, timeout_s: float) -> tuple[bool, float]:
    """Wait until the machine's CPU was at most ``max_busy`` busy for ``need_s``
    consecutive seconds. Returns (became quiet, busy fraction of the last second)."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    busy = cpu_busy()
    while True:
        streak = streak + 1 if busy <= max_busy else 0
        if streak >= need_s:
            return True, busy
        if time.monotonic() >= deadline:
            return False, busy
        busy = cpu_busy()


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, comm, utime+stime ticks) for every process we can read."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), comm, int(rest[11]) + int(rest[12]))
    return table


#: Process names of the database servers, which serve the benchmark too.
DATABASE_SERVERS = ("postgres", "mariadbd", "mysqld")


def foreign_cpu_ticks(root_pid: int) -> dict[int, int]:
    """CPU ticks of the processes that are *not* the benchmark's: neither ``root_pid``
    and its descendants nor PostgreSQL or MariaDB (which serve the benchmark too) nor
    kernel threads.  Diff two snapshots with ``foreign_cpu_seconds``."""
    table = _proc_table()
    ours: set[int] = set()
    for pid in table:
        chain, p = [], pid
        while p and p not in ours and p != root_pid and p in table and len(chain) < 64:
            chain.append(p)
            p = table[p][0]
        if p == root_pid or p in ours:
            ours.update(chain)
    ours.add(root_pid)
    return {
        pid: ticks
        for pid, (ppid, comm, ticks) in table.items()
        if pid not in ours and ppid != 2 and pid != 2 and not comm.startswith(DATABASE_SERVERS)
    }


def foreign_cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds burnt by foreign processes between two snapshots (processes that
    started and ended in between are missed, so this is a lower bound)."""
    hz = os.sysconf("SC_CLK_TCK")
    return sum(max(0, t - before.get(pid, 0)) for pid, t in after.items()) / hz


# Only one benchmark round may run on the machine at a time: they share the
# geneva_bench tables, and would skew each other's figures anyway.
LOCK_PATH = Path(os.environ.get("BENCH_LOCK", "/tmp/geneva-bench.lock"))


@contextlib.contextmanager
def bench_lock(timeout_s: float, who: str = ""):
    """Exclusive machine-wide lock (flock on LOCK_PATH) for one benchmark round."""
    import fcntl

    f = open(LOCK_PATH, "a+")  # noqa: SIM115 - closed below
    try:
        deadline = time.monotonic() + timeout_s
        said = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    print(f"[bench] {who} waiting for another benchmark run ({LOCK_PATH})",
                          file=sys.stderr, flush=True)  # fmt: skip
                    said = True
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"another benchmark run held {LOCK_PATH} too long") from None
                time.sleep(0.5)
        yield
    finally:
        f.close()  # releases the lock


# --------------------------------------------------------------------------- runner side


@dataclass
class RunContext:
    system: str
    round_no: int
    workdir: Path  # scratch dir for logs / ready files, kept on failure
    settings: dict[str, str]  # --set KEY=VALUE pairs
    steplog_key: str

    def get(self, key: str, default: str) -> str:
        return self.settings.get(key, os.environ.get(f"BENCH_{key.upper()}", default))


@dataclass
class RunOutput:
    created: dict[str, float]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] | None = None


def _sigterm_to_exit(signum, frame):  # pragma: no cover - signal path
    raise SystemExit(128 + signum)


def runner_main(system: str, run: Callable[[Load, RunContext], RunOutput]) -> None:
    global _PGID_FILE
    ap = argparse.ArgumentParser(prog=f"{system} runner")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("run")
    rp.add_argument("--load", required=True, choices=sorted(LOADS))
    rp.add_argument("--round", type=int, default=1)
    rp.add_argument("--json-out", required=True)
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args, _ = ap.parse_known_args()

    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    load = LOADS[args.load]
    settings = dict(s.split("=", 1) for s in args.set)
    workdir = Path(tempfile.mkdtemp(prefix=f"geneva-bench-{system}-{load.name}-"))
    _PGID_FILE = Path(args.json_out + ".pgids")
    ctx = RunContext(
        system=system,
        round_no=args.round,
        workdir=workdir,
        settings=settings,
        steplog_key=f"bench:steplog:{system}:{load.name}:{args.round}:{os.getpid()}",
    )
    result: dict[str, Any] = {
        "system": system,
        "load": load.name,
        "round": args.round,
        "ok": False,
        "error": None,
        "workdir": str(workdir),
    }
    try:
        with contextlib.ExitStack() as stack:
            # run.py holds the lock around each round; a runner started by hand takes it.
            if os.environ.get("BENCH_LOCK_HELD") != "1":
                stack.enter_context(bench_lock(1800, f"{system}/{load.name}"))
            out = run(load, ctx)
            result.update(compute_metrics(load, out.created, out.records))
            result["cost_per_step"] = cost_per_step(load.steps_expected)
            result["settings"] = out.settings
            result["counters"] = out.counters
            problems = []
            if result["steps_recorded"] != load.steps_expected:
                problems.append(f"{result['steps_recorded']}/{load.steps_expected} steps recorded")
            if out.counters is not None and out.counters.get("done") != load.n:
                problems.append(f"counters: {out.counters}")
            result["ok"] = not problems
            result["error"] = "; ".join(problems) or None
            with contextlib.suppress(Exception):
                store_step_log(out.records)
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-4000:]
    finally:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
        # Reaching here means run()'s own finally stopped its workers: nothing for the
        # driver to clean up (the file only matters if this process gets SIGKILLed).
        with contextlib.suppress(OSError):
            _PGID_FILE.unlink()
        if result["ok"]:  # keep the logs of a failed run only
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if result["ok"] else 1)


# --------------------------------------------------------------------------- driver side


def invoke_runner(
    python: str,
    script: Path,
    load: Load,
    round_no: int,
    *,
    settings: dict[str, str] | None = None,
    extra_timeout_s: float = 180.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one (system, load, round) in a subprocess; return its JSON result.

    The runner gets ``load.timeout_s + extra_timeout_s`` in total; on overrun it gets
    SIGTERM (its ``finally`` stops its workers), then SIGKILL, and any worker process
    group it had registered is killed too.
    """
    fd, out_path = tempfile.mkstemp(prefix="geneva-bench-result-", suffix=".json")
    os.close(fd)
    cmd = [python, str(script), "run", "--load", load.name, "--round", str(round_no)]
    cmd += ["--json-out", out_path]
    for k, v in (settings or {}).items():
        cmd += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(
        cmd, cwd=str(BENCH_DIR), env={**os.environ, **(env or {})}, start_new_session=True
    )
    timeout = load.timeout_s + extra_timeout_s
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=45)
        raise
    finally:
        pgid_file = Path(out_path + ".pgids")
        if pgid_file.exists():
            for line in pgid_file.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.killpg(int(line), signal.SIGKILL)
            pgid_file.unlink()
    try:
        result = json.loads(Path(out_path).read_text() or "{}")
    except json.JSONDecodeError:
        result = {}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_path)
    if not result:
        result = {"ok": False, "error": f"runner exited {proc.returncode} without a result"}
    if timed_out:
        result["ok"] = False
        result["error"] = f"runner timed out after {timeout:.0f}s; {result.get('error')}"
    result.setdefault("load", load.name)
    result.setdefault("round", round_no)
    return result


# --------------------------------------------------------------------------- printing

COLUMNS = [
    ("system", 16),
    ("load", 11),
    ("rounds", 6),
    ("steps/s", 9),
    ("lat p50", 8),
    ("lat p95", 8),
    ("lat p99", 8),
    ("late p50", 9),
    ("late p99", 9),
]


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def summary_row(system: str, load: str, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric over the successful rounds."""
    ok = [r for r in results if r.get("ok")]

    def med(getter: Callable[[dict[str, Any]], float | None]) -> float | None:
        vals = [v for v in (getter(r) for r in ok) if v is not None]
        return median(vals)

    def sub(name: str, key: str):
        return lambda r: (r.get(name) or {}).get(key)

    return {
        "system": system,
        "load": load,
        "rounds": f"{len(ok)}/{len(results)}",
        "steps/s": med(lambda r: r.get("throughput")),
        "lat p50": med(sub("latency_ms", "p50")),
        "lat p95": med(sub("latency_ms", "p95")),
        "lat p99": med(sub("latency_ms", "p99")),
        "late p50": med(sub("lateness_ms", "p50")),
        "late p99": med(sub("lateness_ms", "p99")),
    }


def format_table(rows: Sequence[dict[str, Any]], baseline: str | None = "floor") -> str:
    """The results table (ms for latencies), plus a ratio table against ``baseline``."""
    lines = []
    head = "  ".join(
        f"{name:>{w}}" if i > 1 else f"{name:<{w}}" for i, (name, w) in enumerate(COLUMNS)
    )
    lines.append(head)
    lines.append("-" * len(head))
    for row in rows:
        cells = []
        for i, (name, w) in enumerate(COLUMNS):
            v = row.get(name)
            s = v if isinstance(v, str) else _fmt(v)
            cells.append(f"{s:<{w}}" if i <= 1 else f"{s:>{w}}")
        lines.append("  ".join(cells))
    base = {r["load"]: r for r in rows if r["system"] == baseline} if baseline else {}
    others = [r for r in rows if r["system"] != baseline and r["load"] in base]
    if others:
        lines.append("")
        lines.append(
            f"relative to {baseline} (steps/s: system/{baseline}, higher is better; "
            f"latencies: system/{baseline}, lower is better)"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for row in others:
            b = base[row["load"]]
            cells = []
            for i, (name, w) in enumerate(COLUMNS):
                if i <= 2:
                    v = row.get(name)
                    cells.append(f"{v:<{w}}" if i <= 1 else f"{v:>{w}}")
                    continue
                x, y = row.get(name), b.get(name)
                s = f"{x / y:.2f}x" if (x is not None and y not in (None, 0)) else "-"
                cells.append(f"{s:>{w}}")
            lines.append("  ".join(cells))
    return "\n".join(lines)


def format_costs(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    systems: Sequence[str],
    loads: Sequence[str],
) -> str:
    """Cost per step, medians over the successful rounds (``cost_per_step``)."""
    cols = [("cpu ms", "cpu_ms", 2), ("redis calls", "redis_calls", 2), ("pg xacts", "pg_xacts", 2)]
    head = f"{'system':<16}  {'load':<11}  " + "  ".join(f"{c:>11}" for c, _, _ in cols)
    lines = [head, "-" * len(head)]
    for ld in loads:
        for s in systems:
            ok = [r for r in results.get((s, ld), []) if r.get("ok")]
            cells = []
            for _, key, digits in cols:
                vals = [
                    v for v in ((r.get("cost_per_step") or {}).get(key) for r in ok)
                    if v is not None
                ]
                cells.append(f"{_fmt(median(vals), digits):>11}")
            lines.append(f"{s:<16}  {ld:<11}  " + "  ".join(cells))
    return "\n".join(lines)


def format_breakdown(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    systems: Sequence[str],
    loads: Sequence[str],
) -> str:
    """First-step vs later-step latency (ms) and the time the harness took to create
    all workflows (s), medians over the successful rounds."""
    cols = ["first p50", "first p99", "next p50", "next p99", "create s"]
    head = f"{'system':<16}  {'load':<11}  " + "  ".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for ld in loads:
        for s in systems:
            ok = [r for r in results.get((s, ld), []) if r.get("ok")]
            cells = []
            for name, key in [
                ("latency_first_ms", "p50"),
                ("latency_first_ms", "p99"),
                ("latency_next_ms", "p50"),
                ("latency_next_ms", "p99"),
            ]:
                vals = [v for v in ((r.get(name) or {}).get(key) for r in ok) if v is not None]
                cells.append(f"{_fmt(median(vals)):>9}")
            spans = [r["starts_span_s"] for r in ok if r.get("starts_span_s") is not None]
            cells.append(f"{_fmt(median(spans), 2):>9}")
            lines.append(f"{s:<16}  {ld:<11}  " + "  ".join(cells))
    return "\n".join(lines)
