"""Where the hero path's CPU and round trips go: one ``create()`` + commit, one step.

Not a benchmark *system* (no ``SYSTEM``; ``run.py`` ignores it) and not a test: run it
by hand with the project's virtualenv, on an otherwise quiet machine::

    .venv/bin/python benchmarks/hero_path.py                      # PostgreSQL and SQLite
    .venv/bin/python benchmarks/hero_path.py --cprofile           # where the CPU goes
    .venv/bin/python benchmarks/hero_path.py --db pg --py-spy .venv-bench/bin/py-spy
    .venv/bin/python benchmarks/hero_path.py --inline-steps 0     # every step from a message

It uses only the public API (``create()``, ``db.session``, the ``step_actor`` a worker
runs, the signals), so it runs unchanged on a new engine. The workload is the
benchmark's (``geneva_bench.py``): the hero is a counter row, five steps, each updates its
hero through ``db.session`` (``hero.n = HeroCounter.n + 1``).

What it measures, per database:

* **create**: in an app context of its own (as a request has),
  ``HeroWorkflow.create(hero=...)`` and ``db.session.commit()`` (the commit's fast path
  publishes the first step to a private Redis). The hero is a reference to its row (a
  detached instance with its primary key, as ``geneva_bench.py`` passes it): loading it
  is the application's work, not timed. (Up to 4423f1a the loop loaded it with
  ``db.session.get``, counted in the CPU figure; 4423f1a subtracted the load's Python
  but not its PostgreSQL time nor its ``BEGIN``.)
* **steps**: each workflow's first step message run as a worker runs it
  (``app.extensions["geneva"].step_actor.fn(execution_id)``: the step from the message,
  then the next ones inline, ``GENEVA_INLINE_STEPS``). The signals split each step into
  claim (until ``precondition_checked``), body (until ``step_performed``) and finalize
  (until ``step_finalized``).
* **the workload alone** (with heroes): the same hero updates through ``db.session``,
  each followed by a commit, with no engine: what the application's own work costs, the
  part of a step no engine can save (the hero a reference added to the session, as
  geneva hands each step a hero it has read).
* the same for hero-less workflows (``may_proceed_without_hero``, ``allow_multiple``).

Counted with SQLAlchemy engine events: every statement (``before_cursor_execute``), each
transaction's ``BEGIN`` (psycopg sends it as a round trip of its own before the first
statement of a transaction) and each ``COMMIT``/``ROLLBACK``; on PostgreSQL these are the
round trips. Redis calls are read from the private server's ``INFO commandstats``. CPU:
this process's (``time.process_time``) and, on PostgreSQL, that of the server backends
serving this process's connections (``/proc``, 10 ms ticks: a mean over many operations).

Each measurement also times a reference loop (``sum(range(100000))``, 1.24 ms on the
quiet machine of 2026-12-03) before and after, to tell how fast the machine was then.

With ``--cprofile`` the measured loops are profiled by cProfile timed by CPU time
(``time.process_time``: waiting for the database or for a core counts for nothing) and
the report lists the functions' cumulative shares; the CPU figures of such a run are
inflated by the profiler, so take them from a run without it. With ``--py-spy PATH``
they are sampled by py-spy instead (inclusive shares, leaf frames by package); on a busy
machine py-spy counts a thread that waits for a core as busy, so prefer ``--cprofile``
there. Results: ``docs/performance-profile-2026-12-07.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import Mapped, make_transient_to_detached, mapped_column

from flask_geneva import Geneva, signals, step

STEPS = 5
QUEUE = "hero_path"

db = SQLAlchemy()
geneva = Geneva(db=db)


class HeroCounter(db.Model):  # type: ignore[name-defined,misc]
    """The benchmark's counter row: each hero workflow's hero."""

    __tablename__ = "hero_path_counter"
    wf_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    n: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    updated_at: Mapped[Any] = mapped_column(sa.DateTime(timezone=True), nullable=True)


def _bump_hero(workflow: Any) -> None:
    _bump(workflow.hero)


def _bump(hero: HeroCounter) -> None:
    hero.n = HeroCounter.n + 1
    hero.updated_at = sa.func.current_timestamp()


_UPDATE = sa.text(
    "UPDATE hero_path_counter SET n = n + 1, updated_at = CURRENT_TIMESTAMP WHERE wf_id = :wf"
)


def _bump_by_key(workflow: Any) -> None:
    db.session.execute(_UPDATE, {"wf": workflow.data["wf"]})


class HeroWorkflow(geneva.Workflow):
    """The benchmark's hero workflow: five steps, each updates the hero row."""

    step_job_options = {"queue_name": QUEUE}

    @step
    def step_1(self) -> None:
        _bump_hero(self)

    @step
    def step_2(self) -> None:
        _bump_hero(self)

    @step
    def step_3(self) -> None:
        _bump_hero(self)

    @step
    def step_4(self) -> None:
        _bump_hero(self)

    @step
    def step_5(self) -> None:
        _bump_hero(self)


