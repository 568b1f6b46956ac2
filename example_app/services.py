"""Stand-ins for the outside world: a mailer, an SMS service and a payment gateway."""

from __future__ import annotations

import uuid

from example_app.models import Outbox, Payment, db


def send_mail(recipient: str, subject: str) -> None:
    db.session.add(Outbox(channel="email", recipient=recipient, subject=subject))


def send_sms(recipient: str, text: str) -> None:
    db.session.add(Outbox(channel="sms", recipient=recipient, subject=text))


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


class CardDeclined(Exception):
    pass


class ServiceDown(Exception):
    pass


class PaymentGateway:
    """A fake gateway whose behaviour each payment chooses with its ``scenario``."""

    @staticmethod
    def charge(payment: Payment) -> str:
        payment.attempts += 1
        if payment.scenario == "rate_limited" and payment.attempts < 3:
            raise RateLimited(retry_after=1.0)
        if payment.scenario == "declined":
            raise CardDeclined(f"card declined for payment {payment.id}")
        if payment.scenario == "down":
            raise ServiceDown("the payment gateway is down")
        return f"ch_{uuid.uuid4().hex[:12]}"

    @staticmethod
    def settled(payment: Payment) -> bool:
        # Settles on the second look, so the polling step reattempts once.
        payment.attempts += 1
        return payment.attempts >= 3 or payment.scenario != "rate_limited"
