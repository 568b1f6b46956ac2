"""The SQLite store: the shared statements, one at a time, under the database's lock.

SQLite has no row locks. A write that changes nothing (``UPDATE ... SET state = state``)
starts the transaction as the writer, which serialises it against every other writer,
and a refused action leaves the row exactly as it was.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from flask_geneva.store.base import Store


class SqliteStore(Store):
    """Writes one statement at a time, each lock taken as a no-op write first."""

    row_locks = False
    dialect = "sqlite"

    def _insert(self, table: Any) -> Any:
        return sqlite.insert(table)

    def _take_write_lock(
        self, session: Session, execution_id: Any = None, workflow_id: Any = None
    ) -> None:
        connection = session.connection()
        if execution_id is not None:
            connection.execute(
                self.sql.touch_workflow_of_execution, {"hp_execution_id": execution_id}
            )
        else:
            connection.execute(self.sql.touch_workflow, {"hp_workflow_id": workflow_id})
