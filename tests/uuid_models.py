"""A second application setup with ``uuid_primary_keys=True``.

Geneva builds its models per instance, on the ``db.Model`` it is given, so UUID keys need
their own ``SQLAlchemy()`` and ``Geneva``.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_geneva import Geneva

uuid_db = SQLAlchemy()
uuid_geneva = Geneva(db=uuid_db, uuid_primary_keys=True)


class Customer(uuid_db.Model):  # type: ignore[name-defined,misc]
    """A hero with a UUID key."""

    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100), default="someone")


class Shop(uuid_db.Model):  # type: ignore[name-defined,misc]
    """A hero with an integer key, in the UUID-keyed setup."""

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(primary_key=True)
    visits: Mapped[int] = mapped_column(default=0)
