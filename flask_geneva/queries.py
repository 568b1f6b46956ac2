"""Read-only queries shared by the status UI and the CLI.

Nothing here changes state. Each function takes the ``Geneva`` instance and uses
``db.session``; filters are validated here so both front ends give the same errors.

Every query is written to stay fast on large tables (a million workflows, several million
executions): each one is served by an index of the models (named beside it), and counts
stop reading after :data:`COUNT_CAP` rows instead of scanning a whole table. Above the cap
PostgreSQL's planner estimate is reported, marked as an estimate.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.errors import QueryError
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.timeutil import as_utc, utcnow

#: A count reads at most this many rows; above it the count is reported as "more than".
COUNT_CAP: Final = 10_000
#: The cap of each cell of the counts by class and state (five per class).
CLASS_COUNT_CAP: Final = 1_000
#: A scheduled execution this far past its due time, not yet started, is overdue. Steps
#: normally start within milliseconds of their due time, so a few seconds means trouble.
OVERDUE_GRACE: Final = timedelta(seconds=30)
#: The most workflows a list page shows.
MAX_PAGE_SIZE: Final = 100
#: The list page size when none is asked for.
DEFAULT_PAGE_SIZE: Final = 50
#: How many rows each health list (stuck, overdue, paused, failures) shows.
HEALTH_LIST_LIMIT: Final = 10
#: The most executions the workflow page loads (the newest ones).
HISTORY_LIMIT: Final = 1000
#: Operator actions each workflow state allows, in the order they are offered.
ACTIONS_BY_STATE: Final[dict[str, tuple[str, ...]]] = {
    WorkflowState.READY.value: ("pause", "cancel", "skip"),
    WorkflowState.PAUSED.value: ("resume", "cancel", "skip"),
}


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
        for name in ("workflow", "hero_type", "hero_id"):
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                # PostgreSQL refuses NUL in text outright; no stored value holds one anyway.
                raise QueryError(f"{name} must not contain a NUL character, got {value!r}")
        return self

    @property
    def is_empty(self) -> bool:
        """True when no filter is set."""
        return not any((self.state, self.workflow, self.hero_type, self.hero_id))


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
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit()
        raise QueryError(f"workflow ids are whole numbers; {text!r} is not one")
    return int(text)


def find_workflow(geneva: Any, workflow_id: Any) -> Any:
    """The workflow with this id, or None. Malformed ids raise :class:`QueryError`."""
    key = coerce_workflow_id(geneva, workflow_id)
    if not geneva.uuid_primary_keys and key > 2**63 - 1:
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


def list_workflows(geneva: Any, filters: WorkflowFilters, limit: int = 50) -> list[Any]:
    """The newest workflows matching ``filters``, newest first."""
    return _fetch_page(geneva, filters, None, None, limit).workflows


def execution_history(geneva: Any, workflow: Any) -> list[Any]:
    """Every execution of ``workflow``, oldest first."""
    model = geneva.StepExecution
    return list(
        geneva.db.session.scalars(
            sa.select(model).where(model.workflow_id == workflow.id).order_by(model.sequence)
        )
    )


def counts_by_state(geneva: Any) -> dict[str, int]:
    """How many workflows are in each state (every state present, zero included).

    Exact, so it reads every row; on large tables prefer :func:`state_counts`.
    """
    model = geneva.Workflow
    rows = geneva.db.session.execute(sa.select(model.state, sa.func.count()).group_by(model.state))
    counts = {state.value: 0 for state in WorkflowState}
    for state, count in rows:
        counts[str(state)] = count
    return counts


def _literal(value: str) -> Any:
    """A constant written into the SQL text instead of sent as a parameter.

    PostgreSQL uses a partial index (``... WHERE state = 'scheduled'``) only when it can
    prove the query implies the index's predicate; a cached generic plan, where the
    value is a ``$1`` placeholder, cannot, and would fall back to reading the table.
    """
    return sa.literal(value, literal_execute=True)


# ------------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class Count:
    """A count that stops at a cap: exact up to ``cap``, "more than ``cap``" above it.

    ``estimate`` is PostgreSQL's planner estimate when the count is capped (``None`` on
    other databases, or when the planner expects fewer rows than the cap).
    """

    value: int
    capped: bool = False
    estimate: int | None = None

    @property
    def exact(self) -> bool:
        """True when ``value`` is the true number of rows."""
        return not self.capped

    def as_json(self) -> dict[str, Any]:
        """``{"count": n, "exact": bool, "estimate": n | null}``."""
        return {"count": self.value, "exact": self.exact, "estimate": self.estimate}


def _capped_count_column(query: sa.Select[Any], cap: int) -> sa.ScalarSelect[Any]:
    """``(SELECT count(*) FROM (query LIMIT cap + 1))``: reads at most ``cap + 1`` rows."""
    limited = query.limit(cap + 1).subquery()
    return sa.select(sa.func.count()).select_from(limited).scalar_subquery()


def _run_capped_counts(
    geneva: Any,
    queries: Sequence[sa.Select[Any]],
    cap: int,
    estimate: Callable[[int, sa.Select[Any]], int | None] | None = None,
) -> list[Count]:
    """Run many capped counts in one round trip; estimate the capped ones on PostgreSQL.

    ``estimate(index, query)`` gives the estimate of a capped count; by default each is
    asked of the planner (:func:`planner_estimate`, one round trip each).
    """
    if not queries:
        return []
    session = geneva.db.session
    columns = [_capped_count_column(q, cap).label(f"c{i}") for i, q in enumerate(queries)]
    row = session.execute(sa.select(*columns)).one()
    counts: list[Count] = []
    for index, (query, value) in enumerate(zip(queries, row, strict=True)):
        if value <= cap:
            counts.append(Count(int(value)))
            continue
        guess = estimate(index, query) if estimate else planner_estimate(geneva, query)
        counts.append(Count(cap, capped=True, estimate=guess if guess and guess > cap else None))
    return counts


@dataclass(frozen=True)
class WorkflowStatistics:
    """PostgreSQL's statistics of ``geneva_workflows`` (``pg_class``, ``pg_stats``).

    ``rows`` is the table's estimated row count; ``frequencies`` the fraction of rows
    holding each common value of ``state`` and ``workflow_class``. An estimate from them
    is the planner's own for ``state = ...`` (and ``workflow_class = ...``), for the price
    of one query instead of one ``EXPLAIN`` per count.
    """

    rows: float
    frequencies: dict[str, dict[str, float]]

    def estimate(self, **values: str) -> int | None:
        """Estimated rows with these column values (``state=``, ``workflow_class=``)."""
        fraction = 1.0
        for column, value in values.items():
            frequency = self.frequencies.get(column, {}).get(value)
            if frequency is None:
                return None
            fraction *= frequency
        return round(self.rows * fraction)


def workflow_statistics(geneva: Any) -> WorkflowStatistics | None:
    """Read the planner's statistics of the workflows table (None when there are none)."""
    session = geneva.db.session
    if session.get_bind().dialect.name != "postgresql":
        return None
    table = geneva.Workflow.__table__.name
    rows = session.scalar(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table)"),
        {"table": table},
    )
    if rows is None or rows <= 0:
        return None  # never analyzed
    frequencies: dict[str, dict[str, float]] = {}
    for column, values, fractions in session.execute(
        sa.text(
            "SELECT attname, most_common_vals::text::text[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = :table "
            "AND attname IN ('state', 'workflow_class')"
        ),
        {"table": table},
    ):
        if values is not None and fractions is not None:
            frequencies[column] = dict(zip(values, fractions, strict=False))
    return WorkflowStatistics(float(rows), frequencies)


