"""The newest-first workflow list: keyset pages, their cursors, and what each row shows.

Each page is one index range scan, however deep it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.errors import InvalidInputError
from flask_geneva.ids import parse_integer, parse_workflow_id
from flask_geneva.queries.lookups import WorkflowFilters, filtered_workflows, sql_constant
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.text import quoted
from flask_geneva.timeutil import as_utc

#: The most workflows a list page shows.
MAX_PAGE_SIZE: Final = 100
#: The list page size when none is asked for.
DEFAULT_PAGE_SIZE: Final = 50


def list_workflows(
    geneva: Any, filters: WorkflowFilters, limit: int = DEFAULT_PAGE_SIZE
) -> list[Any]:
    """The newest workflows matching ``filters``, newest first."""
    return _fetch_page(geneva, filters, None, None, limit).workflows


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first workflow list: a workflow's ``created_at`` and id.

    Written in URLs as ``<microseconds since the epoch>-<id>``.
    """

    created_at: datetime
    id: Any

    def encode(self) -> str:
        """The URL form of the cursor."""
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.id}"

    @classmethod
    def decode(cls, geneva: Any, text: str) -> Cursor:
        """Read a cursor from a URL; raises :class:`InvalidInputError` when it is malformed."""
        micros, sep, key = text.partition("-")
        if not sep or not (micros.isascii() and micros.isdigit()) or not key:
            raise InvalidInputError(
                f"malformed page cursor {quoted(text)}; follow the Older / Newer links instead"
            )
        try:
            offset = parse_integer(micros, name="a page cursor's time", maximum=_MAX_MICROS)
            created_at = _EPOCH + timedelta(microseconds=offset)
            workflow_id = parse_workflow_id(geneva, key)
        except InvalidInputError as error:
            raise InvalidInputError(
                f"cannot read page cursor {quoted(text)}: {error}; "
                f"follow the Older / Newer links instead"
            ) from None
        return cls(created_at, workflow_id)

    @classmethod
    def of(cls, workflow: Any) -> Cursor:
        """The cursor pointing at ``workflow``."""
        return cls(as_utc(workflow.created_at) or _EPOCH, workflow.id)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The latest time a cursor can name (the end of year 9999), in microseconds after 1970.
_MAX_MICROS: Final = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
)


@dataclass(frozen=True)
class WorkflowPage:
    """One page of the newest-first workflow list."""

    workflows: list[Any]
    #: Pass as ``before=`` for the next (older) page; None on the last page.
    older: Cursor | None
    #: Pass as ``after=`` for the previous (newer) page; None on the first page.
    newer: Cursor | None
    limit: int


