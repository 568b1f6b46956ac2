"""The application models the tests use: heroes with integer and UUID keys."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_geneva import Geneva

db = SQLAlchemy()
geneva = Geneva(db=db)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), default="someone@example.com")
    active: Mapped[bool] = mapped_column(default=False)
    deactivated: Mapped[bool] = mapped_column(default=False)
    counter: Mapped[int] = mapped_column(default=0)


class Document(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(sa.String(200), default="untitled")


class Note(db.Model):  # type: ignore[name-defined,misc]
    """A plain table step bodies write to, to show writes commit with the outcome."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(200))