def planner_estimate(geneva: Any, query: sa.Select[Any]) -> int | None:
    """PostgreSQL's estimate of how many rows ``query`` returns (None elsewhere)."""
    session = geneva.db.session
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    sql = str(query.compile(dialect=bind.dialect, compile_kwargs={"literal_binds": True}))
    plan = session.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _state_query(geneva: Any, state: str, workflow_class: str | None = None) -> sa.Select[Any]:
    """The rows of one state (and class) in index order, so that a capped count reads the
    ``geneva_workflows_state`` or ``geneva_workflows_class`` index, never the table."""
    model = geneva.Workflow.__table__
    query = sa.select(sa.literal(1)).select_from(model).where(model.c.state == state)
    if workflow_class is not None:
        query = query.where(model.c.workflow_class == workflow_class)
    return query.order_by(model.c.created_at)


def state_counts(geneva: Any, cap: int = COUNT_CAP) -> dict[str, Count]:
    """How many workflows are in each state, each count capped at ``cap`` rows.

    Served by the ``geneva_workflows_state`` index (index-only scans), so it stays fast
    however many finished workflows the table holds.
    """
    states = [state.value for state in WorkflowState]
    statistics = _lazy_statistics(geneva)
    counts = _run_capped_counts(
        geneva,
        [_state_query(geneva, s) for s in states],
        cap,
        lambda index, _query: statistics().estimate(state=states[index]),
    )
    return dict(zip(states, counts, strict=True))


