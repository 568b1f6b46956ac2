"""How fast the status UI answers with a million workflows (run by hand, never in CI).

Seeds a dedicated PostgreSQL database (``geneva_ui_scale`` by default) with
``--workflows`` workflows (1,000,000) and five executions each (5,000,000), written by
``INSERT ... SELECT FROM generate_series`` on the server, then times every status page
and its JSON twin through Flask's test client (template rendering included), and runs
``EXPLAIN (ANALYZE, BUFFERS)`` on every SQL statement each page issues to check that no
plan reads the geneva tables with a sequential scan.

    .venv/bin/python benchmarks/ui_scale.py                 # seed once, then measure
    .venv/bin/python benchmarks/ui_scale.py --reseed        # drop and seed again
    .venv/bin/python benchmarks/ui_scale.py --workflows 100000 --rounds 50
    .venv/bin/python benchmarks/ui_scale.py --report /tmp/ui_scale.md

The data (per thousand workflows): 860 finished, 50 canceled, 60 ready (one in a
hundred of them overdue by 20 minutes, the rest due in one to two days), 25 paused (two
thirds on a failed step with its error and backtrace, one third paused by an operator
with its scheduled step kept), 5 performing (one in ten stuck for two hours). One
workflow in forty has an earlier failed, reattempted attempt. Heroes: ``User`` (four
workflows each) and ``Document``. ``created_at`` is spread over the last year.

Environment: ``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432``).
Seeding a million workflows takes a few minutes and about 3 GB of disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_geneva import Geneva, step

SERVER_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
GENEVA_TABLES = ("geneva_workflows", "geneva_step_executions", "geneva_outbox")
#: Five workflow classes of five steps each: (class name, step names).
CLASSES = [
    ("SubscriptionRenewalWorkflow", ["notify", "charge", "activate", "receipt", "follow_up"]),
    ("DocumentProcessingWorkflow", ["extract", "analyze", "summarize", "index", "notify"]),
    ("WebhookDeliveryWorkflow", ["step_1", "step_2", "step_3", "step_4", "give_up"]),
    ("OnboardingWorkflow", ["welcome", "verify", "tour", "feedback", "survey"]),
    ("InvoiceWorkflow", ["draft", "send", "remind", "collect", "close"]),
]
BUDGET_MS = 100.0

db = SQLAlchemy()
geneva = Geneva(db=db)


def _noop(workflow: Any) -> None:
    """The step bodies never run here: the benchmark only reads."""


class SubscriptionRenewalWorkflow(geneva.Workflow):
    allow_multiple = True
    for _step in CLASSES[0][1]:
        step(_noop, name=_step, wait=timedelta(minutes=1))


class DocumentProcessingWorkflow(geneva.Workflow):
    allow_multiple = True
    for _step in CLASSES[1][1]:
        step(_noop, name=_step, wait=timedelta(minutes=1))


class WebhookDeliveryWorkflow(geneva.Workflow):
    allow_multiple = True
    for _step in CLASSES[2][1]:
        step(_noop, name=_step, wait=timedelta(minutes=1))


class OnboardingWorkflow(geneva.Workflow):
    allow_multiple = True
    for _step in CLASSES[3][1]:
        step(_noop, name=_step, wait=timedelta(minutes=1))


class InvoiceWorkflow(geneva.Workflow):
    allow_multiple = True
    for _step in CLASSES[4][1]:
        step(_noop, name=_step, wait=timedelta(minutes=1))


# ------------------------------------------------------------------------------- seeding


def _admin(statement: str) -> None:
    engine = sa.create_engine(f"{SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


def _class_case(column: str) -> str:
    """SQL: the class name of workflow ``i`` (``i % 5``)."""
    whens = " ".join(f"WHEN {k} THEN '{name}'" for k, (name, _) in enumerate(CLASSES))
    return f"(CASE {column} % 5 {whens} END)"


def _step_case(i: str, k: str) -> str:
    """SQL: the name of step ``k`` (1..5) of workflow ``i``'s class."""
    rows = ", ".join(
        "ARRAY[" + ", ".join(f"'{name}'" for name in steps) + "]" for _, steps in CLASSES
    )
    return f"((ARRAY[{rows}])[{i} % 5 + 1][{k}])"


