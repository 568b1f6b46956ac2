"""Small readers the tests share: what a workflow's executions and notes look like now."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import sqlalchemy as sa
from flask import Flask

from tests.models import Note, db, geneva


def history(workflow: Any) -> list[tuple[str, str, str | None]]:
    """``(step_name, state, outcome)`` of every execution of ``workflow``, oldest first."""
    model = geneva.StepExecution
    rows = db.session.execute(
        sa.select(model.step_name, model.state, model.outcome)
        .where(model.workflow_id == workflow.id)
        .order_by(model.sequence)
    )
    return [
        (name, str(state), None if outcome is None else str(outcome))
        for name, state, outcome in rows
    ]


def executions(workflow: Any) -> list[Any]:
    """Every execution of ``workflow``, oldest first, loaded fresh."""
    model = geneva.StepExecution
    return list(
        db.session.scalars(
            sa.select(model)
            .where(model.workflow_id == workflow.id)
            .order_by(model.sequence)
            .execution_options(populate_existing=True)
        )
    )


def scheduled_execution(workflow: Any) -> Any:
    """The workflow's ``scheduled`` execution, or None."""
    model = geneva.StepExecution
    return db.session.scalars(
        sa.select(model)
        .where(model.workflow_id == workflow.id, model.state == "scheduled")
        .execution_options(populate_existing=True)
    ).one_or_none()


def outbox_rows(workflow: Any) -> list[Any]:
    """The outbox rows of ``workflow`` (messages waiting to be published)."""
    model = geneva.OutboxMessage
    return list(db.session.scalars(sa.select(model).where(model.workflow_id == workflow.id)))


def note_texts() -> list[str]:
    """The text of every ``Note`` row, in insertion order."""
    return list(db.session.scalars(sa.select(Note.text).order_by(Note.id)))


def reload(workflow: Any) -> Any:
    """Throw away what the session knows and load ``workflow`` again."""
    db.session.expire_all()
    return db.session.get(geneva.Workflow, workflow.id)


def published_execution_ids(app: Flask) -> list[Any]:
    """The execution ids of the step messages waiting in the app's in-memory broker."""
    broker = app.extensions["geneva"].broker
    ids = []
    for queue in broker.queues.values():
        for data in list(queue.queue):
            ids.extend(dramatiq.Message.decode(data).args)
    return ids


def wait_for_a_blocked_backend(deadline: float) -> None:
    """Poll (with a deadline) until some connection waits for a lock."""
    if db.engine.dialect.name == "postgresql":
        waiting_for_a_lock = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        pause = 0.01
    else:
        # InnoDB refreshes this table only when nobody read it for 0.1 s.
        pause = 0.15
        waiting_for_a_lock = (
            "SELECT count(*) FROM information_schema.innodb_trx AS t "
            "JOIN information_schema.processlist AS p ON p.id = t.trx_mysql_thread_id "
            "WHERE p.db = DATABASE() AND t.trx_state = 'LOCK WAIT'"
        )
    while time.monotonic() < deadline:
        with db.engine.connect() as probe:
            waiting = probe.scalar(sa.text(waiting_for_a_lock))
        if waiting:
            return
        time.sleep(pause)
    raise AssertionError("no connection ever waited for a lock held by the other one")