def _lazy_statistics(geneva: Any) -> Callable[[], WorkflowStatistics]:
    """Read :func:`workflow_statistics` once, and only if a count needs an estimate."""
    cache: list[WorkflowStatistics] = []

    def get() -> WorkflowStatistics:
        if not cache:
            cache.append(workflow_statistics(geneva) or WorkflowStatistics(0.0, {}))
        return cache[0]

    return get


def stored_workflow_classes(geneva: Any) -> list[str]:
    """The distinct ``workflow_class`` values in the table, in name order.

    A loose index scan (a recursive query that jumps from one class to the next on the
    ``geneva_workflows_class`` index) reads one index entry per class, not one per row.
    """
    table = geneva.Workflow.__table__
    column = table.c.workflow_class
    first = sa.select(sa.func.min(column).label("name")).cte("classes", recursive=True)
    following = sa.select(
        sa.select(sa.func.min(column)).where(column > first.c.name).scalar_subquery().label("name")
    ).where(first.c.name.is_not(None))
    classes = first.union_all(following)
    rows = geneva.db.session.scalars(sa.select(classes.c.name).where(classes.c.name.is_not(None)))
    return sorted(rows)


@dataclass(frozen=True)
class ClassCounts:
    """The workflows of one class, counted by state."""

    workflow_class: str
    #: False when the code no longer defines this class (its rows load as the base).
    defined: bool
    counts: dict[str, Count]

    @property
    def ongoing(self) -> int:
        """Ready, performing and paused workflows (a lower bound when a count is capped)."""
        return sum(
            self.counts[s].value
            for s in (WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED)
        )


def class_counts(geneva: Any, cap: int = CLASS_COUNT_CAP) -> list[ClassCounts]:
    """Counts by state for every class in the table or defined in the code, by name."""
    stored = stored_workflow_classes(geneva)
    names = sorted(set(stored) | set(geneva.workflow_classes))
    in_table = set(stored)
    states = [state.value for state in WorkflowState]
    cells = [(name, state) for name in names if name in in_table for state in states]
    statistics = _lazy_statistics(geneva)
    counts = iter(
        _run_capped_counts(
            geneva,
            [_state_query(geneva, state, name) for name, state in cells],
            cap,
            lambda index, _query: statistics().estimate(
                workflow_class=cells[index][0], state=cells[index][1]
            ),
        )
    )
    result = []
    for name in names:
        if name in in_table:
            by_state = {state: next(counts) for state in states}
        else:
            by_state = {state: Count(0) for state in states}
        result.append(ClassCounts(name, name in geneva.workflow_classes, by_state))
    return result


# --------------------------------------------------------------------------- pagination


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
        """Read a cursor from a URL; raises :class:`QueryError` when it is malformed."""
        micros, sep, key = text.partition("-")
        if not sep or not (micros.isascii() and micros.isdigit()) or not key:
            raise QueryError(
                f"malformed page cursor {text!r}; follow the Older / Newer links instead"
            )
        try:
            created_at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise QueryError(f"page cursor {text!r} is out of range") from None
        return cls(created_at, coerce_workflow_id(geneva, key))

    @classmethod
    def of(cls, workflow: Any) -> Cursor:
        """The cursor pointing at ``workflow``."""
        return cls(as_utc(workflow.created_at) or _EPOCH, workflow.id)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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
        raise QueryError("give either before= or after=, not both")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise QueryError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
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


