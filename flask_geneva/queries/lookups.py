"""Finding workflows: the list filters, one workflow by id, one workflow's history.

Filters are validated here so that the UI and the CLI give the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from flask_geneva.errors import InvalidInputError
from flask_geneva.ids import IdOutOfRangeError, parse_workflow_id
from flask_geneva.states import WorkflowState
from flask_geneva.text import quoted

#: The error of a malformed filter or id (the name older code imports).
QueryError = InvalidInputError  # the same class as flask_geneva.errors.QueryError


@dataclass(frozen=True)
class WorkflowFilters:
    """Filters of the workflow list; every field is optional."""

    state: str | None = None
    workflow: str | None = None
    hero_type: str | None = None
    hero_id: str | None = None

    def validated(self) -> WorkflowFilters:
        if self.state is not None and self.state not in {s.value for s in WorkflowState}:
            raise InvalidInputError(
                f"unknown state {self.state!r}; states are "
                f"{', '.join(s.value for s in WorkflowState)}"
            )
        if self.hero_id is not None and self.hero_type is None:
            raise InvalidInputError("a hero id needs a hero type too")
        for name in ("workflow", "hero_type", "hero_id"):
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                # PostgreSQL refuses NUL in text outright; no stored value holds one anyway.
                raise InvalidInputError(
                    f"{name} must not contain a NUL character, got {quoted(value)}"
                )
        return self

    @property
    def is_empty(self) -> bool:
        """True when no filter is set."""
        return not any((self.state, self.workflow, self.hero_type, self.hero_id))


def parse_hero(text: str) -> tuple[str, str]:
    """``"User:42"`` → ``("User", "42")``."""
    hero_type, sep, hero_id = text.partition(":")
    if not sep or not hero_type or not hero_id:
        raise InvalidInputError(
            f"a hero is written TYPE:ID (for example User:42), got {quoted(text)}"
        )
    return hero_type, hero_id


def find_workflow(geneva: Any, workflow_id: Any) -> Any:
    """The workflow with this id, or None. Malformed ids raise :class:`InvalidInputError`."""
    try:
        key = parse_workflow_id(geneva, workflow_id)
    except IdOutOfRangeError:
        return None  # larger than any BIGINT key: no such workflow
    return geneva.db.session.get(geneva.Workflow, key)


def filtered_workflows(geneva: Any, filters: WorkflowFilters) -> sa.Select[Any]:
    """A ``select`` of the workflows matching ``filters`` (not ordered)."""
    filters = filters.validated()
    model = geneva.Workflow
    query = sa.select(model)
    if filters.state is not None:
        query = query.where(model.state == filters.state)
    if filters.workflow is not None:
        query = query.where(model.workflow_class == filters.workflow)
    if filters.hero_type is not None:
        query = query.where(model.hero_type == filters.hero_type)
    if filters.hero_id is not None:
        query = query.where(model.hero_id == filters.hero_id)
    return query


def execution_history(geneva: Any, workflow: Any) -> list[Any]:
    """Every execution of ``workflow``, oldest first."""
    model = geneva.StepExecution
    return list(
        geneva.db.session.scalars(
            sa.select(model).where(model.workflow_id == workflow.id).order_by(model.sequence)
        )
    )


def sql_constant(value: str) -> Any:
    """A constant written into the SQL text instead of sent as a parameter.

    PostgreSQL uses a partial index (``... WHERE state = 'scheduled'``) only when it can
    prove the query implies the index's predicate; a cached generic plan, where the
    value is a ``$1`` placeholder, cannot, and would fall back to reading the table.
    """
    return sa.literal(value, literal_execute=True)
