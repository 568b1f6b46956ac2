"""The databases geneva runs on, and what it sets on a MariaDB or MySQL connection.

PostgreSQL and SQLite need nothing. On MariaDB (≥ 10.6) and MySQL (≥ 8.0) every new
connection of the app's engine gets, once, when it is made:

- ``READ COMMITTED``, PostgreSQL's default: a read sees what was committed before it
  (InnoDB's default ``REPEATABLE READ`` would show a transaction an old snapshot beside
  the rows it locks), and locking reads lock rows, not the gaps between them (which
  would make scheduling wait for a relay's claim, and deadlock);
- the UTC session time zone (``+00:00``), so that anything the server reckons in time
  agrees with the UTC timestamps geneva writes (``DATETIME(6)``, microseconds kept).

An explicit ``isolation_level`` in ``SQLALCHEMY_ENGINE_OPTIONS`` other than
``READ COMMITTED`` is refused when the app is set up; so is a server older than the
versions above (``SKIP LOCKED`` came with MariaDB 10.6 and MySQL 8.0), when the first
connection is made.
"""

from __future__ import annotations

import re
from typing import Any, Final

import sqlalchemy as sa
from flask import Flask

from flask_geneva.errors import ConfigurationError

#: The SQLAlchemy backend names geneva's statements are written and tested for.
SUPPORTED_BACKENDS: Final = ("postgresql", "sqlite", "mysql", "mariadb")
#: The backends of MariaDB and MySQL (``mysql+pymysql://``, ``mariadb+mariadbconnector://``).
MYSQL_BACKENDS: Final = ("mysql", "mariadb")
#: The oldest servers geneva runs on.
MARIADB_MINIMUM: Final = (10, 6)
MYSQL_MINIMUM: Final = (8, 0)
#: The isolation level geneva's transactions need on MariaDB and MySQL.
MYSQL_ISOLATION_LEVEL: Final = "READ COMMITTED"

_CONNECTION_SETUP: Final = (
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION time_zone = '+00:00'",
)


def is_mysql(backend: str) -> bool:
    """Whether ``backend`` (a SQLAlchemy dialect or backend name) is MariaDB or MySQL."""
    return backend in MYSQL_BACKENDS


def prepare_mysql_engine(app: Flask, db: Any) -> None:
    """Have every new connection of ``app``'s default engine set up for geneva (above)."""
    options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    isolation = options.get("isolation_level")
    if isolation is not None and str(isolation).upper().replace("_", " ") != (
        MYSQL_ISOLATION_LEVEL
    ):
        raise ConfigurationError(
            f"SQLALCHEMY_ENGINE_OPTIONS['isolation_level'] is {isolation!r}: on MariaDB "
            f"and MySQL flask_geneva needs {MYSQL_ISOLATION_LEVEL!r} (it sets it on each "
            f"connection itself; remove the option or set it to {MYSQL_ISOLATION_LEVEL!r})"
        )
    with app.app_context():
        engine = db.engine
    if not sa.event.contains(engine, "connect", _set_up_connection):
        sa.event.listen(engine, "connect", _set_up_connection)
        # Connections the app opened before init_app (a query at start-up) were set up
        # without it: let the pool open new ones (one still checked out keeps the
        # server's settings until it is closed; the docs say to call init_app first).
        engine.dispose()


def _set_up_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT VERSION()")
        (version,) = cursor.fetchone()
        check_server_version(str(version))
        for statement in _CONNECTION_SETUP:
            cursor.execute(statement)
    finally:
        cursor.close()


def check_server_version(version: str) -> None:
    """Raise :class:`~flask_geneva.errors.ConfigurationError` for a server older than
    MariaDB 10.6 or MySQL 8.0 (``version`` as ``SELECT VERSION()`` says it)."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    mariadb = "mariadb" in version.lower()
    minimum = MARIADB_MINIMUM if mariadb else MYSQL_MINIMUM
    if numbers < minimum:
        name = "MariaDB" if mariadb else "MySQL"
        raise ConfigurationError(
            f"flask_geneva needs {name} {'.'.join(map(str, minimum))} or newer "
            f"(FOR UPDATE SKIP LOCKED); this server is {version}"
        )
