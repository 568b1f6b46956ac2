"""The example app's own data: users, payments, archives, expense claims — and the Geneva
extension."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_geneva import Geneva

db = SQLAlchemy()
geneva = Geneva(db=db)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(200))
    email_unsubscribed: Mapped[bool] = mapped_column(default=False)
    phone_verified: Mapped[bool] = mapped_column(default=False)
    deactivated: Mapped[bool] = mapped_column(default=False)
    logged_in_recently: Mapped[bool] = mapped_column(default=False)


class Payment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    amount_cents: Mapped[int]
    #: What the fake gateway will do with it: "ok", "rate_limited", "declined", "down".
    scenario: Mapped[str] = mapped_column(sa.String(20), default="ok")
    status: Mapped[str] = mapped_column(sa.String(20), default="new")
    gateway_reference: Mapped[str | None] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)


class ErasureRequest(db.Model):  # type: ignore[name-defined,misc]
    """A GDPR erasure request; its user is deleted while the workflow runs."""

    __tablename__ = "erasure_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column()
    requested_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    completed: Mapped[bool] = mapped_column(default=False)


class Archive(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "archives"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column()
    payload: Mapped[str] = mapped_column(sa.Text)


class ExpenseClaim(db.Model):  # type: ignore[name-defined,misc]
    """An expense to reimburse once a manager approves it."""

    __tablename__ = "expense_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    amount_cents: Mapped[int]
    description: Mapped[str] = mapped_column(sa.String(200))
    #: "new", "awaiting_approval", "approved", "rejected", "expired", "reimbursed".
    status: Mapped[str] = mapped_column(sa.String(20), default="new")
    #: Who decided (the signal's ``by``).
    decided_by: Mapped[str | None] = mapped_column(sa.String(200))


class Outbox(db.Model):  # type: ignore[name-defined,misc]
    """Mail and SMS the example "sends": rows you can look at instead of real messages."""

    __tablename__ = "sent_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(10))
    recipient: Mapped[str] = mapped_column(sa.String(200))
    subject: Mapped[str] = mapped_column(sa.String(200))
