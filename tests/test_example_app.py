"""The example app: the README's demo (embedded default) and the same app distributed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.conftest import PG_SERVER_URL
from tests.e2e_support import ROOT, wait_until

EXPECTED_FINAL_STATES = {
    "UserOnboardingWorkflow #1": "finished",
    "UserOnboardingWorkflow #2": "finished",
    "UserOnboardingWorkflow #3": "finished",
    "PaymentProcessingWorkflow #4": "finished",  # settles
    "PaymentProcessingWorkflow #5": "finished",  # rate limited twice, then settles
    "PaymentProcessingWorkflow #6": "canceled",  # card declined
    "PaymentProcessingWorkflow #7": "paused",  # gateway down: waits for an operator
    "DataRetentionWorkflow #8": "finished",  # its user is deleted along the way
    # Nobody answers this claim: it waits for its decision (a valid end for the demo).
    "ExpenseApprovalWorkflow #9": "ready, waiting for 'approved'",
    "ExpenseApprovalWorkflow #10": "finished",  # approved (a signal), then reimbursed
}


def test_the_demo_runs_every_example_workflow_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "EXAMPLE_SECONDS_PER_DAY": "0.05",
    }
    env.pop("GENEVA_BROKER_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "example_app", "--until-done", "--timeout", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = dict(line.split(": ") for line in result.stdout.strip().splitlines())
    assert states == EXPECTED_FINAL_STATES


@pytest.fixture
def example_database() -> Iterator[str]:
    admin = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    name = f"geneva_example_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(PG_SERVER_URL).set(database=name).render_as_string(
        hide_password=False
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.e2e
def test_the_example_app_runs_on_postgresql_and_redis_with_dramatiq_workers(
    example_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dramatiq example_app.worker` (the module form) runs the example's steps."""
    from tests.e2e_support import WorkerProcesses

    queue = f"example_{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": example_database,
        "GENEVA_BROKER_URL": os.environ.get("GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "GENEVA_DEFAULT_QUEUE": queue,
        "EXAMPLE_SECONDS_PER_DAY": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from example_app.app import create_app, seed, settled_states
    from example_app.models import db

    app = create_app()
    # The plain module form, without ":broker": the app's broker is Dramatiq's global one.
    workers = WorkerProcesses(env, processes=2, threads=4, module="example_app.worker", queue=queue)
    with app.app_context():
        db.create_all()
        seed()
        workers.start()
        try:

            states = wait_until(settled_states, timeout=120, message="the example workflows")
            assert states == EXPECTED_FINAL_STATES
        finally:
            workers.stop()
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


# -- the expense approval: a step that waits for a signal ---------------------------------


@pytest.fixture(scope="module")
def example_pg_url() -> Iterator[str]:
    """A PostgreSQL database for this module's example-app tests (its tables share names
    with the test models' ones, so not the session's database)."""
    admin = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    name = f"geneva_example_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(PG_SERVER_URL).set(database=name).render_as_string(
        hide_password=False
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def example_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """The example app without a worker: the tests run its steps with the testing helpers."""
    from example_app.app import create_app
    from example_app.models import db

    url = (
        f"sqlite:///{tmp_path / 'example.sqlite3'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("example_pg_url"))
    )
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "GENEVA_BROKER_URL": "memory://",
        "GENEVA_EMBEDDED_WORKER": False,
    })  # fmt: skip
    with app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


def new_claim(description: str = "Train to the customer") -> Any:
    from example_app.models import ExpenseClaim, User, db
    from example_app.workflows import ExpenseApprovalWorkflow

    user = User(email="erin@example.com", name="Erin")
    db.session.add(user)
    db.session.flush()
    claim = ExpenseClaim(user_id=user.id, amount_cents=4_200, description=description)
    db.session.add(claim)
    db.session.flush()
    workflow = ExpenseApprovalWorkflow.create(hero=claim)
    db.session.commit()
    return workflow


def mail_subjects() -> list[str]:
    from example_app.models import Outbox, db

    return list(db.session.scalars(sa.select(Outbox.subject).order_by(Outbox.id)))


