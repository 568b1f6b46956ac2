"""The app that end-to-end tests and their real ``dramatiq`` worker processes share.

Workers start as ``dramatiq tests.e2e_app:broker``; the database, broker and queue come
from the environment (``E2E_DATABASE_URL``, ``E2E_BROKER_URL``, ``E2E_QUEUE``).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Mapped, mapped_column

from flask_geneva import SignalMatcher, step
from tests.models import db, geneva


class StepRun(db.Model):  # type: ignore[name-defined,misc]
    """One row per step body that ran and committed (written through db.session)."""

    __tablename__ = "e2e_step_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    step_name: Mapped[str] = mapped_column(sa.String(64))
    execution_id: Mapped[str] = mapped_column(sa.String(64))
    started_at: Mapped[float] = mapped_column(sa.Double)  # FLOAT is 4 bytes on MariaDB
    pid: Mapped[int] = mapped_column(default=0)


def record(workflow: Any) -> None:
    execution = workflow.current_execution
    db.session.add(
        StepRun(
            workflow_id=str(workflow.id),
            step_name=execution.step_name,
            execution_id=str(execution.id),
            started_at=time.time(),
            pid=os.getpid(),
        )
    )


class ThreeStepWorkflow(geneva.Workflow):
    """Three steps with no waits."""

    may_proceed_without_hero = True

    @step
    def first(self) -> None:
        record(self)

    @step
    def second(self) -> None:
        record(self)

    @step
    def third(self) -> None:
        record(self)


class WaitingWorkflow(geneva.Workflow):
    """Steps separated by short waits: the relay publishes them when they are due."""

    may_proceed_without_hero = True

    @step
    def start(self) -> None:
        record(self)

    @step(wait=timedelta(seconds=1))
    def after_one_second(self) -> None:
        record(self)

    @step(wait=timedelta(seconds=2))
    def after_two_more(self) -> None:
        record(self)


class SubSecondWaitWorkflow(geneva.Workflow):
    """A first step 0.4 s after creation: sooner than a relay's poll, so a relay in
    another process must be woken to publish it on time."""

    may_proceed_without_hero = True

    @step(wait=timedelta(milliseconds=400))
    def soon(self) -> None:
        record(self)


class HangingWorkflow(geneva.Workflow):
    """Its step hangs on its first attempt (until the worker is killed)."""

    may_proceed_without_hero = True

    @step
    def hang_once(self) -> None:
        record(self)
        if not any(e.outcome == "recovered" for e in self.execution_history):
            db.session.commit()  # make the attempt visible to the test
            threading.Event().wait()
        self.data["survived"] = True

    @step
    def after(self) -> None:
        record(self)


def _timed(seconds: float) -> Any:
    """A step body that keeps busy for ``seconds`` (in short sleeps: a time limit
    interrupts between them), then records its run."""

    def body(workflow: Any) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(0.01)
        record(workflow)

    return body


class TimedStepsWorkflow(geneva.Workflow):
    """Five 0.7 s steps under a 2 s time limit, one after the other in one inline run
    (3.5 s: past the limit and Dramatiq's 1 s check), then a step that outlasts it."""

    may_proceed_without_hero = True
    step_job_options = {"time_limit": 2000}

    for _name in ("one", "two", "three", "four", "five"):
        step(_timed(0.7), name=_name)
    step(_timed(10), name="too_long")
    del _name


def record_signal(workflow: Any) -> None:
    """Record the step's run and what it received: the signal's id and payload (None
    after a timeout), committed with the step's outcome."""
    record(workflow)
    received = workflow.received_signal
    workflow.data["got"] = None if received is None else received.payload
    workflow.data["signal_id"] = None if received is None else received.id


class PreparesThenAwaits(geneva.Workflow):
    """A first step 2 s later (signals sent at once arrive before the step waits),
    then a step that waits for ``go`` (its long timeout must not fire)."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait=timedelta(seconds=2))
    def prepare(self) -> None:
        record(self)

    @step(wait_for="go", timeout=timedelta(seconds=120))
    def take(self) -> None:
        record_signal(self)

    @step
    def after(self) -> None:
        record(self)


class AwaitsFirst(geneva.Workflow):
    """Its first step waits for ``go``, without a timeout."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go")
    def take(self) -> None:
        record_signal(self)

    @step
    def after(self) -> None:
        record(self)


def _addressed_to_me(workflow: Any, signal: Any) -> bool:
    return bool((signal.payload or {}).get("for") == workflow.data["token"])


class AwaitsMatching(geneva.Workflow):
    """Waits for an ``event`` whose payload names the workflow's token (other events
    for it stay pending)."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def start(self) -> None:
        record(self)

    @step(wait_for=SignalMatcher("event", _addressed_to_me))
    def take(self) -> None:
        record_signal(self)


class TimesOutAndRuns(geneva.Workflow):
    """Waits 1.5 s for a signal nobody sends; then the body runs without one."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="never", timeout=timedelta(seconds=1.5), on_timeout="run")
    def take(self) -> None:
        record_signal(self)

    @step
    def after(self) -> None:
        record(self)


class TimesOutAndSkips(geneva.Workflow):
    """Waits 1.5 s for a signal nobody sends; then the step is skipped."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def start(self) -> None:
        record(self)

    @step(wait_for="never", timeout=timedelta(seconds=1.5), on_timeout="skip")
    def take(self) -> None:
        record_signal(self)

    @step
    def after(self) -> None:
        record(self)


class ChaosWorkflow(geneva.Workflow):
    """The chaos soak's workflow: a step, a short wait, a step that waits for ``go``
    (sent by the test, some before the step waits, some twice), and a last step."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def first(self) -> None:
        record(self)

    @step(wait=timedelta(milliseconds=300))
    def second(self) -> None:
        record(self)

    @step(wait_for="go", timeout=timedelta(minutes=10))
    def third(self) -> None:
        record_signal(self)

    @step
    def fourth(self) -> None:
        record(self)


def create_app(
    database_url: str | None = None,
    broker_url: str | None = None,
    queue: str | None = None,
    **config: Any,
) -> Flask:
    app = Flask("geneva_e2e")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url or os.environ["E2E_DATABASE_URL"],
        GENEVA_BROKER_URL=broker_url or os.environ.get("E2E_BROKER_URL", "memory://"),
        GENEVA_DEFAULT_QUEUE=queue or os.environ.get("E2E_QUEUE", "geneva"),
        GENEVA_RELAY_GRACE_PERIOD=timedelta(seconds=float(os.environ.get("E2E_GRACE_S", "1"))),
        GENEVA_RELAY_REPUBLISH_AFTER=timedelta(
            seconds=float(os.environ.get("E2E_REPUBLISH_S", "2"))
        ),
        GENEVA_WORKER_IDLE_TIMEOUT_MS=20,
        TESTING=True,
    )
    app.config.update(config)
    db.init_app(app)
    geneva.init_app(app)
    return app


if "E2E_DATABASE_URL" in os.environ:
    app = create_app()
    broker = app.extensions["geneva"].broker
