"""The manual's three appendix workflows, and an approval that waits for a signal.

Waits are written in "days" of :data:`DAY`, which the demo shrinks to a couple of
seconds (``EXAMPLE_SECONDS_PER_DAY``, default 2) so a person can watch them progress.
The approval's timeout is not: a manager has :data:`APPROVAL_TIMEOUT` (three real days)
to answer, so the demo's unanswered claim stays waiting while you watch it.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

from example_app.models import (
    Archive,
    ErasureRequest,
    ExpenseClaim,
    Payment,
    User,
    db,
    geneva,
)
from example_app.services import (
    CardDeclined,
    PaymentGateway,
    RateLimited,
    ServiceDown,
    send_mail,
    send_sms,
)
from flask_geneva import cancel_if, step

#: One "day" of the example workflows.
DAY = timedelta(seconds=float(os.environ.get("EXAMPLE_SECONDS_PER_DAY", "2")))

#: How long a manager has to decide on an expense claim (real days, not :data:`DAY`).
APPROVAL_TIMEOUT = timedelta(days=3)

#: The signal a manager's decision arrives as: payload ``{"ok": bool, "by": str}``.
DECISION = "approved"


class UserOnboardingWorkflow(geneva.Workflow):
    """Welcome a new user over a week: waits, ``skip_if`` and ``cancel_if``."""

    cancel_if(lambda wf: wf.hero.deactivated)

    @step
    def send_welcome_email(self) -> None:
        send_mail(self.hero.email, f"Welcome, {self.hero.name}!")

    @step(wait=DAY, skip_if=lambda wf: wf.hero.phone_verified)
    def request_phone_verification(self) -> None:
        send_sms(self.hero.email, "Your verification code is 123456")

    @step(wait=2 * DAY, skip_if="unsubscribed")
    def send_getting_started_tips(self) -> None:
        send_mail(self.hero.email, "Three tips to get started")

    @step(wait=4 * DAY)
    def check_activity(self) -> None:
        if self.hero.logged_in_recently:
            self.finish()
        send_mail(self.hero.email, "We miss you")

    def unsubscribed(self) -> bool:
        return bool(self.hero.email_unsubscribed)


class PaymentProcessingWorkflow(geneva.Workflow):
    """Charge a payment: rescue, ``reattempt`` with a dynamic wait, ``pause``, ``cancel``,
    and polling with ``finish``."""

    @step
    def initiate_payment(self) -> None:
        payment: Payment = self.hero
        try:
            payment.gateway_reference = PaymentGateway.charge(payment)
        except RateLimited as error:
            self.reattempt(wait=error.retry_after)
        except CardDeclined:
            payment.status = "declined"
            send_mail("billing@example.com", f"Card declined for payment {payment.id}")
            self.cancel()
        except ServiceDown:
            payment.status = "gateway_down"
            self.pause()  # an operator resumes it once the gateway is back
        payment.status = "charged"

    @step(wait=DAY)
    def await_settlement(self) -> None:
        payment: Payment = self.hero
        if PaymentGateway.settled(payment):
            payment.status = "settled"
            self.finish()
        self.reattempt(wait=DAY)


class DataRetentionWorkflow(geneva.Workflow):
    """Erase a user's data: archive first, then delete the user (the hero of another
    record), and carry on without it."""

    may_proceed_without_hero = True

    @step
    def archive_user_data(self) -> None:
        request: ErasureRequest = self.hero
        user = db.session.get(User, request.user_id)
        if user is None:
            self.skip()
        payload = {"email": user.email, "name": user.name}
        db.session.add(Archive(user_id=user.id, payload=json.dumps(payload)))
        self.data["archived"] = True

    @step(wait=DAY)
    def delete_user(self) -> None:
        request: ErasureRequest = self.hero
        user = db.session.get(User, request.user_id)
        if user is not None:
            db.session.delete(user)
        self.data["deleted_user_id"] = request.user_id

    @step
    def confirm_erasure(self) -> None:
        request: ErasureRequest | None = self.hero
        if request is not None:
            request.completed = True
        send_mail("privacy@example.com", f"Erased user {self.data['deleted_user_id']}")


class ExpenseApprovalWorkflow(geneva.Workflow):
    """Reimburse an expense once a manager approves it: ``wait_for``, ``timeout`` and
    ``received_signal``. The decision arrives as the ``approved`` signal, sent by
    ``POST /approvals/<workflow id>/decision`` (or ``flask geneva signal``)."""

    @step
    def request_approval(self) -> None:
        claim: ExpenseClaim = self.hero
        claim.status = "awaiting_approval"
        send_mail(
            "manager@example.com",
            f"Please approve expense claim {claim.id} ({claim.amount_cents / 100:.2f}: "
            f"{claim.description}): POST /approvals/{self.id}/decision",
        )

    @step(wait_for=DECISION, timeout=APPROVAL_TIMEOUT)
    def act_on_decision(self) -> None:
        claim: ExpenseClaim = self.hero
        user = db.session.get(User, claim.user_id)
        decision = self.received_signal
        if decision is None:  # nobody decided within APPROVAL_TIMEOUT
            claim.status = "expired"
            send_mail(user.email, f"Expense claim {claim.id} expired without a decision")
            self.cancel()
        claim.decided_by = decision.payload["by"]
        if not decision.payload["ok"]:
            claim.status = "rejected"
            send_mail(user.email, f"Expense claim {claim.id} was rejected")
            self.cancel()
        claim.status = "approved"

    @step
    def reimburse(self) -> None:
        claim: ExpenseClaim = self.hero
        user = db.session.get(User, claim.user_id)
        claim.status = "reimbursed"
        send_mail(user.email, f"Expense claim {claim.id} approved: reimbursed")
