"""Logs go to the ``flask_geneva`` logger with workflow class, id, hero and step."""

from __future__ import annotations

import logging

import pytest

from flask_geneva import step
from flask_geneva.testing import perform_next_step
from tests.models import db, geneva


class LoggingWorkflow(geneva.Workflow):
    @step
    def announce(self):
        self.logger.info("sending the notice")

    @step
    def explode(self):
        raise RuntimeError("kaboom")


def _records(caplog):
    return [r for r in caplog.records if r.name == "flask_geneva"]


def test_self_logger_carries_workflow_hero_and_step_context(app, user, caplog):
    wf = LoggingWorkflow.create(hero=user)
    db.session.commit()
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        perform_next_step(wf)
    [record] = [r for r in _records(caplog) if "sending the notice" in r.getMessage()]
    assert record.getMessage() == (
        f"[LoggingWorkflow #{wf.id} hero=User:{user.id} step=announce] sending the notice"
    )
    assert record.workflow_class == "LoggingWorkflow"
    assert record.workflow_id == wf.id
    assert record.hero == f"User:{user.id}"
    assert record.step_name == "announce"
    assert record.execution_id == wf.execution_history[0].id


def test_self_logger_outside_a_step_has_no_step(app, user, caplog):
    wf = LoggingWorkflow.create(hero=user)
    db.session.commit()
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        wf.logger.info("looked at by an operator")
    [record] = _records(caplog)
    assert record.getMessage() == f"[LoggingWorkflow #{wf.id} hero=User:{user.id}] " \
        "looked at by an operator"
    assert record.step_name is None


def test_a_failure_is_logged_with_its_context(app, user, caplog):
    wf = LoggingWorkflow.create(hero=user)
    db.session.commit()
    perform_next_step(wf)
    with caplog.at_level(logging.INFO, logger="flask_geneva"), pytest.raises(RuntimeError):
        perform_next_step(wf)
    [warning] = [r for r in _records(caplog) if r.levelno == logging.WARNING]
    assert "step=explode" in warning.getMessage()
    assert "RuntimeError: kaboom" in warning.getMessage()
    assert warning.workflow_id == wf.id