def workflow_page(
    geneva: Any,
    filters: WorkflowFilters,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> WorkflowPage:
    """A page of workflows matching ``filters``, newest first, by keyset pagination.

    ``before`` gives the page of workflows older than that cursor, ``after`` the page
    just newer than it. Each page is one index range scan, however deep it is: by
    state on ``geneva_workflows_state``, by class on ``geneva_workflows_class``, by hero
    on ``geneva_workflows_hero``, otherwise on ``geneva_workflows_created``.
    """
    if before is not None and after is not None:
        raise InvalidInputError("give either before= or after=, not both")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    return _fetch_page(geneva, filters, before, after, limit)


def _fetch_page(
    geneva: Any,
    filters: WorkflowFilters,
    before: Cursor | None,
    after: Cursor | None,
    limit: int,
) -> WorkflowPage:
    model = geneva.Workflow
    key = sa.tuple_(model.created_at, model.id)
    query = filtered_workflows(geneva, filters)
    if after is not None:
        query = query.where(key > sa.tuple_(after.created_at, after.id)).order_by(
            model.created_at.asc(), model.id.asc()
        )
    else:
        if before is not None:
            query = query.where(key < sa.tuple_(before.created_at, before.id))
        query = query.order_by(model.created_at.desc(), model.id.desc())
    ascending = after is not None
    if filters.workflow is not None and filters.state is None and filters.hero_type is None:
        rows = _class_page(geneva, query, limit + 1, ascending=ascending)
    else:
        rows = list(geneva.db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    newer: Cursor | None
    older: Cursor | None
    if after is not None:
        rows.reverse()
        newer = Cursor.of(rows[0]) if more and rows else None
        older = Cursor.of(rows[-1]) if rows else after
    else:
        newer = None
        if before is not None:
            newer = Cursor.of(rows[0]) if rows else before
        older = Cursor.of(rows[-1]) if more else None
    return WorkflowPage(rows, older=older, newer=newer, limit=limit)


def _class_page(geneva: Any, query: sa.Select[Any], limit: int, *, ascending: bool) -> list[Any]:
    """A page of one class's workflows, in any state: one ordered range scan per state.

    ``geneva_workflows_class`` is ordered by (class, state, created_at, id): filtering by
    the class alone would read and sort all its rows. Instead each state gives its first
    ``limit`` (id, created_at) pairs from the index, the pairs are merged, and the
    ``limit`` winners are loaded by primary key.
    """
    model = geneva.Workflow
    session = geneva.db.session
    parts = [
        query.with_only_columns(model.id, model.created_at)
        .where(model.state == state.value)
        .limit(limit)
        .subquery()
        .select()
        for state in WorkflowState
    ]
    merged = sa.union_all(*parts).subquery("by_state")
    order = (merged.c.created_at, merged.c.id)
    ids = list(
        session.scalars(
            sa.select(merged.c.id)
            .order_by(*(order if ascending else (column.desc() for column in order)))
            .limit(limit)
        )
    )
    if not ids:
        return []
    rows = list(session.scalars(sa.select(model).where(model.id.in_(ids))))
    rows.sort(key=lambda w: (as_utc(w.created_at), w.id), reverse=not ascending)
    return rows


@dataclass(frozen=True)
class WorkflowActivity:
    """What a list row shows beside a workflow: its active and its last execution."""

    #: The scheduled or in-progress execution, if any.
    active: Any | None
    #: The execution with the highest sequence number (may be the active one).
    last: Any | None


def workflow_activity(geneva: Any, workflows: Iterable[Any]) -> dict[Any, WorkflowActivity]:
    """The active and last executions of each workflow, by workflow id (two queries).

    Uses ``geneva_step_executions_history`` (workflow_id, sequence) for the last execution
    of each workflow, whatever the size of its history.
    """
    workflows = list(workflows)
    if not workflows:
        return {}
    model = geneva.StepExecution
    session = geneva.db.session
    last_sequences = [(w.id, w.execution_count) for w in workflows if (w.execution_count or 0) > 0]
    last: dict[Any, Any] = {}
    if last_sequences:
        # One branch per distinct last sequence number (usually a handful), each a
        # ``workflow_id = ANY(...)`` index scan: a 500-pair row IN list costs PostgreSQL
        # tens of milliseconds just to plan.
        by_sequence: dict[int, list[Any]] = {}
        for workflow_id, sequence in last_sequences:
            by_sequence.setdefault(sequence, []).append(workflow_id)
        rows = session.scalars(
            sa.select(model).where(
                sa.or_(
                    *(
                        sa.and_(model.sequence == sequence, model.workflow_id.in_(ids))
                        for sequence, ids in by_sequence.items()
                    )
                )
            )
        )
        last = {row.workflow_id: row for row in rows}
    ids = [w.id for w in workflows]
    active_rows = session.scalars(
        sa.select(model).where(
            model.workflow_id.in_(ids),
            model.state.in_(
                [sql_constant(StepState.SCHEDULED.value), sql_constant(StepState.IN_PROGRESS.value)]
            ),
        )
    )
    active = {row.workflow_id: row for row in active_rows}
    return {w.id: WorkflowActivity(active=active.get(w.id), last=last.get(w.id)) for w in workflows}