# ----------------------------------------------------------------------- executions


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
                [_literal(StepState.SCHEDULED.value), _literal(StepState.IN_PROGRESS.value)]
            ),
        )
    )
    active = {row.workflow_id: row for row in active_rows}
    return {w.id: WorkflowActivity(active=active.get(w.id), last=last.get(w.id)) for w in workflows}


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class Health:
    """Why things may not be moving: the overview's health panel."""

    now: datetime
    #: When the oldest due outbox row that was never published became due (None: none).
    outbox_oldest_unpublished_at: datetime | None
    #: Due outbox rows waiting for a worker to claim them (published or not).
    outbox_due: Count
    stuck_in_progress_threshold: timedelta
    #: ``(execution, workflow)`` running longer than the threshold, oldest first.
    stuck_in_progress: list[tuple[Any, Any]]
    stuck_in_progress_count: Count
    stuck_scheduled_threshold: timedelta
    #: ``(execution, workflow)`` due more than :data:`OVERDUE_GRACE` ago and still waiting
    #: for a worker, oldest first (a paused workflow's kept execution waits for resume()).
    overdue_scheduled: list[tuple[Any, Any]]
    overdue_scheduled_count: Count
    #: ``(workflow, last execution)`` of the most recently paused workflows.
    paused: list[tuple[Any, Any]]
    #: ``(execution, workflow)`` of the latest failed attempts, newest first.
    recent_failures: list[tuple[Any, Any]]

    @property
    def outbox_lag(self) -> timedelta | None:
        """How long the oldest due, never-published outbox row has waited."""
        if self.outbox_oldest_unpublished_at is None:
            return None
        return max(self.now - self.outbox_oldest_unpublished_at, timedelta(0))

    @property
    def ok(self) -> bool:
        """True when nothing is stuck, overdue or waiting in the outbox past the grace."""
        lag = self.outbox_lag
        return (
            not self.stuck_in_progress
            and not self.overdue_scheduled
            and (lag is None or lag <= OVERDUE_GRACE)
        )