class NoHeroWorkflow(geneva.Workflow):
    """The hero-less variant: the same update, keyed by ``data["wf"]``."""

    may_proceed_without_hero = True
    allow_multiple = True
    step_job_options = {"queue_name": QUEUE}

    @step
    def step_1(self) -> None:
        _bump_by_key(self)

    @step
    def step_2(self) -> None:
        _bump_by_key(self)

    @step
    def step_3(self) -> None:
        _bump_by_key(self)

    @step
    def step_4(self) -> None:
        _bump_by_key(self)

    @step
    def step_5(self) -> None:
        _bump_by_key(self)


# --------------------------------------------------------------------------- counting


@dataclass
class Tally:
    """What one kind of operation cost, summed over ``ops`` of them."""

    ops: int = 0
    statements: Counter[str] = field(default_factory=Counter)
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    redis_calls: int = 0
    redis_commands: Counter[str] = field(default_factory=Counter)
    python_cpu: float = 0.0
    server_cpu: float | None = None
    #: ``reference_ms()`` just before the measurement, and just after.
    reference_ms: float = 0.0
    reference_after_ms: float = 0.0
    #: Statements per phase (claim / body / finalize / other), for steps.
    phases: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: Distinct statement texts (first 160 characters), in order of first sight.
    texts: dict[str, int] = field(default_factory=dict)

    def per_op(self, value: float) -> float:
        return value / self.ops if self.ops else 0.0

    @property
    def round_trips(self) -> int:
        return sum(self.statements.values()) + self.begins + self.commits + self.rollbacks


