"""The one writer of workflow state: a store per database dialect.

Every change of a workflow's or an execution's state is written by a :class:`Store`: the
executor's claims and finalizes, the operator actions, housekeeping's recoveries and the
testing helpers. The decisions come from :mod:`flask_geneva.machine` as a
:class:`~flask_geneva.machine.Plan`; a store writes it with prebuilt Core statements
(compiled once, then served from SQLAlchemy's cache), never through the unit of work.

- :class:`~flask_geneva.store.sqlite.SqliteStore` writes one statement at a time and takes
  the database's write lock first (SQLite has no row locks).
- :class:`~flask_geneva.store.postgresql.PostgresStore` writes the hot outcomes in one
  round trip (data-modifying CTEs, the lock included).
- :class:`~flask_geneva.store.mysql.MysqlStore` (MariaDB, MySQL) writes one statement at
  a time under row locks, the workflow's row always locked first.

The ORM only loads the workflow for step code.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from flask_geneva.store.base import Store
from flask_geneva.store.values import Applied, LockedStates, MessageOptions, Target

__all__ = ["Applied", "LockedStates", "MessageOptions", "Store", "Target", "store_for"]


def store_for(geneva: Any, session: Session | Any) -> Store:
    """The store of ``geneva`` for the database ``session`` is bound to (built once)."""
    dialect = session.get_bind().dialect.name
    stores: dict[str, Store] = geneva.__dict__.setdefault("_geneva_stores", {})
    store = stores.get(dialect)
    if store is None:
        store = stores[dialect] = _store_class(dialect)(geneva)
    return store


def _store_class(dialect: str) -> type[Store]:
    if dialect == "postgresql":
        from flask_geneva.store.postgresql import PostgresStore

        return PostgresStore
    if dialect in ("mysql", "mariadb"):
        from flask_geneva.store.mysql import MysqlStore

        return MysqlStore
    from flask_geneva.store.sqlite import SqliteStore

    return SqliteStore
