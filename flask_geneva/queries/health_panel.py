"""The overview's health panel: what is stuck, overdue, paused or failing.

Every part is one short index range scan, and every count is capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from flask_geneva.queries.counts import COUNT_CAP, Count, run_capped_counts
from flask_geneva.queries.lookups import sql_constant
from flask_geneva.queries.pages import workflow_activity
from flask_geneva.queries.signals import signals_taken, timed_out
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.timeutil import as_utc, utcnow

#: A scheduled execution this far past its due time, not yet started, is overdue. Steps
#: normally start within milliseconds of their due time, so a few seconds means trouble.
OVERDUE_GRACE: Final = timedelta(seconds=30)
#: How many rows each health list (stuck, overdue, paused, failures) shows.
HEALTH_LIST_LIMIT: Final = 10


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
    #: When each overdue execution's message became due, by execution id: its
    #: ``scheduled_for``, except for a step that waits for a signal, which is due when a
    #: signal woke it (its ``scheduled_for`` is the end of its timeout, or NULL).
    overdue_due_at: dict[Any, datetime] = field(default_factory=dict)
    #: The ids of the last executions in ``paused`` that timed out waiting for a signal
    #: (``on_timeout="pause"`` paused their workflow).
    paused_by_timeout: frozenset[Any] = frozenset()

    def due_at(self, execution: Any) -> datetime | None:
        """When an overdue execution became due."""
        return self.overdue_due_at.get(execution.id) or as_utc(execution.scheduled_for)

    def will_recover(self, execution: Any) -> bool:
        """Whether housekeeping counts the overdue execution stuck (it goes by
        ``scheduled_for``: never for a step that waits without a timeout)."""
        scheduled_for = as_utc(execution.scheduled_for)
        return (
            scheduled_for is not None and self.now - scheduled_for > self.stuck_scheduled_threshold
        )

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
        ex.state == sql_constant(StepState.IN_PROGRESS.value),
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
    # A step waiting for a signal has an outbox row when a signal woke it (due then) or
    # at the end of its timeout: never while it only waits.
    overdue = session.execute(
        sa.select(ex, wf, oldest_rows.c.available_at)
        .select_from(oldest_rows)
        .join(ex.__table__, ex.id == oldest_rows.c.execution_id)
        .join(wf.__table__, wf.id == ex.workflow_id)
        .where(ex.state == sql_constant(StepState.SCHEDULED.value))
        .order_by(oldest_rows.c.available_at)
    ).all()
    overdue_query = (
        sa.select(sa.literal(1))
        .select_from(outbox)
        .where(outbox.c.available_at < overdue_before)
        .order_by(outbox.c.available_at)
    )

    outbox_due, stuck_count, overdue_count = run_capped_counts(
        geneva, [outbox_due_query, stuck_query, overdue_query], cap
    )

    # geneva_workflows_transitioned (state, transitioned_at)
    paused_workflows = list(
        session.scalars(
            sa.select(wf)
            .where(wf.state == sql_constant(WorkflowState.PAUSED.value))
            .order_by(wf.transitioned_at.desc())
            .limit(limit)
        )
    )
    activity = workflow_activity(geneva, paused_workflows)
    paused = [(w, activity[w.id].last) for w in paused_workflows]
    lasts = [e for _, e in paused if e is not None and e.waiting_for is not None]
    taken = signals_taken(geneva, lasts)
    paused_by_timeout = frozenset(
        e.id for e in lasts if str(e.outcome) == "canceled" and timed_out(e, taken.get(e.id))
    )

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
        overdue_scheduled=[(e, w) for e, w, _ in overdue],
        overdue_scheduled_count=overdue_count,
        paused=paused,
        recent_failures=[(e, w) for e, w in failures],
        overdue_due_at={e.id: due for e, _, at in overdue if (due := as_utc(at)) is not None},
        paused_by_timeout=paused_by_timeout,
    )
