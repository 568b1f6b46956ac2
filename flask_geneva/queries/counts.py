"""Counting workflows for the overview: by state and by class, capped so they stay cheap.

Counts stop reading after :data:`COUNT_CAP` rows instead of scanning a whole table;
above the cap PostgreSQL's planner estimate is reported, marked as an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.states import WorkflowState

#: A count reads at most this many rows; above it the count is reported as "more than".
COUNT_CAP: Final = 10_000
#: The cap of each cell of the counts by class and state (five per class).
CLASS_COUNT_CAP: Final = 1_000


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


def run_capped_counts(
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
    counts = run_capped_counts(
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
        run_capped_counts(
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
