"""Store parity: every transition, applied through each database's store, writes the same
rows.

PostgreSQL's store writes the hot outcomes as one combined statement, SQLite's and
MariaDB's one statement at a time; all must leave the workflow, its executions and the
outbox alike. Each case runs on a SQLite, a PostgreSQL and a MariaDB database in the same
test, from the same starting point and at the same ``now``, and the rows are compared
(ids and absolute times left out, times kept relative to ``now``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import ExceptionPolicy, machine, step
from flask_geneva.flow import CancelSignal, FinishSignal, PauseSignal, ReattemptSignal, SkipSignal
from flask_geneva.machine import OperatorAction
from flask_geneva.runs import following
from flask_geneva.store import MessageOptions, Target, store_for
from flask_geneva.timeutil import as_utc, utcnow
from tests.conftest import make_app
from tests.models import User, db, geneva


class ParityWorkflow(geneva.Workflow):
    @step
    def first(self) -> None: ...

    @step
    def second(self) -> None: ...

    @step(wait=timedelta(minutes=5))
    def third(self) -> None: ...


OPTIONS = MessageOptions("geneva", 3, 1500)
FIRST_AFTER = following(ParityWorkflow._geneva_definition, "first")


def _finalize(transition: machine.Transition, *, claim_next: bool = False) -> Callable[..., Any]:
    """A case: the first step ran and ends with ``transition``."""

    def apply(session: Any, workflow: Any, execution: Any, now: Any) -> None:
        store = store_for(geneva, session)
        store.claim(session, execution.id, workflow.id, "first", now, "message-1")
        error = RuntimeError("boom") if transition.records_error else None
        plan = machine.plan(transition, "first", FIRST_AFTER)
        target = Target(workflow.id, execution.id, "first", 0)
        applied = store.finalize(session, target, plan, now, options=OPTIONS, error=error,
                                 claim_next=claim_next, message_id="message-1")
        assert applied is not None

    return apply


def _finalize_with_hero(*, hero_gone: bool) -> Callable[..., Any]:
    """A case: the first step returned, and the second is claimed in the same
    transaction if the workflow's hero is still there (an inline run's finalize)."""

    def apply(session: Any, workflow: Any, execution: Any, now: Any) -> None:
        store = store_for(geneva, session)
        store.claim(session, execution.id, workflow.id, "first", now, "message-1")
        if hero_gone:
            session.execute(sa.delete(User).where(User.id == int(workflow.hero_id)))
        plan = machine.plan(machine.after_body(None), "first", FIRST_AFTER)
        target = Target(workflow.id, execution.id, "first", 0)
        hero_class = store.joinable_hero(workflow.hero_type)
        if hero_class is None:  # MariaDB: no lock reads the hero; it is read apart
            there = session.get(User, int(workflow.hero_id)) is not None
            applied = store.finalize(session, target, plan, now, options=OPTIONS,
                                     claim_next=there, message_id="message-1")
        else:
            done = store.finalize_with_hero(session, target, plan, now, options=OPTIONS,
                                            message_id="message-1", hero_class=hero_class)
            assert done is not None
            applied, hero = done
            assert (hero is None) == hero_gone
            assert hero is None or hero["email"] == "parity@example.com"
        assert applied is not None and applied.new_execution_id is not None

    return apply


def _operator(action: OperatorAction, *, kept: bool) -> Callable[..., Any]:
    """A case: an operator's action on the workflow (its execution kept or not)."""

    def apply(session: Any, workflow: Any, execution: Any, now: Any) -> None:
        store = store_for(geneva, session)
        if not kept:  # the step failed and paused the workflow: nothing is scheduled
            store.claim(session, execution.id, workflow.id, "first", now, None)
            failed = machine.after_failure(ExceptionPolicy("pause"))
            store.finalize(session, Target(workflow.id, execution.id, "first", 0),
                           machine.plan(failed, "first", FIRST_AFTER), now, options=OPTIONS,
                           error=RuntimeError("boom"))
        elif action == OperatorAction.RESUME:
            store.apply(session, Target(workflow.id, execution.id, "first", 1),
                        machine.plan(machine.Transition(machine.Move.HOLD), "first", None),
                        now, options=OPTIONS)
        locked = store.lock_workflow(session, workflow.id)
        state = str(locked.state)
        transition = machine.operator_transition(action, state, kept_execution=kept)
        after = FIRST_AFTER if transition.move == machine.Move.ADVANCE else None
        store.apply(
            session,
            Target(workflow.id, execution.id if kept else None, "first",
                   locked.execution_count),
            machine.plan(transition, "first", after),
            now,
            options=OPTIONS,
            release_at=now - timedelta(seconds=1),
        )

    return apply


