"""What one plain step costs: SQL statements, commits and CPU milliseconds.

Not a test and not a benchmark *system* (it has no ``SYSTEM``, so ``run.py`` ignores it):
run it by hand, with the project's virtualenv::

    .venv/bin/python benchmarks/step_cost.py
    .venv/bin/python benchmarks/step_cost.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/test

A "plain step" is a step whose body does nothing, run the way a worker runs a message:
``execute_step(geneva, execution_id)`` in a fresh app context. Every statement the
engine sends and every commit is counted with SQLAlchemy engine events
(``before_cursor_execute`` and ``commit``). The steps in the middle of a workflow (they
schedule the next step) and the last step (it finishes the workflow) are reported apart,
and so are the middle steps of a worker's inline run (``GENEVA_INLINE_STEPS``): claimed
in the finalize of the step before, each claims the next in its own finalize.
CPU is measured around the same calls: the Python process's CPU time
(``time.process_time``) and, on PostgreSQL, the CPU time of every PostgreSQL server
process on the machine (read from ``/proc``: only when the server runs here; the kernel
counts it in 10 ms ticks, so only the mean over many steps means anything, on an
otherwise idle machine). The figures go into ``docs/step-cost.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from flask_geneva import Geneva, step
from flask_geneva.executor import execute_step, run_claimed

#: Steps per workflow: the first ones schedule a successor, the last finishes.
STEPS = 10
#: Workflows run per database (their figures are averaged).
WORKFLOWS = 30

db = SQLAlchemy()
geneva = Geneva(db=db)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "step_cost_accounts"

    id = sa.Column(sa.Integer, primary_key=True)


class PlainWorkflow(geneva.Workflow):
    """Ten steps that do nothing: what is left is geneva's own cost."""

    for _ in range(STEPS):
        step(lambda wf: None)


@dataclass
class StepCost:
    statements: int = 0
    commits: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    #: CPU seconds of this process, and of the database's server processes (None when
    #: they cannot be read).
    python_cpu: float = 0.0
    server_cpu: float | None = None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _server_cpu(engine: sa.Engine) -> float | None:
    """CPU seconds used so far by every PostgreSQL server process on this machine (the
    backends and the WAL writer alike); None for another database, or if unreadable."""
    if engine.dialect.name != "postgresql":
        return None
    total = 0.0
    found = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                head, tail = stat.read().rsplit(")", 1)
        except OSError:
            continue
        if not head.endswith("(postgres"):
            continue
        fields = tail.split()
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        found = True
    return total if found else None


class Meter:
    """Counts what an engine is asked to do while it is armed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.armed = False
        self.cost = StepCost()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.armed:
            self.cost.statements += 1
            self.cost.kinds[statement.split(None, 1)[0].upper()] += 1

    def _commit(self, conn: Any) -> None:
        if self.armed:
            self.cost.commits += 1

    def measure(self, action: Any) -> StepCost:
        self.cost = StepCost()
        server_before = _server_cpu(self.engine)
        started = time.process_time()
        self.armed = True
        try:
            action()
        finally:
            self.armed = False
        self.cost.python_cpu = time.process_time() - started
        server_after = _server_cpu(self.engine)
        if server_before is not None and server_after is not None:
            self.cost.server_cpu = server_after - server_before
        return self.cost


def _scheduled_id(workflow_id: Any) -> Any:
    model = geneva.StepExecution
    return db.session.scalar(
        sa.select(model.id).where(model.workflow_id == workflow_id, model.state == "scheduled")
    )


def measure(database_url: str) -> dict[str, list[StepCost]]:
    """Run WORKFLOWS plain workflows one message per step, then WORKFLOWS more as a
    worker's inline run; return the costs of each kind of step."""
    app = Flask("step_cost")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, GENEVA_BROKER_URL="memory://")
    db.init_app(app)
    geneva.init_app(app)
    costs: dict[str, list[StepCost]] = {"middle": [], "last": [], "inline": []}
    with app.app_context():
        db.drop_all()
        db.create_all()
        meter = Meter(db.engine)
        for _ in range(WORKFLOWS):
            workflow_id = _create_workflow()
            for index in range(STEPS):
                execution_id = _scheduled_id(workflow_id)
                db.session.remove()

                def run_message(execution_id: Any = execution_id) -> None:
                    with app.app_context():  # as the worker runs each message
                        result = execute_step(geneva, execution_id)
                        assert result is not None and result.exception is None

                cost = meter.measure(run_message)
                costs["last" if index == STEPS - 1 else "middle"].append(cost)
        for _ in range(WORKFLOWS):
            execution_id = _scheduled_id(_create_workflow())
            db.session.remove()
            results: list[Any] = []

            def run_inline(execution_id: Any = execution_id, results: list[Any] = results) -> None:
                with app.app_context():  # each step in its own context, as the worker does
                    if results and results[-1].claimed_next is not None:
                        result = run_claimed(geneva, results[-1].claimed_next, inline_next=True)
                    else:
                        result = execute_step(geneva, execution_id, inline_next=True)
                    assert result is not None and result.exception is None
                    results.append(result)

            for index in range(STEPS):
                cost = meter.measure(run_inline)
                if 0 < index < STEPS - 1:  # claimed by the step before, claims the next
                    costs["inline"].append(cost)
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    return costs


def _create_workflow() -> Any:
    account = Account()
    db.session.add(account)
    workflow = PlainWorkflow.create(hero=account)
    db.session.commit()
    workflow_id = workflow.id
    db.session.remove()
    return workflow_id


def _summary(costs: list[StepCost]) -> str:
    statements = statistics.mean(c.statements for c in costs)
    commits = statistics.mean(c.commits for c in costs)
    kinds: Counter[str] = Counter()
    for cost in costs:
        kinds.update(cost.kinds)
    per_kind = ", ".join(f"{kind} {count / len(costs):g}" for kind, count in sorted(kinds.items()))
    cpu = f"{statistics.mean(c.python_cpu for c in costs) * 1000:.2f} ms CPU in Python"
    server = [c.server_cpu for c in costs if c.server_cpu is not None]
    if len(server) == len(costs):
        cpu += f", {statistics.mean(server) * 1000:.2f} ms in PostgreSQL"
    return f"{statements:g} statements ({per_kind}), {commits:g} commits; {cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server URL; a scratch database is created on it and dropped",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sqlite_url = f"sqlite:///{Path(scratch) / 'step_cost.sqlite3'}"
        results = {"SQLite": measure(sqlite_url)}
    admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"geneva_step_cost_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        pg_url = sa.engine.make_url(args.pg).set(database=name)
        results["PostgreSQL"] = measure(pg_url.render_as_string(hide_password=False))
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    for database, costs in results.items():
        print(f"{database}:")
        print(f"  a plain step that schedules the next: {_summary(costs['middle'])}")
        print(f"  the last step (finishes the workflow): {_summary(costs['last'])}")
        print(f"  a plain step of an inline run (claims the next): {_summary(costs['inline'])}")


if __name__ == "__main__":
    main()