def health(
    geneva: Any,
    *,
    stuck_in_progress_threshold: timedelta,
    stuck_scheduled_threshold: timedelta,
    now: datetime | None = None,
    limit: int = HEALTH_LIST_LIMIT,
    cap: int = COUNT_CAP,
) -> Health:
    """Gather the overview's health panel; every part is one short index range scan."""
    now = now or utcnow()
    session = geneva.db.session
    wf = geneva.Workflow
    ex = geneva.StepExecution
    outbox = geneva.OutboxMessage.__table__

    # geneva_outbox_due (available_at)
    oldest = session.scalar(
        sa.select(outbox.c.available_at)
        .where(outbox.c.available_at <= now, outbox.c.published_at.is_(None))
        .order_by(outbox.c.available_at)
        .limit(1)
    )
    outbox_due_query = (
        sa.select(sa.literal(1))
        .select_from(outbox)
        .where(outbox.c.available_at <= now)
        .order_by(outbox.c.available_at)
    )

    # geneva_step_executions_in_progress (started_at) WHERE state = 'in_progress'
    stuck_before = now - stuck_in_progress_threshold
    stuck_where = (
        ex.state == _literal(StepState.IN_PROGRESS.value),
        ex.started_at < stuck_before,
    )
    stuck = session.execute(
        sa.select(ex, wf)
        .join(wf, wf.id == ex.workflow_id)
        .where(*stuck_where)
        .order_by(ex.started_at)
        .limit(limit)
    ).all()
    stuck_query = (
        sa.select(sa.literal(1))
        .select_from(ex.__table__)
        .where(*stuck_where)
        .order_by(ex.started_at)
    )

    # A scheduled step of a ready workflow keeps its outbox row until a worker claims it;
    # a paused workflow's kept execution has none (pause() withdrew it), and waits for
    # resume(), not for a worker. So the outbox's index (available_at) finds exactly the
    # overdue steps, without reading past the kept executions of paused workflows.
    overdue_before = now - OVERDUE_GRACE
    # The oldest rows first, then their executions: joined before the LIMIT, PostgreSQL
    # would fetch and sort every overdue row (it underestimates how many are scheduled).
    oldest_rows = (
        sa.select(outbox.c.execution_id, outbox.c.available_at)
        .where(outbox.c.available_at < overdue_before)
        .order_by(outbox.c.available_at)
        .limit(limit)
        .subquery("oldest_overdue")
    )
    overdue = session.execute(
        sa.select(ex, wf)
        .select_from(oldest_rows)
        .join(ex.__table__, ex.id == oldest_rows.c.execution_id)
        .join(wf.__table__, wf.id == ex.workflow_id)
        .where(ex.state == _literal(StepState.SCHEDULED.value))
        .order_by(oldest_rows.c.available_at)
    ).all()
    overdue_query = (
        sa.select(sa.literal(1))
        .select_from(outbox)
        .where(outbox.c.available_at < overdue_before)
        .order_by(outbox.c.available_at)
    )

    outbox_due, stuck_count, overdue_count = _run_capped_counts(
        geneva, [outbox_due_query, stuck_query, overdue_query], cap
    )

    # geneva_workflows_transitioned (state, transitioned_at)
    paused_workflows = list(
        session.scalars(
            sa.select(wf)
            .where(wf.state == _literal(WorkflowState.PAUSED.value))
            .order_by(wf.transitioned_at.desc())
            .limit(limit)
        )
    )
    activity = workflow_activity(geneva, paused_workflows)
    paused = [(w, activity[w.id].last) for w in paused_workflows]

    # geneva_step_executions_failures (finished_at) WHERE error_class_name IS NOT NULL
    failures = session.execute(
        sa.select(ex, wf)
        .join(wf, wf.id == ex.workflow_id)
        .where(ex.error_class_name.is_not(None), ex.finished_at.is_not(None))
        .order_by(ex.finished_at.desc())
        .limit(limit)
    ).all()

    return Health(
        now=now,
        outbox_oldest_unpublished_at=as_utc(oldest),
        outbox_due=outbox_due,
        stuck_in_progress_threshold=stuck_in_progress_threshold,
        stuck_in_progress=[(e, w) for e, w in stuck],
        stuck_in_progress_count=stuck_count,
        stuck_scheduled_threshold=stuck_scheduled_threshold,
        overdue_scheduled=[(e, w) for e, w in overdue],
        overdue_scheduled_count=overdue_count,
        paused=paused,
        recent_failures=[(e, w) for e, w in failures],
    )


# ------------------------------------------------------------------------ one workflow


@dataclass(frozen=True)
class Attempt:
    """One execution of a step, numbered among the executions of that step (1, 2, ...)."""

    execution: Any
    attempt: int


@dataclass
class StepRow:
    """One step of the workflow page: the definition beside its executions."""

    name: str
    #: 1-based position in the class; None for a step the code no longer has.
    position: int | None
    #: The DSL's :class:`~flask_geneva.dsl.StepDefinition`; None when no longer defined.
    definition: Any | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def defined(self) -> bool:
        """False when executions exist for a step the class no longer has."""
        return self.definition is not None

    @property
    def latest(self) -> Any | None:
        """The step's newest execution."""
        return self.attempts[-1].execution if self.attempts else None


@dataclass(frozen=True)
class Due:
    """What happens next to a workflow, and whether it is late.

    ``kind`` is ``"scheduled"`` (a step waits for its time), ``"running"`` (a step is in
    progress), ``"paused"`` (waits for ``resume()``) or ``"done"`` (finished/canceled).
    """

    kind: str
    step_name: str | None
    execution: Any | None
    #: When the scheduled step is due, or when the running step started.
    at: datetime | None
    #: Past due by more than OVERDUE_GRACE (scheduled), or running past the threshold.
    overdue: bool
    #: Past the housekeeping threshold: housekeeping will recover the execution.
    stuck: bool


@dataclass(frozen=True)
class OperatorAction:
    """An operator action the workflow's state allows, with its CLI command."""

    name: str
    command: str