def test_an_expense_claim_waits_for_its_decision_and_is_reimbursed_once_approved(
    example_app: Flask,
) -> None:
    from flask_geneva.testing import speedrun_workflow

    workflow = speedrun_workflow(new_claim())
    # request_approval ran; act_on_decision waits for the signal, without a message.
    assert workflow.state == "ready"
    assert workflow.next_step_name == "act_on_decision"
    assert workflow.hero.status == "awaiting_approval"
    assert mail_subjects()[0].startswith(f"Please approve expense claim {workflow.hero.id}")

    workflow.signal("approved", payload={"ok": True, "by": "mia@example.com"},
                    idempotency_key="k1")
    from example_app.models import db

    db.session.commit()
    speedrun_workflow(workflow)
    assert workflow.state == "finished"
    assert (workflow.hero.status, workflow.hero.decided_by) == ("reimbursed", "mia@example.com")
    assert mail_subjects()[-1] == f"Expense claim {workflow.hero.id} approved: reimbursed"


def test_a_rejected_claim_cancels_the_workflow(example_app: Flask) -> None:
    from example_app.models import db
    from flask_geneva.testing import perform_next_step

    workflow = perform_next_step(new_claim())
    workflow.signal("approved", payload={"ok": False, "by": "mia@example.com"})
    db.session.commit()
    perform_next_step(workflow)
    assert workflow.state == "canceled"
    assert (workflow.hero.status, workflow.hero.decided_by) == ("rejected", "mia@example.com")


def test_a_claim_nobody_decides_on_expires_at_its_timeout(example_app: Flask) -> None:
    from flask_geneva import WaitingForSignalError
    from flask_geneva.testing import perform_next_step

    workflow = perform_next_step(new_claim())
    with pytest.raises(WaitingForSignalError, match="'approved'"):
        perform_next_step(workflow)
    perform_next_step(workflow, timeout_elapsed=True)
    assert workflow.state == "canceled"
    assert workflow.hero.status == "expired"
    assert mail_subjects()[-1] == f"Expense claim {workflow.hero.id} expired without a decision"


def post_decision(app: Flask, workflow_id: Any, body: Any = None, key: str | None = "k1") -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return app.test_client().post(
        f"/approvals/{workflow_id}/decision",
        json={"ok": True, "by": "mia@example.com"} if body is None else body,
        headers=headers,
    )


def test_the_decision_view_sends_the_signal_once_per_idempotency_key(example_app: Flask) -> None:
    from example_app.models import db, geneva
    from flask_geneva.testing import speedrun_workflow

    workflow = new_claim()
    # Before the step waits: the signal is kept until it does.
    first = post_decision(example_app, workflow.id)
    assert first.status_code == 202, first.json
    assert first.json["recorded"] is True
    again = post_decision(example_app, workflow.id)
    assert again.status_code == 200
    assert again.json == {"recorded": False, "message": "this decision was already recorded",
                          "signal": first.json["signal"]}
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.WorkflowSignal)) == 1

    speedrun_workflow(workflow)
    assert workflow.state == "finished"
    assert workflow.hero.status == "reimbursed"
    # The workflow has ended: a retry of the same call is still "already recorded"; a new
    # decision is refused.
    assert post_decision(example_app, workflow.id).status_code == 200
    late = post_decision(example_app, workflow.id, key="k2")
    assert late.status_code == 409
    assert "finished" in late.json["error"]


def test_the_decision_view_refuses_what_it_cannot_record(example_app: Flask) -> None:
    from example_app.models import db, geneva
    from example_app.workflows import DataRetentionWorkflow

    workflow = new_claim()
    missing_key = post_decision(example_app, workflow.id, key=None)
    assert missing_key.status_code == 400
    assert "Idempotency-Key header is required" in missing_key.json["error"]
    for body in ({"ok": "yes", "by": "mia"}, {"ok": True}, ["ok"]):
        malformed = post_decision(example_app, workflow.id, body=body)
        assert malformed.status_code == 400, body
    assert post_decision(example_app, workflow.id + 1000).status_code == 404
    assert post_decision(example_app, "not-a-number").status_code == 404
    assert post_decision(example_app, 2**63).status_code == 404  # beyond BIGINT
    assert post_decision(example_app, 10**20).status_code == 404
    other = DataRetentionWorkflow.create(hero=None)
    db.session.commit()
    wrong_class = post_decision(example_app, other.id)
    assert wrong_class.status_code == 404
    assert wrong_class.json["error"] == f"no expense approval workflow #{other.id}"
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.WorkflowSignal)) == 0
