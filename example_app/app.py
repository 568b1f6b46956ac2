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

from flask import Flask, redirect, url_for

from example_app import workflows
from example_app.models import ErasureRequest, Payment, User, db, geneva

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

    @app.cli.command("seed")
    def seed_command() -> None:
        """Create example users, payments and workflows."""
        seed()
        print("created example workflows; watch them at /geneva/")

    return app


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
    db.session.commit()
    return created