@dataclass(frozen=True)
class WorkflowDetail:
    """Everything the workflow page shows."""

    workflow: Any
    #: False when the workflow's class is no longer defined in the code.
    class_defined: bool
    steps: list[StepRow]
    #: Executions of steps the code no longer has, grouped by step name.
    removed_steps: list[StepRow]
    #: The loaded executions, oldest first (the newest :data:`HISTORY_LIMIT`).
    executions: list[Any]
    #: How many executions the workflow has had in all.
    execution_total: int
    due: Due
    actions: list[OperatorAction]

    @property
    def history_truncated(self) -> bool:
        """True when older executions were left out of ``executions``."""
        return self.execution_total > len(self.executions)


def operator_actions(workflow: Any) -> list[OperatorAction]:
    """The actions the workflow's state allows, each with its ``flask geneva`` command."""
    return [
        OperatorAction(name, f"flask geneva {name} {workflow.id}")
        for name in ACTIONS_BY_STATE.get(str(workflow.state), ())
    ]


def workflow_detail(
    geneva: Any,
    workflow: Any,
    *,
    stuck_in_progress_threshold: timedelta,
    stuck_scheduled_threshold: timedelta,
    now: datetime | None = None,
    history_limit: int = HISTORY_LIMIT,
) -> WorkflowDetail:
    """Gather the workflow page: steps beside executions, what is due, the actions."""
    now = now or utcnow()
    model = geneva.StepExecution
    newest = list(
        geneva.db.session.scalars(
            sa.select(model)
            .where(model.workflow_id == workflow.id)
            .order_by(model.sequence.desc())
            .limit(history_limit)
        )
    )
    executions = list(reversed(newest))
    total = max(workflow.execution_count or 0, len(executions))
    cls = type(workflow)
    class_defined = bool(cls.is_defined())
    definitions = cls.steps() if class_defined else []
    steps = [StepRow(name=d.name, position=i, definition=d) for i, d in enumerate(definitions, 1)]
    by_name = {row.name: row for row in steps}
    removed: dict[str, StepRow] = {}
    attempt_numbers: dict[str, int] = {}
    # Attempt numbers count from the first loaded execution; with a truncated history they
    # are relative to what is shown (flagged by history_truncated).
    for execution in executions:
        name = execution.step_name
        attempt_numbers[name] = attempt_numbers.get(name, 0) + 1
        row = by_name.get(name)
        if row is None:
            row = removed.setdefault(name, StepRow(name=name, position=None, definition=None))
        row.attempts.append(Attempt(execution, attempt_numbers[name]))
    active = next(
        (
            e
            for e in reversed(executions)
            if e.state in (StepState.SCHEDULED.value, StepState.IN_PROGRESS.value)
        ),
        None,
    )
    return WorkflowDetail(
        workflow=workflow,
        class_defined=class_defined,
        steps=steps,
        removed_steps=list(removed.values()),
        executions=executions,
        execution_total=total,
        due=_due(
            workflow,
            active,
            now,
            stuck_in_progress_threshold=stuck_in_progress_threshold,
            stuck_scheduled_threshold=stuck_scheduled_threshold,
        ),
        actions=operator_actions(workflow),
    )


def _due(
    workflow: Any,
    active: Any | None,
    now: datetime,
    *,
    stuck_in_progress_threshold: timedelta,
    stuck_scheduled_threshold: timedelta,
) -> Due:
    state = str(workflow.state)
    if active is not None and active.state == StepState.IN_PROGRESS.value:
        started = as_utc(active.started_at)
        late = started is not None and now - started > stuck_in_progress_threshold
        return Due("running", active.step_name, active, started, overdue=late, stuck=late)
    if state == WorkflowState.PAUSED.value:
        at = as_utc(active.scheduled_for) if active is not None else None
        return Due("paused", workflow.next_step_name, active, at, overdue=False, stuck=False)
    if active is not None:
        at = as_utc(active.scheduled_for)
        assert at is not None
        return Due(
            "scheduled",
            active.step_name,
            active,
            at,
            overdue=now - at > OVERDUE_GRACE,
            stuck=now - at > stuck_scheduled_threshold,
        )
    if state in (WorkflowState.READY.value, WorkflowState.PERFORMING.value):
        # Ongoing, yet nothing scheduled or running: should not happen; show it plainly.
        return Due("scheduled", workflow.next_step_name, None, None, overdue=True, stuck=False)
    return Due("done", None, None, None, overdue=False, stuck=False)
