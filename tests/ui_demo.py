"""A realistic set of workflows for the status UI tests and screenshots.

:func:`seed_demo` defines a few workflow classes, runs some of them to the end, leaves
others paused on an error, waiting, overdue or stuck, and back-dates their timestamps so
the pages look like a system that has been running for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from flask_geneva import ExceptionPolicy, cancel_if, step
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import as_utc, utcnow
from tests.models import Document, User, db, geneva

#: An error message and a hero type that try to inject markup into the pages.
HOSTILE_MESSAGE = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & "quotes"'
HOSTILE_HERO_TYPE = "<b>Evil</b>&Type"


class PaymentDeclined(Exception):
    """The payment gateway said no."""


class GatewayTimeout(Exception):
    """The payment gateway did not answer."""


@dataclass
class Demo:
    """The classes and the ids of the notable workflows :func:`seed_demo` made."""

    classes: dict[str, type] = field(default_factory=dict)
    paused_with_error: Any = None
    hostile_error: Any = None
    waiting: Any = None
    overdue: Any = None
    stuck_running: Any = None
    finished: Any = None
    canceled: Any = None
    removed_step: Any = None
    gone_class_id: Any = None
    hostile_hero: Any = None
    document_workflow: Any = None


def define_classes() -> dict[str, type]:
    """The demo workflow classes (defined again on each call, as tests do)."""

    class SubscriptionRenewalWorkflow(geneva.Workflow):
        cancel_if(lambda wf: wf.hero is not None and wf.hero.deactivated)

        @step
        def send_renewal_notice(self) -> None:
            self.data["notice_sent"] = True

        @step(
            wait=timedelta(days=3),
            on_exception=ExceptionPolicy("reattempt", wait=timedelta(minutes=10), max_reattempts=2),
        )
        def charge_payment(self) -> None:
            failure = self.data.get("fail")
            if failure == "declined":
                raise PaymentDeclined(self.data.get("message", "card declined (code 51)"))
            if failure == "timeout":
                raise GatewayTimeout("no answer from the gateway in 30 s")

        @step(skip_if="already_active")
        def activate_new_period(self) -> None:
            self.data["period"] = 2

        def already_active(self) -> bool:
            return bool(self.data.get("active"))

    class DocumentProcessingWorkflow(geneva.Workflow):
        @step
        def extract_text(self) -> None:
            if self.data.get("fail"):
                raise ValueError(self.data.get("message", "unreadable PDF"))

        @step(wait=timedelta(minutes=5))
        def analyze_content(self) -> None:
            pass

        @step(wait=timedelta(minutes=10))
        def generate_summary(self) -> None:
            pass

    class WebhookDeliveryWorkflow(geneva.Workflow):
        may_proceed_without_hero = True
        allow_multiple = True
        step(lambda wf: wf.data.setdefault("attempts", 0))
        for _ in range(3):
            step(lambda wf: None, wait=timedelta(seconds=30))

        @step(on_exception="cancel")
        def mark_undeliverable(self) -> None:
            pass

    class OnboardingWorkflow(geneva.Workflow):
        @step
        def send_welcome_email(self) -> None:
            pass

        @step(wait=timedelta(days=1), only_if=lambda wf: not wf.data.get("verified"))
        def remind_to_verify(self) -> None:
            pass

        @step(wait=timedelta(days=7))
        def ask_for_feedback(self) -> None:
            pass

    return {
        cls.__name__: cls
        for cls in (
            SubscriptionRenewalWorkflow,
            DocumentProcessingWorkflow,
            WebhookDeliveryWorkflow,
            OnboardingWorkflow,
        )
    }


def _run(workflow: Any) -> Any:
    """Run until finished, canceled or paused, each step at its due time.

    Instead of waiting, the workflow's history is moved into the past until the next
    step is due, so the recorded times look like a real run's.
    """
    ex = geneva.StepExecution
    for _ in range(30):
        db.session.refresh(workflow)
        if workflow.state != "ready":
            break
        due = db.session.scalar(
            sa.select(ex.scheduled_for).where(
                ex.workflow_id == workflow.id, ex.state == "scheduled"
            )
        )
        gap = (as_utc(due) or utcnow()) - utcnow()
        if gap > timedelta(0):
            _backdate(workflow, gap + timedelta(seconds=1))
        try:
            perform_next_step(workflow)
        except Exception:  # the failure is recorded; the demo wants it
            db.session.rollback()
    return workflow


def _backdate(workflow: Any, age: timedelta) -> None:
    """Shift every timestamp of a workflow and its executions ``age`` into the past."""
    wf_table = geneva.Workflow.__table__
    ex_table = geneva.StepExecution.__table__
    ob_table = geneva.OutboxMessage.__table__
    session = db.session
    row = session.execute(sa.select(wf_table).where(wf_table.c.id == workflow.id)).one()
    session.execute(
        sa.update(wf_table)
        .where(wf_table.c.id == workflow.id)
        .values(
            created_at=row.created_at - age,
            updated_at=row.updated_at - age,
            transitioned_at=None if row.transitioned_at is None else row.transitioned_at - age,
        )
    )
    for execution in session.execute(
        sa.select(ex_table).where(ex_table.c.workflow_id == workflow.id)
    ):
        session.execute(
            sa.update(ex_table)
            .where(ex_table.c.id == execution.id)
            .values(
                scheduled_for=execution.scheduled_for - age,
                created_at=execution.created_at - age,
                started_at=None if execution.started_at is None else execution.started_at - age,
                finished_at=None if execution.finished_at is None else execution.finished_at - age,
            )
        )
    for message in session.execute(
        sa.select(ob_table).where(ob_table.c.workflow_id == workflow.id)
    ):
        session.execute(
            sa.update(ob_table)
            .where(ob_table.c.id == message.id)
            .values(available_at=message.available_at - age, created_at=message.created_at - age)
        )
    session.commit()
    session.expire_all()


def seed_demo() -> Demo:
    """Create the demo workflows; needs an app context with empty tables."""
    demo = Demo(classes=define_classes())
    renewal = demo.classes["SubscriptionRenewalWorkflow"]
    documents = demo.classes["DocumentProcessingWorkflow"]
    webhook = demo.classes["WebhookDeliveryWorkflow"]
    onboarding = demo.classes["OnboardingWorkflow"]
    session = db.session

    users = [User(email=f"user{i}@example.com") for i in range(12)]
    session.add_all(users)
    docs = [Document(title=f"contract {i}") for i in range(3)]
    session.add_all(docs)
    session.commit()

    # Finished ones, spread over the last days.
    for i, user in enumerate(users[4:10]):
        wf = _run(onboarding.create(hero=user, data={"verified": i % 2 == 0}))
        _backdate(wf, timedelta(days=9 - i, hours=i * 3))
        demo.finished = wf.id
    for i in range(5):
        wf = _run(webhook.create(data={"endpoint": f"https://hooks.example.com/{i}"}))
        _backdate(wf, timedelta(hours=30 - i * 5, minutes=i * 7))

    # Paused on an error (after reattempts ran out), with a hostile message.
    wf = renewal.create(hero=users[0], data={"fail": "declined", "message": HOSTILE_MESSAGE})
    session.commit()
    _backdate(_run(wf), timedelta(hours=2, minutes=14))
    demo.hostile_error = wf.id

    wf = renewal.create(hero=users[1], data={"fail": "timeout"})
    session.commit()
    _backdate(_run(wf), timedelta(minutes=47))
    demo.paused_with_error = wf.id

    wf = documents.create(
        hero=docs[0], data={"fail": True, "message": "unreadable PDF: page 3 is encrypted"}
    )
    session.commit()
    _backdate(_run(wf), timedelta(hours=5))
    demo.document_workflow = wf.id

    # Waiting for a later step (three days).
    wf = renewal.create(hero=users[2], data={"active": True})
    session.commit()
    perform_next_step(wf)
    demo.waiting = wf.id
    _backdate(wf, timedelta(hours=3))

    # Overdue: its step was due 20 minutes ago and nobody ran it.
    wf = onboarding.create(hero=users[3])
    session.commit()
    perform_next_step(wf)
    _backdate(wf, timedelta(days=1, minutes=20))
    demo.overdue = wf.id

    # Stuck in progress: a worker claimed it two hours ago and died.
    wf = documents.create(hero=docs[1])
    session.commit()
    perform_next_step(wf)
    ex = geneva.StepExecution
    execution = session.scalars(
        sa.select(ex).where(ex.workflow_id == wf.id, ex.state == "scheduled")
    ).one()
    now = utcnow()
    execution.state = "in_progress"
    execution.started_at = now
    wf.state = "performing"
    wf.current_step_name = execution.step_name
    session.execute(
        sa.delete(geneva.OutboxMessage).where(geneva.OutboxMessage.execution_id == execution.id)
    )
    session.commit()
    _backdate(wf, timedelta(hours=2, minutes=5))
    demo.stuck_running = wf.id

    # Canceled by an operator.
    wf = documents.create(hero=docs[2])
    session.commit()
    wf.cancel()
    session.commit()
    _backdate(wf, timedelta(hours=7))
    demo.canceled = wf.id

    # Fresh ones, ready to run now.
    for user in users[10:12]:
        onboarding.create(hero=user)
    session.commit()

    # An execution of a step the code no longer has.
    wf = onboarding.create(hero=users[0])
    session.commit()
    perform_next_step(wf)
    session.add(
        ex(
            workflow_id=wf.id,
            sequence=0,
            step_name="send_sms_welcome",
            state="completed",
            outcome="success",
            scheduled_for=wf.created_at,
            started_at=wf.created_at,
            finished_at=wf.created_at,
            created_at=wf.created_at,
        )
    )
    session.commit()
    demo.removed_step = wf.id

    # A row whose class the code no longer defines, and a hostile hero type.
    table = geneva.Workflow.__table__
    now = utcnow()
    values = {
        "state": "paused",
        "data": {},
        "allow_multiple": True,
        "execution_count": 0,
        "created_at": now - timedelta(days=40),
        "updated_at": now - timedelta(days=39),
        "transitioned_at": now - timedelta(days=39),
        "next_step_name": "import_rows",
    }
    demo.gone_class_id = session.execute(
        sa.insert(table)
        .values(workflow_class="LegacyImportWorkflow", hero_type="User", hero_id="7", **values)
        .returning(table.c.id)
    ).scalar_one()
    demo.hostile_hero = session.execute(
        sa.insert(table)
        .values(
            workflow_class="WebhookDeliveryWorkflow",
            hero_type=HOSTILE_HERO_TYPE,
            hero_id="<i>1</i>",
            **{**values, "created_at": now - timedelta(minutes=3)},
        )
        .returning(table.c.id)
    ).scalar_one()
    session.commit()
    return demo