class Meter:
    """Counts what the engine is asked to do while armed; tags statements by phase."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgresql = engine.dialect.name == "postgresql"
        self.armed = False
        self.tally = Tally()
        self.phase = "other"
        self.backend_pids: set[int] = set()
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _connect(self, dbapi_connection: Any, record: Any) -> None:
        if self.postgresql:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            self.backend_pids.add(int(cursor.fetchone()[0]))
            cursor.close()
            dbapi_connection.commit()

    def _in_transaction(self, conn: Any) -> bool:
        raw = conn.connection.driver_connection
        if self.postgresql:
            return bool(raw.info.transaction_status != 0)  # 0 = IDLE
        return bool(raw.in_transaction)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.armed:
            return
        kind = statement.lstrip().split(None, 1)[0].upper()
        if kind == "WITH":
            kind = "WITH(cte)"
        if self.postgresql and not self._in_transaction(conn):
            self.tally.begins += 1
        self.tally.statements[kind] += 1
        self.tally.phases[self.phase][kind] += 1
        text = " ".join(statement.split())[:160]
        self.tally.texts[text] = self.tally.texts.get(text, 0) + 1

    def _commit(self, conn: Any) -> None:
        if self.armed and (not self.postgresql or self._in_transaction(conn)):
            self.tally.commits += 1
            self.tally.phases[self.phase]["COMMIT"] += 1

    def _rollback(self, conn: Any) -> None:
        if self.armed and self.postgresql and self._in_transaction(conn):
            self.tally.rollbacks += 1
            self.tally.phases[self.phase]["ROLLBACK"] += 1

    def server_cpu(self) -> float | None:
        if not self.postgresql:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.backend_pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    @contextmanager
    def measuring(self, ops: int) -> Iterator[Tally]:
        reference = reference_ms()
        self.tally = Tally(ops=ops, reference_ms=reference)
        self.phase = "other"
        redis_before = _redis_commands()
        server_before = self.server_cpu()
        cpu_before = time.process_time()
        self.armed = True
        try:
            yield self.tally
        finally:
            self.armed = False
            self.tally.python_cpu = time.process_time() - cpu_before
            self.tally.reference_after_ms = reference_ms()
            server_after = self.server_cpu()
            if server_before is not None and server_after is not None:
                self.tally.server_cpu = server_after - server_before
            after = _redis_commands()
            after.subtract(redis_before)
            self.tally.redis_commands = +after
            self.tally.redis_calls = sum(self.tally.redis_commands.values())


def _redis_commands() -> Counter[str]:
    """Calls per command on the (private) Redis server so far, ``INFO`` and the probe's
    own connection set-up left out."""
    client = common.redis_client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    skip = ("cmdstat_info", "cmdstat_client|setinfo", "cmdstat_hello")
    return Counter(
        {k[8:]: int(v.get("calls", 0)) for k, v in stats.items() if k not in skip}
    )


# --------------------------------------------------------------------------- py-spy


@contextmanager
def sampled(py_spy: str | None, out: Path) -> Iterator[None]:
    """Sample this process with py-spy (raw collapsed stacks to ``out``) while inside."""
    if not py_spy:
        yield
        return
    proc = subprocess.Popen(
        [py_spy, "record", "--pid", str(os.getpid()), "--rate", "500", "--format", "raw",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def cprofiled(enabled: bool, out: Path) -> Iterator[None]:
    """Profile this thread with cProfile, timed by CPU time (``time.process_time``), so
    that waiting for the database or for a busy machine's cores counts for nothing."""
    if not enabled:
        yield
        return
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(str(out))


def summarize_cprofile(path: Path, root: str, top: int = 40) -> list[str]:
    """Cumulative CPU shares under ``root`` (a function name), and own time by package."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    root_total = max(
        (ct for (_, _, name), (_, _, _, ct, _) in entries.items() if name == root), default=0.0
    )
    if not root_total:
        return [f"  (no cProfile data under {root})"]
    rows = []
    by_package: Counter[str] = Counter()
    for (filename, _, name), (_, ncalls, tottime, cumtime, _) in entries.items():
        by_package[_package(filename)] += tottime
        short = filename.split("site-packages/")[-1].split("wt-bench/")[-1]
        rows.append((cumtime, ncalls, f"{name} ({short})"))
    rows.sort(reverse=True)
    lines = [
        f"  cProfile, CPU time: {root_total:.3f} s under {root} (the profiler's own cost"
        " inflates calls-heavy code; read the shares, not the absolute times)",
        "  cumulative, top functions (calls per op in brackets are totals):",
    ]
    lines += [f"    {ct / root_total:6.1%}  [{n:>7}]  {label}" for ct, n, label in rows[:top]]
    lines.append("  own time by package:")
    total_own = sum(by_package.values()) or 1.0
    lines += [f"    {v / total_own:6.1%}  {k}" for k, v in by_package.most_common()]
    return lines


def _frame_parts(frame: str) -> tuple[str, str]:
    """``("func", "path")`` from py-spy's ``func (path:line)``."""
    if " (" not in frame:
        return frame, ""
    name, rest = frame.rsplit(" (", 1)
    return name, rest.rsplit(":", 1)[0]


