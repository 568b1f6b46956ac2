"""An error in geneva's own database work (here: a lock it cannot get in time) is not a
step failure. It never pauses the workflow: an unclaimed execution stays scheduled for
the relay to deliver again, a claimed one is run again at once when the lock comes free
(tests/test_conflicts.py) or else stays in progress for housekeeping."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.executor import execute_step
from tests.helpers import executions, history, outbox_rows, reload, scheduled_execution
from tests.models import db, geneva


@pytest.fixture
def app_config(database_url: str) -> dict:
    """Give up waiting for a lock after 200 ms (a second on MariaDB), so a held lock
    becomes an error."""
    if database_url.startswith("sqlite"):
        return {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.2}}}
    if database_url.startswith("mysql"):  # whole seconds only
        wait = "SET SESSION innodb_lock_wait_timeout = 1"
        return {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"init_command": wait}}}
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": "-c lock_timeout=200"}}}


@contextmanager
def workflow_row_held(database_url: str, workflow_id: int) -> Iterator[None]:
    """Another process holds the workflow row's lock (on SQLite: the write lock)."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = sa.create_engine(database_url)
    table = geneva.Workflow.__table__
    try:
        with engine.connect() as holder:
            holder.execute(sa.select(table.c.id).where(table.c.id == workflow_id).with_for_update())
            yield
            holder.rollback()
    finally:
        engine.dispose()


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "flask_geneva"]


def test_a_database_error_while_claiming_leaves_the_execution_scheduled(
    app, user, database_url, caplog
):
    class LockedOutWorkflow(geneva.Workflow):
        @step
        def only(self):
            self.data["ran"] = True

    wf = LockedOutWorkflow.create(hero=user)
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    with workflow_row_held(database_url, wf.id), caplog.at_level(logging.ERROR):
        assert execute_step(geneva, execution_id) is None
    assert any("database error while claiming" in m for m in _errors(caplog))
    wf = reload(wf)
    assert wf.state == "ready"
    assert history(wf) == [("only", "scheduled", None)]
    assert executions(wf)[0].error_class_name is None
    assert len(outbox_rows(wf)) == 1  # the relay will deliver it again
    assert execute_step(geneva, execution_id) is not None  # and then it runs
    assert reload(wf).data == {"ran": True}


def test_a_database_error_while_finalizing_leaves_the_execution_in_progress(
    app, user, database_url, caplog
):
    held = ExitStack()

    class LockedAtTheEndWorkflow(geneva.Workflow):
        @step
        def only(self):
            # While the step runs, another process takes the workflow row's lock.
            held.enter_context(workflow_row_held(database_url, self.id))

    wf = LockedAtTheEndWorkflow.create(hero=user)
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    with held, caplog.at_level(logging.WARNING):
        assert execute_step(geneva, execution_id) is None
    assert any("database error while finalizing" in m for m in _errors(caplog))
    if not database_url.startswith("sqlite"):
        # A lock wait that timed out is worth running again at once (tests/test_conflicts.py);
        # here the row is still held, so that fails too and housekeeping is left to act.
        assert any("in a new transaction either" in m for m in _errors(caplog))
    wf = reload(wf)
    assert wf.state == "performing"  # not paused: housekeeping recovers it
    [execution] = executions(wf)
    assert (execution.state, execution.outcome) == ("in_progress", None)
    assert execution.error_class_name is None


class _ConnectorError(Exception):
    """How MariaDB Connector/Python's errors carry the server's error number."""

    def __init__(self, message: str, *, errno: int) -> None:
        super().__init__(message)
        self.errno = errno
        self.sqlstate = "HY000"


def _wrapped(original: Exception, *, invalidated: bool = False) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError.instance(
        "UPDATE x", {}, original, Exception, connection_invalidated=invalidated
    )


def test_which_database_errors_are_worth_running_the_step_again():
    import psycopg.errors
    import pymysql.err

    from flask_geneva.conflicts import is_transient

    again = [
        _wrapped(psycopg.errors.DeadlockDetected("deadlock detected")),
        _wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
        _wrapped(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")),
        _wrapped(pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")),
        _wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")),
        _wrapped(psycopg.errors.AdminShutdown("terminating connection"), invalidated=True),
        _wrapped(_ConnectorError("Lock wait timeout exceeded", errno=1205)),
    ]
    not_again = [
        _wrapped(psycopg.errors.UniqueViolation("duplicate key value")),
        _wrapped(pymysql.err.IntegrityError(1062, "Duplicate entry")),
        _wrapped(sqlite3.OperationalError("database is locked")),
        sa.exc.InvalidRequestError("not a database's error"),
        RuntimeError("deadlock"),
    ]
    assert [is_transient(error) for error in again] == [True] * len(again)
    assert [is_transient(error) for error in not_again] == [False] * len(not_again)
