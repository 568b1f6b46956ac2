"""UTC time helpers: every timestamp flask_geneva stores or returns is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Make a datetime read from the database aware and UTC (SQLite returns naive ones)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def timestamp_type() -> sa.types.TypeEngine[datetime]:
    """The column type of every geneva timestamp: ``TIMESTAMP WITH TIME ZONE`` on
    PostgreSQL, ``DATETIME(6)`` on MariaDB and MySQL (microseconds kept; the value is the
    UTC wall time, as on SQLite), read back as aware UTC by :func:`as_utc`."""
    return sa.DateTime(timezone=True).with_variant(
        mysql.DATETIME(fsp=6), "mysql", "mariadb"
    )