def _package(path: str) -> str:
    for marker, label in (
        ("flask_geneva/", "flask_geneva"),
        ("sqlalchemy/orm/", "sqlalchemy.orm"),
        ("sqlalchemy/engine/", "sqlalchemy.engine"),
        ("sqlalchemy/sql/", "sqlalchemy.sql"),
        ("sqlalchemy/", "sqlalchemy (other)"),
        ("psycopg", "psycopg"),
        ("flask_sqlalchemy/", "flask_sqlalchemy"),
        ("flask/", "flask"),
        ("werkzeug/", "werkzeug"),
        ("redis/", "redis"),
        ("dramatiq/", "dramatiq"),
        ("benchmarks/", "harness"),
        ("blinker/", "blinker"),
        ("json/", "json"),
        ("sqlite3/", "sqlite3"),
    ):
        if marker in path:
            return label
    return "stdlib/other"


def summarize_profile(raw: Path, root: str, top: int = 30) -> list[str]:
    """Inclusive shares of the functions under ``root`` (a function name in the stack),
    and the leaf frames' packages."""
    if not raw.exists():
        return [f"  (no py-spy output at {raw})"]
    inclusive: Counter[str] = Counter()
    leaf_pkg: Counter[str] = Counter()
    leaf_fn: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        names = [_frame_parts(f)[0] for f in frames]
        if root not in names:
            continue
        frames = frames[names.index(root) + 1 :]
        count = int(count_text)
        total += count
        seen = set()
        for frame in frames:
            name, path = _frame_parts(frame)
            short = path.split("site-packages/")[-1].split("wt-bench/")[-1]
            key = f"{name} ({short})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
        if frames:
            name, path = _frame_parts(frames[-1])
            leaf_pkg[_package(path)] += count
            leaf_fn[f"{name} ({path.split('site-packages/')[-1]})"] += count
    if not total:
        return [f"  (no samples under {root})"]
    lines = [f"  {total} samples (500 Hz, on-CPU only)", "  inclusive, top frames:"]
    lines += [f"    {c / total:6.1%}  {k}" for k, c in inclusive.most_common(top)]
    lines.append("  self time by package (leaf frame):")
    lines += [f"    {c / total:6.1%}  {k}" for k, c in leaf_pkg.most_common()]
    lines.append("  self time, top leaf functions:")
    lines += [f"    {c / total:6.1%}  {k}" for k, c in leaf_fn.most_common(12)]
    return lines


# --------------------------------------------------------------------------- the runs


def make_app(database_url: str, inline_steps: int | None) -> Flask:
    app = Flask("hero_path")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 5},
        GENEVA_BROKER_URL=common.REDIS_URL,
    )
    if inline_steps is not None:
        app.config["GENEVA_INLINE_STEPS"] = inline_steps
    db.init_app(app)
    geneva.init_app(app)
    return app


def _reference(key: str) -> HeroCounter:
    """A reference to a counter row, as a request that loaded it holds one: a detached
    instance with its primary key (no query: ``create()`` and an ``UPDATE`` need only
    that), as ``geneva_bench.py`` hands its heroes to ``create()``."""
    hero = HeroCounter(wf_id=key)
    make_transient_to_detached(hero)
    return hero


def _loop_create(app: Flask, keys: list[str], heroes: bool) -> None:
    """Create one workflow per key, each in an app context of its own."""
    for key in keys:
        with app.app_context():
            if heroes:
                HeroWorkflow.create(hero=_reference(key), data={"wf": key})
            else:
                NoHeroWorkflow.create(data={"wf": key})
            db.session.commit()


def _loop_workload(app: Flask, keys: list[str]) -> None:
    """The workload without geneva: per key, the hero (a reference, added to the session
    without a query, as geneva hands each step a hero it has already read) is updated
    through ``db.session`` and committed five times, as the five steps' bodies do; the
    session keeps it across the commits (no ``SELECT`` to refresh it)."""
    for key in keys:
        with app.app_context():
            session = db.session()
            session.expire_on_commit = False
            hero = _reference(key)
            session.add(hero)
            for _ in range(STEPS):
                _bump(hero)
                session.commit()


def _measured_create_loop(app: Flask, keys: list[str], heroes: bool) -> None:
    _loop_create(app, keys, heroes)


