"""Read-only queries shared by the status UI and the CLI.

Nothing here changes state. Each function takes the ``Geneva`` instance and uses
``db.session``; filters are validated here so both front ends give the same errors.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from flask_geneva.states import WorkflowState


class QueryError(ValueError):
    """A filter or id given by a user is malformed; the message says which and why."""


@dataclass(frozen=True)
class WorkflowFilters:
    """Filters of the workflow list; every field is optional."""

    state: str | None = None
    workflow: str | None = None
    hero_type: str | None = None
    hero_id: str | None = None

    def validated(self) -> WorkflowFilters:
        if self.state is not None and self.state not in {s.value for s in WorkflowState}:
            raise QueryError(
                f"unknown state {self.state!r}; states are "
                f"{', '.join(s.value for s in WorkflowState)}"
            )
        if self.hero_id is not None and self.hero_type is None:
            raise QueryError("a hero id needs a hero type too")
        return self


def parse_hero(text: str) -> tuple[str, str]:
    """``"User:42"`` → ``("User", "42")``."""
    hero_type, sep, hero_id = text.partition(":")
    if not sep or not hero_type or not hero_id:
        raise QueryError(f"a hero is written TYPE:ID (for example User:42), got {text!r}")
    return hero_type, hero_id


def coerce_workflow_id(geneva: Any, value: Any) -> Any:
    """Turn a workflow id given as text into the primary key's type, or raise QueryError."""
    text = str(value).strip()
    if geneva.uuid_primary_keys:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise QueryError(f"workflow ids are UUIDs; {text!r} is not one") from None
    if not text.isdigit():
        raise QueryError(f"workflow ids are whole numbers; {text!r} is not one")
    return int(text)


def find_workflow(geneva: Any, workflow_id: Any) -> Any:
    """The workflow with this id, or None. Malformed ids raise :class:`QueryError`."""
    key = coerce_workflow_id(geneva, workflow_id)
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


def list_workflows(geneva: Any, filters: WorkflowFilters, limit: int = 50) -> list[Any]:
    """The newest workflows matching ``filters``, newest first."""
    model = geneva.Workflow
    query = (
        filtered_workflows(geneva, filters)
        .order_by(model.created_at.desc(), model.id.desc())
        .limit(limit)
    )
    return list(geneva.db.session.scalars(query))


def execution_history(geneva: Any, workflow: Any) -> list[Any]:
    """Every execution of ``workflow``, oldest first."""
    model = geneva.StepExecution
    return list(
        geneva.db.session.scalars(
            sa.select(model).where(model.workflow_id == workflow.id).order_by(model.sequence)
        )
    )


def counts_by_state(geneva: Any) -> dict[str, int]:
    """How many workflows are in each state (every state present, zero included)."""
    model = geneva.Workflow
    rows = geneva.db.session.execute(sa.select(model.state, sa.func.count()).group_by(model.state))
    counts = {state.value: 0 for state in WorkflowState}
    for state, count in rows:
        counts[str(state)] = count
    return counts