#: ``r`` is a well-mixed number 0..999 per workflow; it decides the state.
STATE_SQL = """
CASE
  WHEN r < 860 THEN 'finished'
  WHEN r < 910 THEN 'canceled'
  WHEN r < 970 THEN 'ready'
  WHEN r < 995 THEN 'paused'
  ELSE 'performing'
END
"""

SEED_WORKFLOWS = """
INSERT INTO geneva_workflows (id, workflow_class, state, hero_type, hero_id, data,
    next_step_name, current_step_name, previous_step_name, allow_multiple, execution_count,
    created_at, updated_at, transitioned_at)
SELECT i, {klass}, st,
    CASE WHEN i % 5 = 1 THEN 'Document' ELSE 'User' END,
    (i / 5)::text,
    json_build_object('n', i),
    CASE WHEN st IN ('ready', 'paused') THEN {step5} END,
    CASE WHEN st = 'performing' THEN {step5} END,
    CASE WHEN st IN ('finished') THEN {step5} ELSE {step4} END,
    true, 5, created, created + interval '5 minutes',
    CASE WHEN st IN ('finished', 'canceled', 'paused') THEN created + interval '5 minutes' END
FROM (
    SELECT i, ({state}) AS st,
        now() - (CAST(:n AS bigint) - i) * interval '30 seconds' - interval '1 day' AS created
    FROM (
        SELECT i, (i * 7919) % 1000 AS r
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
    ) AS numbered
) AS w
"""

SEED_EXECUTIONS = """
INSERT INTO geneva_step_executions (id, workflow_id, sequence, step_name, state, outcome,
    scheduled_for, started_at, finished_at, error_class_name, error_message, error_backtrace,
    message_id, created_at)
SELECT (w.id - 1) * 5 + k, w.id, k, {stepk},
    CASE
      WHEN k < 5 AND k = 2 AND w.id % 40 = 0 THEN 'failed'
      WHEN k < 5 THEN 'completed'
      WHEN w.state = 'finished' THEN 'completed'
      WHEN w.state = 'canceled' THEN 'canceled'
      WHEN w.state = 'ready' THEN 'scheduled'
      WHEN w.state = 'performing' THEN 'in_progress'
      WHEN w.id % 3 = 0 THEN 'scheduled'
      ELSE 'failed'
    END,
    CASE
      WHEN k < 5 AND k = 2 AND w.id % 40 = 0 THEN 'reattempted'
      WHEN k < 5 THEN 'success'
      WHEN w.state = 'finished' THEN 'success'
      WHEN w.state = 'canceled' THEN 'canceled'
      WHEN w.state = 'paused' AND w.id % 3 <> 0 THEN 'failed'
    END,
    CASE
      WHEN k = 5 AND w.state = 'ready' AND (w.id / 1000) % 100 = 0
        THEN now() - interval '20 minutes'
      WHEN k = 5 AND w.state = 'ready'
        THEN now() + interval '1 day' + (w.id % 1000) * interval '1 minute'
      WHEN k = 5 AND w.state = 'performing' THEN now() - interval '3 hours'
      ELSE w.created_at + (k - 1) * interval '1 minute'
    END,
    CASE
      WHEN k = 5 AND w.state IN ('ready') THEN NULL
      WHEN k = 5 AND w.state = 'paused' AND w.id % 3 = 0 THEN NULL
      WHEN k = 5 AND w.state = 'performing' AND (w.id / 1000) % 10 = 0
        THEN now() - interval '2 hours'
      WHEN k = 5 AND w.state = 'performing' THEN now() - interval '20 seconds'
      ELSE w.created_at + (k - 1) * interval '1 minute' + interval '50 milliseconds'
    END,
    CASE
      WHEN k = 5 AND w.state IN ('ready', 'performing') THEN NULL
      WHEN k = 5 AND w.state = 'paused' AND w.id % 3 = 0 THEN NULL
      ELSE w.created_at + (k - 1) * interval '1 minute' + interval '170 milliseconds'
    END,
    CASE
      WHEN k = 2 AND w.id % 40 = 0 THEN 'payments.GatewayTimeout'
      WHEN k = 5 AND w.state = 'paused' AND w.id % 3 <> 0 THEN 'payments.PaymentDeclined'
    END,
    CASE
      WHEN k = 2 AND w.id % 40 = 0 THEN 'no answer from the gateway in 30 s'
      WHEN k = 5 AND w.state = 'paused' AND w.id % 3 <> 0
        THEN 'card declined (code 51) for invoice ' || w.id
    END,
    CASE
      WHEN (k = 2 AND w.id % 40 = 0) OR (k = 5 AND w.state = 'paused' AND w.id % 3 <> 0)
        THEN 'Traceback (most recent call last):' || chr(10) ||
             '  File "app/payments.py", line 42, in charge' || chr(10) ||
             '    gateway.charge(invoice)' || chr(10) || 'payments.PaymentDeclined'
    END,
    md5(w.id::text || '-' || k),
    w.created_at + (k - 1) * interval '1 minute'
FROM geneva_workflows AS w CROSS JOIN generate_series(1, 5) AS k
WHERE w.id BETWEEN :lo AND :hi
"""