def _first_executions(app: Flask, keys: list[str]) -> list[Any]:
    with app.app_context():
        wf, ex = geneva.Workflow, geneva.StepExecution
        rows = db.session.execute(
            sa.select(ex.id)
            .join(wf, wf.id == ex.workflow_id)
            .where(ex.state == "scheduled", wf.data["wf"].as_string().in_(keys))
            .order_by(ex.id)
        ).all()
        return [r[0] for r in rows]


def _measured_step_loop(app: Flask, execution_ids: list[Any]) -> None:
    actor = app.extensions["geneva"].step_actor
    for execution_id in execution_ids:
        actor.fn(execution_id)


def _connect_phases(meter: Meter) -> list[Callable[..., None]]:
    def claimed(sender: Any, **_: Any) -> None:
        meter.phase = "body"

    def performed(sender: Any, **_: Any) -> None:
        meter.phase = "finalize"

    def finalized(sender: Any, **_: Any) -> None:
        meter.phase = "claim"  # what follows belongs to the next step's claim

    signals.precondition_checked.connect(claimed, weak=False)
    signals.step_performed.connect(performed, weak=False)
    signals.step_finalized.connect(finalized, weak=False)
    return [claimed, performed, finalized]


def measure(database_url: str, args: argparse.Namespace, label: str) -> list[str]:
    app = make_app(database_url, args.inline_steps)
    report = [f"== {label} ({database_url.split('://')[0]}), {args.workflows} workflows each"]
    with app.app_context():
        db.drop_all()
        db.create_all()
        meter = Meter(db.engine)
        db.engine.dispose()  # every connection from now on goes through the meter's connect
    tag = uuid.uuid4().hex[:6]
    receivers = _connect_phases(meter)
    try:
        for heroes in (True, False):
            kind = "hero" if heroes else "no hero"
            keys = [f"{tag}-{kind[:2]}-{i:05d}" for i in range(args.workflows)]
            with app.app_context():
                db.session.execute(
                    HeroCounter.__table__.insert(), [{"wf_id": k, "n": 0} for k in keys]
                )
                db.session.commit()
            # warm-up: one create and one workflow's steps outside the measurement
            _loop_create(app, keys[:1], heroes)
            _measured_step_loop(app, _first_executions(app, keys[:1]))

            stem = Path(args.out) / f"{label}-{kind.replace(' ', '')}-create"
            prof = stem.with_suffix(".pyspy.txt")
            with (
                sampled(args.py_spy, prof),
                meter.measuring(len(keys) - 1) as tally,
                cprofiled(args.cprofile, stem.with_suffix(".pstats")),
            ):
                _measured_create_loop(app, keys[1:], heroes)
            report += _format(f"create() + commit, {kind}", tally, per="create")
            if args.py_spy:
                report += summarize_profile(prof, "_measured_create_loop")
            if args.cprofile:
                report += summarize_cprofile(stem.with_suffix(".pstats"), "_measured_create_loop")

            ids = _first_executions(app, keys[1:])
            stem = Path(args.out) / f"{label}-{kind.replace(' ', '')}-steps"
            prof = stem.with_suffix(".pyspy.txt")
            with (
                sampled(args.py_spy, prof),
                meter.measuring(len(ids) * STEPS) as tally,
                cprofiled(args.cprofile, stem.with_suffix(".pstats")),
            ):
                meter.phase = "claim"
                _measured_step_loop(app, ids)
            report += _format(
                f"steps as a worker runs them (step 1 from its message, then inline), {kind}",
                tally,
                per="step",
            )
            if args.py_spy:
                report += summarize_profile(prof, "_measured_step_loop")
            if args.cprofile:
                report += summarize_cprofile(stem.with_suffix(".pstats"), "_measured_step_loop")
            if heroes:
                # The same updates and commits without geneva: what the application's own
                # work costs, the part of a step geneva cannot save.
                with meter.measuring(len(ids) * STEPS) as tally:
                    _loop_workload(app, keys[1:])
                report += _format(
                    "the workload alone (each step's hero update through db.session and a "
                    "commit, no geneva)", tally, per="step",
                )[:3]
            expected = STEPS * 2 if heroes else STEPS  # the steps, then the workload alone
            with app.app_context():
                wrong = db.session.scalar(
                    sa.select(sa.func.count())
                    .select_from(HeroCounter)
                    .where(HeroCounter.wf_id.in_(keys[1:]), HeroCounter.n != expected)
                )
            if wrong:
                report.append(f"  !! {wrong} counters did not reach {expected}")
    finally:
        signals.precondition_checked.disconnect(receivers[0])
        signals.step_performed.disconnect(receivers[1])
        signals.step_finalized.disconnect(receivers[2])
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()
    return report


