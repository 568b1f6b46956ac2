"""The example app's factory.

Configuration comes from the environment so the same app runs embedded (the default:
SQLite, ``memory://``, embedded worker) or distributed (``DATABASE_URL`` pointing at
PostgreSQL, ``GENEVA_BROKER_URL`` at Redis, and workers started with
``dramatiq example_app.worker:broker``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, redirect, request, url_for

from example_app import workflows
from example_app.models import ErasureRequest, ExpenseClaim, Payment, User, db, geneva
from flask_geneva import InvalidSignalError, InvalidStateError, SignalState, StepState

DEFAULT_DATABASE = Path(__file__).resolve().parent / "instance" / "example.sqlite3"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    broker_url = os.environ.get("GENEVA_BROKER_URL", "memory://")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", f"sqlite:///{DEFAULT_DATABASE}"),
        GENEVA_BROKER_URL=broker_url,
        GENEVA_DEFAULT_QUEUE=os.environ.get("GENEVA_DEFAULT_QUEUE", "geneva"),
        # GENEVA_EMBEDDED_WORKER is left to its default: on with memory://, off otherwise.
        # The example is for a local machine: let anyone who can reach it see the UI.
        # A real app passes a callable that checks the signed-in user.
        GENEVA_UI_ACCESS=lambda: True,
    )
    app.config.update(config or {})
    DEFAULT_DATABASE.parent.mkdir(exist_ok=True)
    db.init_app(app)
    geneva.init_app(app)

    @app.get("/")
    def index() -> Any:
        return redirect(url_for("geneva.overview"))

    @app.post("/approvals/<int:workflow_id>/decision")
    def approval_decision(workflow_id: int) -> Any:
        """A manager's decision on an expense claim: JSON ``{"ok": bool, "by": str}``,
        with an ``Idempotency-Key`` header that stays the same when the call is retried.
        It becomes the ``approved`` signal of the claim's workflow."""
        return decide(workflow_id, request.headers.get("Idempotency-Key"),
                      request.get_json(silent=True))

    @app.cli.command("seed")
    def seed_command() -> None:
        """Create example users, payments and workflows."""
        seed()
        print("created example workflows; watch them at /geneva/")

    return app


def decide(workflow_id: int, key: str | None, body: Any) -> tuple[dict[str, Any], int]:
    """Send a decision as the ``approved`` signal and commit; the JSON answer and status.

    202: recorded (the workflow acts on it); 200: this key's decision was recorded
    before (a retried call); 400: no key or a malformed body; 404: no such approval
    workflow; 409: the workflow has ended, and this key is new to it.
    """
    if not key:
        return {"error": "the Idempotency-Key header is required: send a key of your own "
                         "for this decision, and the same key when you retry"}, 400
    if not (isinstance(body, dict) and isinstance(body.get("ok"), bool)
            and isinstance(body.get("by"), str) and body["by"]):
        return {"error": 'the body must be JSON {"ok": true or false, "by": "who decided"}'}, 400
    # Ids are BIGINTs: a larger number is no workflow's (and PostgreSQL refuses it).
    workflow = None
    if workflow_id < 2**63:
        workflow = db.session.get(workflows.ExpenseApprovalWorkflow, workflow_id)
    if workflow is None:
        return {"error": f"no expense approval workflow #{workflow_id}"}, 404
    try:
        signal = workflow.signal(
            workflows.DECISION, payload={"ok": body["ok"], "by": body["by"]},
            idempotency_key=key,
        )  # fmt: skip
    except InvalidStateError as error:  # finished or canceled, and a new key
        db.session.rollback()
        return {"error": str(error)}, 409
    except InvalidSignalError as error:  # a key longer than the column, say
        db.session.rollback()
        return {"error": str(error)}, 400
    if signal.duplicate:
        db.session.rollback()
        return {"recorded": False, "message": "this decision was already recorded",
                "signal": signal.id}, 200
    db.session.commit()  # the signal (and any writes of the view) in one transaction
    return {"recorded": True, "signal": signal.id}, 202


def waiting_for_signals() -> dict[Any, str]:
    """``{workflow id: signal name}`` of the workflows that wait for a signal that has not
    arrived (a step that has a pending signal to take is not waiting: it is about to run)."""
    executions = geneva.StepExecution
    signals = geneva.WorkflowSignal
    pending = sa.exists().where(
        signals.workflow_id == executions.workflow_id,
        signals.state == SignalState.PENDING,
        sa.or_(signals.name == executions.waiting_for, signals.execution_id.is_not(None)),
    )
    rows = db.session.execute(
        sa.select(executions.workflow_id, executions.waiting_for).where(
            executions.state == StepState.SCHEDULED,
            executions.waiting_for.is_not(None),
            ~pending,
        )
    )
    return {workflow_id: name for workflow_id, name in rows}


def settled_states() -> dict[str, str] | None:
    """``{"Class #id": state}`` once no example workflow moves any more, else None.

    Settled means finished, canceled, paused, or ready but waiting for a signal that has
    not arrived ("ready, waiting for 'approved'"): that one moves again only when
    someone sends the signal, or in three days at its timeout.
    """
    db.session.rollback()  # read what the workers committed since
    waiting = waiting_for_signals()
    states: dict[str, str] = {}
    for cls, workflow_id, state in db.session.execute(
        sa.select(geneva.Workflow.workflow_class, geneva.Workflow.id, geneva.Workflow.state)
        .order_by(geneva.Workflow.id)
    ):
        if state in ("ready", "performing") and workflow_id not in waiting:
            return None
        text = str(state)
        if workflow_id in waiting:
            text += f", waiting for {waiting[workflow_id]!r}"
        states[f"{cls} #{workflow_id}"] = text
    db.session.rollback()
    return states


def seed() -> list[Any]:
    """Create the tables, a few heroes, and one workflow of each kind per scenario."""
    db.create_all()
    created: list[Any] = []
    alice = User(email="alice@example.com", name="Alice")
    bob = User(email="bob@example.com", name="Bob", phone_verified=True, email_unsubscribed=True)
    carol = User(email="carol@example.com", name="Carol", logged_in_recently=True)
    dave = User(email="dave@example.com", name="Dave")
    db.session.add_all([alice, bob, carol, dave])
    db.session.flush()
    for user in (alice, bob, carol):
        created.append(workflows.UserOnboardingWorkflow.create(hero=user))
    for scenario in ("ok", "rate_limited", "declined", "down"):
        payment = Payment(user_id=alice.id, amount_cents=1999, scenario=scenario)
        db.session.add(payment)
        db.session.flush()
        created.append(workflows.PaymentProcessingWorkflow.create(hero=payment))
    request = ErasureRequest(user_id=dave.id, requested_at=datetime.now(UTC))
    db.session.add(request)
    db.session.flush()
    created.append(workflows.DataRetentionWorkflow.create(hero=request))
    # Two expense claims: nobody answers the first, which waits for its decision; the
    # second is approved at once, before its step waits (the signal is kept until then).
    for user, description in ((bob, "Train to the customer"), (carol, "Conference ticket")):
        claim = ExpenseClaim(user_id=user.id, amount_cents=12_900, description=description)
        db.session.add(claim)
        db.session.flush()
        created.append(workflows.ExpenseApprovalWorkflow.create(hero=claim))
    geneva.send_signal(
        created[-1].id, workflows.DECISION, payload={"ok": True, "by": "manager@example.com"},
        idempotency_key="seed-decision",
    )  # fmt: skip
    db.session.commit()
    return created