SEED_OUTBOX = """
INSERT INTO geneva_outbox (execution_id, workflow_id, queue_name, priority, available_at,
    publish_count, created_at)
SELECT e.id, e.workflow_id, 'geneva', 0, e.scheduled_for, 0, e.created_at
FROM geneva_step_executions AS e JOIN geneva_workflows AS w ON w.id = e.workflow_id
WHERE e.state = 'scheduled' AND w.state = 'ready'
"""


def seed(app: Flask, workflows: int, chunk: int = 100_000) -> None:
    """Create the tables and fill them; then VACUUM ANALYZE (visibility map, statistics)."""
    with app.app_context():
        db.drop_all()
        db.create_all()
        engine = db.engine
        klass = _class_case("i")
        step4, step5 = _step_case("i", "4"), _step_case("i", "5")
        workflows_sql = SEED_WORKFLOWS.format(
            klass=klass, step4=step4, step5=step5, state=STATE_SQL
        )
        executions_sql = SEED_EXECUTIONS.format(stepk=_step_case("w.id", "k"))
        started = time.perf_counter()
        for lo in range(1, workflows + 1, chunk):
            hi = min(lo + chunk - 1, workflows)
            with engine.begin() as connection:
                connection.execute(sa.text(workflows_sql), {"n": workflows, "lo": lo, "hi": hi})
                connection.execute(sa.text(executions_sql), {"lo": lo, "hi": hi})
            _log(f"seeded workflows {lo:,}..{hi:,} ({time.perf_counter() - started:.0f} s)")
        with engine.begin() as connection:
            connection.execute(sa.text(SEED_OUTBOX))
            for table in ("geneva_workflows", "geneva_step_executions"):
                connection.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in GENEVA_TABLES:
                connection.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        _log(f"seeded and vacuumed in {time.perf_counter() - started:.0f} s")


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring


@dataclass
class PageResult:
    """Timings and plan findings of one URL."""

    name: str
    url: str
    times_ms: list[float] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def seq_scans(self) -> list[str]:
        return [scan for q in self.queries for scan in q["seq_scans"]]