def reference_ms() -> float:
    """The machine's speed right now: best of 5 runs of ``sum(range(100000))``, in ms
    (1.24 ms on the quiet machine of docs/performance.md's 2026-12-03 figures)."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(20):
            sum(range(100000))
        best = min(best, (time.process_time() - started) / 20)
    return best * 1000


def _format(title: str, tally: Tally, per: str) -> list[str]:
    n = tally.ops
    statements = sum(tally.statements.values())
    kinds = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(tally.statements.items()))
    lines = [
        f"- {title}: per {per}",
        f"  round trips {tally.per_op(tally.round_trips):.2f} = statements "
        f"{statements / n:.2f} ({kinds}) + BEGIN {tally.begins / n:.2f} + COMMIT "
        f"{tally.commits / n:.2f} + ROLLBACK {tally.rollbacks / n:.2f}; Redis calls "
        f"{tally.redis_calls / n:.2f} ("
        + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(tally.redis_commands.items()))
        + ")",
        f"  CPU: Python {tally.python_cpu / n * 1000:.3f} ms"
        + (
            f", PostgreSQL backends {tally.server_cpu / n * 1000:.3f} ms"
            if tally.server_cpu is not None
            else ""
        )
        + f"; machine reference {tally.reference_ms:.2f} / {tally.reference_after_ms:.2f} ms"
        " before / after (1.24 ms quiet)",
    ]
    if per == "step":
        for phase in ("claim", "body", "finalize", "other"):
            counts = tally.phases.get(phase)
            if counts:
                desc = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items()))
                lines.append(f"  {phase:<8}: {sum(counts.values()) / n:.2f} ({desc})")
    lines.append("  statements seen (count per op, text start):")
    for text, count in tally.texts.items():
        lines.append(f"    {count / n:5.2f}  {text}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["pg", "sqlite", "both"], default="both")
    parser.add_argument("--workflows", type=int, default=300)
    parser.add_argument("--inline-steps", type=int, default=None)
    parser.add_argument("--py-spy", default=None, help="path of a py-spy binary to sample with")
    parser.add_argument(
        "--cprofile", action="store_true", help="profile the measured loops (CPU time)"
    )
    parser.add_argument("--out", default=None, help="where the profiles go")
    args = parser.parse_args()
    args.out = args.out or tempfile.mkdtemp(prefix="hero-path-")
    report = [
        f"hero_path.py, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"GENEVA_INLINE_STEPS={args.inline_steps if args.inline_steps is not None else 'default'}"
    ]
    with common.private_redis() as url:
        os.environ["BENCH_REDIS_URL"] = common.REDIS_URL = url
        if args.db in ("sqlite", "both"):
            with tempfile.TemporaryDirectory() as scratch:
                report += measure(f"sqlite:///{Path(scratch) / 'hero.sqlite3'}", args, "sqlite")
        if args.db in ("pg", "both"):
            name = f"geneva_hero_path_{uuid.uuid4().hex[:8]}"
            common.ensure_database(name)
            try:
                report += measure(common.sqlalchemy_url(name), args, "postgresql")
            finally:
                common.drop_database(name)
    print("\n".join(report))
    if args.py_spy or args.cprofile:
        print(f"(profiles in {args.out})")


if __name__ == "__main__":
    main()
