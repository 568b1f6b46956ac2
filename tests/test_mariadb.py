"""What geneva sets and relies on when the database is MariaDB (or MySQL): the session's
isolation level and time zone, microseconds in its timestamps, and the two invariants
the generated key columns enforce in place of partial indexes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.states import StepState
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import utcnow
from tests.helpers import reload, scheduled_execution
from tests.models import db, geneva

pytestmark = pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)


class TickingWorkflow(geneva.Workflow):
    @step
    def first(self) -> None:
        pass

    @step(wait=timedelta(microseconds=1_234_567))
    def second(self) -> None:
        pass


@pytest.fixture
def app_config() -> dict:
    """Connections that start in another time zone and another isolation level."""
    setup = "SET SESSION time_zone = '-05:00', SESSION tx_isolation = 'REPEATABLE-READ'"
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"init_command": setup}}}


def test_each_connection_runs_in_read_committed_and_utc(app):
    with db.engine.connect() as connection:
        zone, isolation = connection.execute(
            sa.text("SELECT @@session.time_zone, @@session.tx_isolation")
        ).one()
    assert (zone, isolation) == ("+00:00", "READ-COMMITTED")


def test_timestamps_keep_their_microseconds_and_come_back_utc(app, user):
    wf = TickingWorkflow.create(hero=user)
    db.session.commit()
    created = wf.created_at
    perform_next_step(wf)
    fresh = reload(wf)
    assert fresh.created_at == created  # to the microsecond (DATETIME(6))
    first, second = fresh.execution_history
    assert second.scheduled_for - first.finished_at == timedelta(microseconds=1_234_567)
    for stamp in (fresh.created_at, first.started_at, first.finished_at, second.scheduled_for):
        assert stamp.utcoffset() == timedelta(0)


def test_the_database_refuses_a_second_active_execution(app, user):
    wf = TickingWorkflow.create(hero=user)
    db.session.commit()
    executions = geneva.StepExecution.__table__
    row = {
        "workflow_id": wf.id, "sequence": 2, "step_name": "second",
        "state": StepState.SCHEDULED, "scheduled_for": utcnow(), "created_at": utcnow(),
    }  # fmt: skip
    with pytest.raises(sa.exc.IntegrityError, match="geneva_step_executions_one_active"):
        db.session.execute(executions.insert().values(row))
    db.session.rollback()
    # An execution that no longer counts (its key column is NULL) is no obstacle.
    db.session.execute(executions.insert().values({**row, "state": StepState.COMPLETED}))
    db.session.commit()
    assert scheduled_execution(wf) is not None


def test_the_database_refuses_a_second_ongoing_workflow_of_a_class_and_hero(app, user):
    first = TickingWorkflow.create(hero=user)
    db.session.commit()
    workflows = geneva.Workflow.__table__
    now = utcnow()
    row = {
        "workflow_class": "TickingWorkflow", "hero_type": "User", "hero_id": str(user.id),
        "state": "ready", "data": {}, "allow_multiple": False, "execution_count": 0,
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    with pytest.raises(sa.exc.IntegrityError, match="geneva_workflows_one_ongoing"):
        db.session.execute(workflows.insert().values(row))
    db.session.rollback()
    for allowed in ({"allow_multiple": True}, {"state": "finished"}):
        db.session.execute(workflows.insert().values({**row, **allowed}))
    db.session.commit()
    keys = db.session.execute(
        sa.select(workflows.c.one_ongoing_key).order_by(workflows.c.id)
    ).scalars().all()
    assert keys == [1, None, None]
    assert first.id is not None


def test_connections_opened_before_init_app_are_not_kept(database_url, app_config):
    """An app that queries before ``geneva.init_app`` (at start-up, say) gets fresh,
    set-up connections from then on, not the pooled one it opened before."""
    from flask import Flask

    app = Flask("geneva_early_query")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url, TESTING=True, GENEVA_BROKER_URL="memory://",
        **app_config,
    )
    db.init_app(app)
    query = sa.text("SELECT @@session.time_zone, @@session.tx_isolation")
    try:
        with app.app_context():
            assert db.session.execute(query).one() == ("-05:00", "REPEATABLE-READ")
            db.session.remove()  # the connection goes back to the pool
        geneva.init_app(app)
        with app.app_context():
            assert db.session.execute(query).one() == ("+00:00", "READ-COMMITTED")
            db.session.remove()
    finally:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