@contextmanager
def captured_statements(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Collect every SQL statement (and its parameters) sent while the block runs."""
    statements: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def explain(engine: sa.Engine, statement: str, parameters: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) one statement; summarise the scans it makes."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters)
        plan = cursor.fetchone()[0]
        raw.rollback()
    finally:
        raw.close()
    if isinstance(plan, str):
        plan = json.loads(plan)
    top = plan[0]
    scans = []
    seq_scans = []
    for node in _walk(top["Plan"]):
        kind = node["Node Type"]
        relation = node.get("Relation Name")
        if kind == "Seq Scan" and relation in GENEVA_TABLES:
            seq_scans.append(relation)
        if "Index Name" in node:
            scans.append(f"{kind} {node['Index Name']}")
        elif kind == "Seq Scan":
            scans.append(f"Seq Scan {relation}")
    return {
        "sql": " ".join(statement.split())[:160],
        "execution_ms": top["Execution Time"],
        "planning_ms": top["Planning Time"],
        "scans": scans,
        "seq_scans": seq_scans,
    }


def measure(
    app: Flask, pages: list[tuple[str, str]], rounds: int, warmup: int = 3
) -> list[PageResult]:
    """Time each page ``rounds`` times (after ``warmup`` requests), then explain its SQL."""
    client = app.test_client()
    results = []
    for name, url in pages:
        result = PageResult(name, url)
        for i in range(warmup + rounds):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
            if i >= warmup:
                result.times_ms.append(elapsed)
        with app.app_context():
            engine = db.engine
        with captured_statements(engine) as statements:
            client.get(url)
        for statement, parameters in statements:
            if statement.lstrip().upper().startswith("EXPLAIN"):
                continue  # the planner estimate of a capped count: no table is read
            result.queries.append(explain(engine, statement, parameters))
        _log(
            f"{name:<38} median {result.median:7.1f} ms  p95 {result.p95:7.1f} ms  "
            f"{len(result.queries)} queries  seq scans: {result.seq_scans or 'none'}"
        )
        results.append(result)
    return results


def pick_pages(app: Flask, workflows: int) -> list[tuple[str, str]]:
    """The URLs to time: every page, deep and filtered lists, and each JSON twin."""
    with app.app_context():
        session = db.session
        wf = geneva.Workflow

        def one(state: str) -> Any:
            return session.scalar(
                sa.select(wf.id).where(wf.state == state, wf.id > workflows // 2).limit(1)
            )

        finished, paused, ready, performing = (
            one(s) for s in ("finished", "paused", "ready", "performing")
        )
        middle = session.execute(
            sa.select(wf.created_at, wf.id).where(wf.id == workflows // 2)
        ).one()
        from flask_geneva.queries import Cursor

        deep = Cursor(middle.created_at, middle.id).encode()
        session.remove()
    hero = f"User/{workflows // 10}"
    html = [
        ("overview", "/geneva/"),
        ("list (newest)", "/geneva/workflows"),
        ("list, page in the middle", f"/geneva/workflows?before={deep}"),
        ("list state=paused", "/geneva/workflows?state=paused"),
        ("list state=finished, deep", f"/geneva/workflows?state=finished&before={deep}"),
        ("list workflow=Invoice", "/geneva/workflows?workflow=InvoiceWorkflow"),
        (
            "list workflow=Invoice, deep",
            f"/geneva/workflows?workflow=InvoiceWorkflow&before={deep}",
        ),
        ("list workflow+state=ready", "/geneva/workflows?workflow=InvoiceWorkflow&state=ready"),
        ("list hero_type=Document", "/geneva/workflows?hero_type=Document"),
        ("list hero=User:id", f"/geneva/workflows?hero=User:{workflows // 10}"),
        ("list limit=100 (the most)", "/geneva/workflows?limit=100"),
        ("workflow (finished)", f"/geneva/workflows/{finished}"),
        ("workflow (paused, error)", f"/geneva/workflows/{paused}"),
        ("workflow (ready)", f"/geneva/workflows/{ready}"),
        ("workflow (performing)", f"/geneva/workflows/{performing}"),
        ("hero", f"/geneva/heroes/{hero}"),
    ]
    twins = [
        (f"{name} ?format=json", url + ("&" if "?" in url else "?") + "format=json")
        for name, url in html
    ]
    return [page for pair in zip(html, twins, strict=True) for page in pair]


def exact_counts_ms(app: Flask) -> float:
    """What an exact ``count(*) ... GROUP BY state`` over the whole table costs."""
    with app.app_context():
        started = time.perf_counter()
        db.session.execute(
            sa.text("SELECT state, count(*) FROM geneva_workflows GROUP BY state")
        ).all()
        elapsed = (time.perf_counter() - started) * 1000
        db.session.remove()
    return elapsed


def report(results: list[PageResult], workflows: int, exact_ms: float, frozen: bool) -> str:
    """A Markdown report: timings, then the plans."""
    lines = [
        f"## {workflows:,} workflows, {workflows * 5:,} executions"
        + (" (gc.freeze())" if frozen else ""),
        "",
        "| page | median ms | p95 ms | SQL statements | seq scans of geneva tables |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.median:.1f} | {r.p95:.1f} | {len(r.queries)} | "
            f"{', '.join(r.seq_scans) or 'none'} |"
        )
    slowest = max(results, key=lambda r: r.p95)
    lines += [
        "",
        f"Slowest p95: {slowest.name} at {slowest.p95:.1f} ms (budget {BUDGET_MS:.0f} ms). "
        f"An exact `count(*) GROUP BY state` over the table took {exact_ms:.0f} ms.",
        "",
        "### Plans (EXPLAIN ANALYZE of each statement, HTML pages)",
        "",
    ]
    for r in results:
        if r.name.endswith("?format=json"):
            continue
        lines.append(f"**{r.name}** `{r.url}`")
        lines.append("")
        for q in r.queries:
            scans = "; ".join(dict.fromkeys(q["scans"])) or "no table scan"
            lines.append(f"- {q['execution_ms']:.2f} ms: {scans}")
        lines.append("")
    return "\n".join(lines)


def screenshot(app: Flask, path: str, target: Path) -> None:
    """Serve ``app`` on 127.0.0.1 and save a full-page chromium screenshot of ``path``."""
    import tempfile
    import threading

    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path="/usr/bin/chromium",
                headless=True,
                viewport={"width": 1440, "height": 900},
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}{path}")
            page.screenshot(path=str(target), full_page=True)
            context.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    _log(f"saved {target}")


def make_app(database: str) -> Flask:
    app = Flask("ui_scale")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"{SERVER_URL}/{database}",
        TESTING=True,
        GENEVA_BROKER_URL="memory://",
    )
    db.init_app(app)
    geneva.init_app(app)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1_000_000)
    parser.add_argument("--database", default="geneva_ui_scale")
    parser.add_argument("--reseed", action="store_true", help="drop the data and seed again")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--report", type=Path, help="also write the Markdown report here")
    parser.add_argument("--only", help="time only the pages whose name contains this")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() before timing, as a pre-forking server would: full collections "
        "of the startup heap otherwise add ~50 ms to whichever request they land on",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        help="also save the overview, as Debian's chromium renders it, to this PNG file",
    )
    args = parser.parse_args(argv)

    engine = sa.create_engine(f"{SERVER_URL}/postgres")
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": args.database}
        )
    engine.dispose()
    if not exists:
        _admin(f'CREATE DATABASE "{args.database}"')
    app = make_app(args.database)
    with app.app_context():
        present = db.session.scalar(sa.text("SELECT to_regclass('geneva_workflows') IS NOT NULL"))
        count = (
            db.session.scalar(sa.text("SELECT max(id) FROM geneva_workflows")) if present else None
        )
        db.session.remove()
    if args.reseed or count != args.workflows:
        _log(f"seeding {args.workflows:,} workflows into {args.database} ...")
        seed(app, args.workflows)
    if args.screenshot:
        screenshot(app, "/geneva/", args.screenshot)
    pages = pick_pages(app, args.workflows)
    if args.only:
        pages = [page for page in pages if args.only in page[0]]
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    results = measure(app, pages, args.rounds)
    text = report(results, args.workflows, exact_counts_ms(app), args.gc_freeze)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    over = [r for r in results if r.p95 > BUDGET_MS]
    scans = [r for r in results if r.seq_scans]
    return 1 if over or scans else 0


if __name__ == "__main__":
    sys.exit(main())