CASES: dict[str, Callable[..., Any]] = {
    "returns": _finalize(machine.after_body(None)),
    "returns-claiming-next": _finalize(machine.after_body(None), claim_next=True),
    "returns-claiming-next-with-hero": _finalize_with_hero(hero_gone=False),
    "returns-hero-gone": _finalize_with_hero(hero_gone=True),
    "reattempt": _finalize(machine.after_body(ReattemptSignal(30))),
    "skip": _finalize(machine.after_body(SkipSignal())),
    "cancel": _finalize(machine.after_body(CancelSignal())),
    "pause": _finalize(machine.after_body(PauseSignal())),
    "finish": _finalize(machine.after_body(FinishSignal())),
    "failed-pause": _finalize(machine.after_failure(ExceptionPolicy("pause"))),
    "failed-cancel": _finalize(machine.after_failure(ExceptionPolicy("cancel"))),
    "failed-skip": _finalize(machine.after_failure(ExceptionPolicy("skip"))),
    "failed-reattempt": _finalize(machine.after_failure(ExceptionPolicy("reattempt", wait=9))),
    "recovered-reattempt": _finalize(machine.recovery("reattempt")),
    "recovered-cancel": _finalize(machine.recovery("cancel")),
    "conflict-retry": _finalize(machine.conflict_retry()),
    "operator-cancel-kept": _operator(OperatorAction.CANCEL, kept=True),
    "operator-cancel-failed": _operator(OperatorAction.CANCEL, kept=False),
    "operator-skip-kept": _operator(OperatorAction.SKIP, kept=True),
    "operator-skip-failed": _operator(OperatorAction.SKIP, kept=False),
    "operator-pause": _operator(OperatorAction.PAUSE, kept=True),
    "operator-resume-kept": _operator(OperatorAction.RESUME, kept=True),
    "operator-resume-failed": _operator(OperatorAction.RESUME, kept=False),
}


@pytest.fixture
def apps(
    tmp_path: Path, pg_database_url: str, mariadb_database_url: str
) -> Iterator[dict[str, Flask]]:
    built = {
        "sqlite": make_app(f"sqlite:///{tmp_path / 'parity.sqlite3'}"),
        "postgresql": make_app(pg_database_url),
        "mariadb": make_app(mariadb_database_url),
    }
    for app in built.values():
        with app.app_context():
            db.drop_all()
            db.create_all()
    yield built
    for app in built.values():
        with app.app_context():
            db.session.remove()
            db.drop_all()
            for engine in db.engines.values():
                engine.dispose()


def _rows_after(app: Flask, case: Callable[..., Any]) -> dict[str, Any]:
    with app.app_context():
        hero = User(email="parity@example.com")
        db.session.add(hero)
        workflow = ParityWorkflow.create(hero=hero)
        db.session.commit()
        execution = workflow.current_execution
        now = utcnow()
        case(db.session, workflow, execution, now)
        db.session.commit()
        return _snapshot(workflow.id, now)


def _relative(value: Any, now: Any) -> Any:
    return None if value is None else as_utc(value) - now


def _snapshot(workflow_id: Any, now: Any) -> dict[str, Any]:
    workflows = geneva.Workflow.__table__
    executions = geneva.StepExecution.__table__
    outbox = geneva.OutboxMessage.__table__
    wf = db.session.execute(sa.select(workflows).where(workflows.c.id == workflow_id)).one()
    rows = db.session.execute(
        sa.select(executions)
        .where(executions.c.workflow_id == workflow_id)
        .order_by(executions.c.sequence)
    ).all()
    ids = {row.id: row.sequence for row in rows}
    queued = db.session.execute(
        sa.select(outbox).where(outbox.c.workflow_id == workflow_id)
    ).all()
    return {
        "workflow": (
            wf.state, wf.current_step_name, wf.next_step_name, wf.previous_step_name,
            wf.execution_count, wf.transitioned_at is not None,
        ),
        "executions": [
            (
                row.sequence, row.step_name, row.state, row.outcome, row.message_id,
                row.error_class_name, row.error_message, row.started_at is not None,
                row.finished_at is not None,
                _relative(row.scheduled_for, now) if row.sequence > 1 else None,
            )
            for row in rows
        ],
        "outbox": sorted(
            (ids[row.execution_id], row.queue_name, row.priority, row.time_limit_ms,
             row.published_at is not None, row.publish_count)
            for row in queued
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_each_store_writes_the_same_rows(apps: dict[str, Flask], name: str) -> None:
    case = CASES[name]
    sqlite = _rows_after(apps["sqlite"], case)
    postgresql = _rows_after(apps["postgresql"], case)
    mariadb = _rows_after(apps["mariadb"], case)
    assert sqlite == postgresql
    assert mariadb == postgresql
    # And the case did something: the workflow left where create() put it.
    assert sqlite["workflow"] != ("ready", None, "first", None, 1, False)
