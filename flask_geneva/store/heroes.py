"""The store's knowledge of heroes: which hero class a lock can join, and the hero's row
read by the same statement that locks the workflow (the hero path's one round trip).

A mixin of :class:`~flask_geneva.store.base.Store`: it relies on the store's ``geneva``,
``sql`` (:class:`~flask_geneva.store.statements.Statements`) and ``_hero_guess`` (the
hero class of the last claim, which the claim's lock joins), and holds the store's
write-lock hook (a no-op where rows lock; SQLite's store takes its lock there).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva.store.values import HERO_SAMPLE, LockedStates


class HeroLocks:
    """Locks that read the hero's row with the workflow's."""

    geneva: Any
    sql: Any
    _hero_guess: type | None

    def _take_write_lock(self, session: Session, execution_id: Any = None,
                         workflow_id: Any = None) -> None:
        """Hook for databases without row locks (SQLite); row locks need nothing here."""

    def joinable_hero(self, hero_type: str | None) -> type | None:
        """The hero class named ``hero_type`` when a lock can join its row, else None."""
        if hero_type is None:
            return None
        guess = self._hero_guess
        if guess is not None and guess.__name__ == hero_type:
            return guess
        hero_class = self.geneva.hero_class(hero_type)
        if hero_class is None or not self.sql.can_join_hero(hero_class):
            return None
        return hero_class

    def lock_states_with_hero(
        self, session: Session, execution_id: Any, hero_class: type
    ) -> tuple[LockedStates, dict[str, Any] | None] | None:
        """:meth:`lock_states`, and the hero's row of ``hero_class`` read by the same
        statement (its column values by attribute name; None when it is gone)."""
        self._take_write_lock(session, execution_id=execution_id)
        row = session.connection().execute(
            self.sql.lock_states_with_hero(hero_class), {"hp_execution_id": execution_id}
        ).one_or_none()
        if row is None:
            return None
        locked = LockedStates(str(row[0]), int(row[1] or 0), row[2])
        mapping = row._mapping
        mapper: Any = sa.inspect(hero_class)
        key_label = f"hero_{mapper.primary_key[0].key}"
        if mapping[key_label] is None:
            return locked, None
        values = {
            prop.key: mapping[f"hero_{prop.columns[0].key}"] for prop in mapper.column_attrs
        }
        return locked, values

    def _guess_hero(self, hero_type: str | None) -> None:
        """Remember the hero class of the last claim, when its key can be joined on."""
        if hero_type is None or (
            self._hero_guess is not None and self._hero_guess.__name__ == hero_type
        ):
            return
        hero_class = self.geneva.hero_class(hero_type)
        if hero_class is not None and self.sql.can_join_hero(hero_class):
            self._hero_guess = hero_class

    def _recent_hero_classes(self, session: Session) -> list[type]:
        """The joinable hero classes of the newest workflows (a sample of
        :data:`HERO_SAMPLE`), most frequent first; the first becomes the claims' guess."""
        workflows = self.sql.workflows
        sample = session.connection().execute(
            sa.select(workflows.c.hero_type)
            .order_by(workflows.c.id.desc())
            .limit(HERO_SAMPLE)
        ).scalars()
        counts = Counter(hero_type for hero_type in sample if hero_type is not None)
        classes = []
        for hero_type, _ in counts.most_common(3):
            hero_class = self.joinable_hero(hero_type)
            if hero_class is not None:
                classes.append(hero_class)
        if classes and self._hero_guess is None:
            self._hero_guess = classes[0]
        return classes
