"""Timestamps come back as UTC whatever time zone the database session uses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import step
from flask_geneva.testing import speedrun_workflow
from tests.helpers import reload
from tests.models import db, geneva

pytestmark = pytest.mark.postgresql_only


@pytest.fixture
def app_config() -> dict:
    """PostgreSQL sessions in New York time."""
    return {
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "connect_args": {"options": "-c timezone=America/New_York"}
        }
    }


def test_timestamps_are_utc_when_the_session_time_zone_is_not(app, user):
    class ZonedWorkflow(geneva.Workflow):
        @step(wait=timedelta(hours=1))
        def later(self):
            pass

    wf = ZonedWorkflow.create(hero=user)
    db.session.commit()
    created = wf.created_at
    speedrun_workflow(wf)
    assert db.session.execute(db.text("SHOW timezone")).scalar() == "America/New_York"
    fresh = reload(wf)
    [execution] = fresh.execution_history
    assert fresh.created_at == created
    assert execution.scheduled_for == created + timedelta(hours=1)
    for stamp in (fresh.created_at, fresh.transitioned_at, execution.scheduled_for,
                  execution.started_at, execution.finished_at):
        assert stamp.utcoffset() == timedelta(0)
