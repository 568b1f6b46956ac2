"""The MariaDB and MySQL store: the shared statements, one at a time, under row locks.

What the other stores lean on and these databases lack, and what this store does instead:

- ``ON CONFLICT DO NOTHING``: a new workflow is a plain ``INSERT``; a duplicate key on
  the one-ongoing index (error 1062) is the refusal. InnoDB undoes only the failed
  statement, so the transaction stays usable, as after PostgreSQL's ``DO NOTHING``.
- ``UPDATE ... RETURNING`` (MariaDB has none, MySQL 8 has none at all): a row that is
  needed after a write is read again, under the lock the transaction holds.
- ``FOR UPDATE OF``: MariaDB locks every row a locking join reads, so a lock never joins
  the hero's row (it would lock the application's own row); the hero is read apart.
- Lock order: InnoDB locks rows in the order its plan reads them, which for a lock by
  execution id is the execution first. Each such lock first takes the workflow's row on
  its own (``lock_workflow_of_execution``), so the order is always the workflow, then
  the execution (SPEC section 10, invariant 4).

Geneva's connections run in ``READ COMMITTED`` (see :mod:`flask_geneva.mysql`), like
PostgreSQL's default: a read sees what was committed before it, and a locking read
locks no gaps.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva.loading import attach_as_loaded, values_from
from flask_geneva.store.base import Store

#: MariaDB's and MySQL's error number for a duplicate key.
DUPLICATE_KEY: Final = 1062


class MysqlStore(Store):
    """Writes one statement at a time; locks the workflow row before an execution's."""

    dialect = "mysql"

    def __init__(self, geneva: Any) -> None:
        super().__init__(geneva)
        workflows, executions = self.sql.workflows, self.sql.executions
        owner = sa.select(executions.c.workflow_id).where(
            executions.c.id == self.sql.execution_id
        )
        #: The workflow row of an execution, locked alone (the subquery locks nothing).
        self.lock_workflow_of_execution = (
            sa.select(workflows.c.id)
            .where(workflows.c.id == owner.scalar_subquery())
            .with_for_update()
        )
        self._select_workflow = sa.select(*workflows.c).where(
            workflows.c.id == self.sql.workflow_id
        )

    def _take_write_lock(self, session: Session, execution_id: Any = None,
                         workflow_id: Any = None) -> None:
        if execution_id is not None:
            session.connection().execute(
                self.lock_workflow_of_execution, {"hp_execution_id": execution_id}
            ).all()

    # A locking join would lock the hero's row too (no FOR UPDATE OF on MariaDB).

    def joinable_hero(self, hero_type: str | None) -> type | None:
        return None

    def _guess_hero(self, hero_type: str | None) -> None:
        return None

    def insert_workflow(self, session: Session, cls: type, values: dict[str, Any]) -> Any:
        table = self.sql.workflows
        statement = self._workflow_insert
        if statement is None:
            statement = self._workflow_insert = sa.insert(table).values(
                {column: sa.bindparam(f"wf_{column}")
                 for column in self._workflow_insert_columns.values()}
            )  # fmt: skip
        params = self.workflow_params(values)
        connection = session.connection()
        try:
            inserted = connection.execute(statement, params)
        except sa.exc.IntegrityError as error:
            if _is_duplicate_of(error, self.sql.one_ongoing_index.name):
                return None
            raise
        key = inserted.inserted_primary_key
        assert key is not None
        row = connection.execute(self._select_workflow, {"hp_workflow_id": key[0]}).one()
        return attach_as_loaded(session, cls, values_from(cls, row._mapping))

    def _update_workflow_returning(self, connection: sa.Connection, statement: Any,
                                   params: dict[str, Any]) -> Any:
        connection.execute(statement, params)
        return connection.execute(
            self._select_workflow, {"hp_workflow_id": params["hp_workflow_id"]}
        ).one()._mapping


def _is_duplicate_of(error: sa.exc.IntegrityError, index_name: str | None) -> bool:
    """Whether ``error`` is a duplicate key on the index ``index_name``."""
    args: tuple[Any, ...] = getattr(error.orig, "args", ())
    return bool(args) and args[0] == DUPLICATE_KEY and f"{index_name}'" in str(args[-1])
