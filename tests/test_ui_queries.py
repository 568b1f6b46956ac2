"""The read-only queries behind the status UI: pages, capped counts, classes, health."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import queries
from flask_geneva.errors import InvalidInputError
from flask_geneva.queries import Count, Cursor, WorkflowFilters
from flask_geneva.timeutil import utcnow
from flask_geneva.ui import present
from tests.models import db, geneva

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _insert(
    count: int, *, state: str = "finished", workflow_class: str = "Bulk", **extra: Any
) -> list[Any]:
    """Insert workflows directly: ``created_at`` one minute apart (or as given)."""
    table = geneva.Workflow.__table__
    rows = []
    for i in range(count):
        values = {
            "workflow_class": workflow_class,
            "state": state,
            "data": {},
            "allow_multiple": True,
            "execution_count": 0,
            "created_at": T0 + timedelta(minutes=i),
            "updated_at": T0,
            "hero_type": "User",
            "hero_id": str(i % 3),
        }
        values.update(extra)
        rows.append(
            db.session.execute(sa.insert(table).values(**values).returning(table.c.id)).scalar_one()
        )
    db.session.commit()
    return rows


def _walk_older(filters: WorkflowFilters, limit: int) -> list[list[Any]]:
    pages = []
    page = queries.workflow_page(geneva, filters, limit=limit)
    pages.append([w.id for w in page.workflows])
    while page.older is not None:
        cursor = Cursor.decode(geneva, page.older.encode())
        page = queries.workflow_page(geneva, filters, before=cursor, limit=limit)
        pages.append([w.id for w in page.workflows])
    return pages


def _expected_order(ids: list[Any]) -> list[Any]:
    rows = db.session.execute(
        sa.select(geneva.Workflow.id, geneva.Workflow.created_at).where(geneva.Workflow.id.in_(ids))
    ).all()
    return [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


def test_pages_walk_every_workflow_once_newest_first(app: Flask) -> None:
    ids = _insert(7)
    # Three share one created_at: the id breaks the tie.
    ids += _insert(3, created_at=T0 + timedelta(minutes=3))
    pages = _walk_older(WorkflowFilters(), limit=3)
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [i for p in pages for i in p] == _expected_order(ids)


def test_pages_walk_back_to_newer(app: Flask) -> None:
    ids = _insert(8)
    order = _expected_order(ids)
    first = queries.workflow_page(geneva, WorkflowFilters(), limit=3)
    assert first.newer is None
    second = queries.workflow_page(geneva, WorkflowFilters(), before=first.older, limit=3)
    third = queries.workflow_page(geneva, WorkflowFilters(), before=second.older, limit=3)
    assert [w.id for w in third.workflows] == order[6:8]
    assert third.older is None
    back = queries.workflow_page(geneva, WorkflowFilters(), after=third.newer, limit=3)
    assert [w.id for w in back.workflows] == order[3:6]
    assert back.newer is not None
    front = queries.workflow_page(geneva, WorkflowFilters(), after=back.newer, limit=3)
    assert [w.id for w in front.workflows] == order[0:3]
    assert front.newer is None
    assert front.older is not None


@pytest.mark.parametrize(
    "filters",
    [
        WorkflowFilters(workflow="Mixed"),
        WorkflowFilters(state="paused"),
        WorkflowFilters(workflow="Mixed", state="ready"),
        WorkflowFilters(hero_type="User"),
        WorkflowFilters(hero_type="User", hero_id="1"),
        WorkflowFilters(workflow="Mixed", hero_type="User", hero_id="2"),
    ],
)
def test_filtered_pages(app: Flask, filters: WorkflowFilters) -> None:
    ids: list[Any] = []
    for i, state in enumerate(["ready", "paused", "finished", "canceled", "performing"]):
        ids += _insert(4, state=state, workflow_class="Mixed", created_at=T0 + timedelta(minutes=i))
    _insert(5, state="paused", workflow_class="Other")
    expected = [
        wid
        for wid in _expected_order(
            list(
                db.session.scalars(
                    queries.filtered_workflows(geneva, filters).with_only_columns(
                        geneva.Workflow.id
                    )
                )
            )
        )
    ]
    assert expected
    for limit in (1, 2, 7, 50):
        pages = _walk_older(filters, limit)
        assert [i for p in pages for i in p] == expected, limit


def test_list_workflows_keeps_its_meaning(app: Flask) -> None:
    ids = _insert(5)
    assert [
        w.id for w in queries.list_workflows(geneva, WorkflowFilters(), limit=2)
    ] == _expected_order(ids)[:2]
    assert len(queries.list_workflows(geneva, WorkflowFilters(), limit=1000)) == 5


def test_page_limits(app: Flask) -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        queries.workflow_page(geneva, WorkflowFilters(), limit=0)
    with pytest.raises(InvalidInputError, match="limit"):
        queries.workflow_page(geneva, WorkflowFilters(), limit=101)


def test_cursors() -> None:
    ints = SimpleNamespace(uuid_primary_keys=False)
    cursor = Cursor(datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC), 42)
    assert Cursor.decode(ints, cursor.encode()) == cursor
    uuids = SimpleNamespace(uuid_primary_keys=True)
    key = uuid.uuid4()
    cursor = Cursor(T0, key)
    assert cursor.encode() == f"{int(T0.timestamp() * 1_000_000)}-{key}"
    assert Cursor.decode(uuids, cursor.encode()) == cursor
    for bad in ("", "12", "-5-1", "x-1", "12-"):
        with pytest.raises(InvalidInputError):
            Cursor.decode(ints, bad)
    with pytest.raises(InvalidInputError, match="UUID"):
        Cursor.decode(uuids, "12-34")


def test_capped_counts(app: Flask) -> None:
    _insert(5, state="finished")
    _insert(2, state="paused", workflow_class="Small")
    counts = queries.state_counts(geneva, cap=3)
    assert counts["finished"].capped and counts["finished"].value == 3
    assert counts["paused"] == Count(2)
    assert counts["ready"] == Count(0)
    if db.engine.dialect.name == "postgresql":
        estimate = counts["finished"].estimate
        assert estimate is None or estimate > 3  # the planner's guess, when it is above the cap
    else:
        assert counts["finished"].estimate is None
    exact = queries.state_counts(geneva)
    assert exact["finished"] == Count(5)
    assert queries.counts_by_state(geneva)["finished"] == 5


def test_class_counts_include_classes_in_code_and_in_the_table(app: Flask) -> None:
    class InCodeOnly(geneva.Workflow):
        pass

    _insert(3, state="finished", workflow_class="Alpha")
    _insert(1, state="ready", workflow_class="Alpha")
    _insert(2, state="paused", workflow_class="Zeta")
    assert queries.stored_workflow_classes(geneva) == ["Alpha", "Zeta"]
    by_name = {c.workflow_class: c for c in queries.class_counts(geneva)}
    assert by_name["Alpha"].counts["finished"] == Count(3)
    assert by_name["Alpha"].ongoing == 1
    assert by_name["Alpha"].defined is False
    assert by_name["Zeta"].counts["paused"] == Count(2)
    assert by_name["InCodeOnly"].defined is True
    assert all(c == Count(0) for c in by_name["InCodeOnly"].counts.values())


def test_stored_classes_of_an_empty_table(app: Flask) -> None:
    assert queries.stored_workflow_classes(geneva) == []


def test_health_of_a_quiet_system(app: Flask) -> None:
    health = queries.health(
        geneva,
        stuck_in_progress_threshold=timedelta(hours=1),
        stuck_scheduled_threshold=timedelta(minutes=15),
    )
    assert health.ok
    assert health.outbox_lag is None
    assert health.stuck_in_progress == [] and health.overdue_scheduled == []
    assert health.paused == [] and health.recent_failures == []


def test_health_leaves_paused_workflows_kept_executions_alone(app: Flask) -> None:
    (workflow_id,) = _insert(1, state="paused", execution_count=1)
    db.session.execute(
        sa.insert(geneva.StepExecution.__table__).values(
            workflow_id=workflow_id,
            sequence=1,
            step_name="kept",
            state="scheduled",
            scheduled_for=utcnow() - timedelta(days=2),
            created_at=utcnow() - timedelta(days=2),
        )
    )
    db.session.commit()
    health = queries.health(
        geneva,
        stuck_in_progress_threshold=timedelta(hours=1),
        stuck_scheduled_threshold=timedelta(minutes=15),
    )
    assert health.overdue_scheduled == []
    assert health.overdue_scheduled_count == Count(0)
    assert [w.id for w, _ in health.paused] == [workflow_id]
    assert health.paused[0][1].step_name == "kept"


# ------------------------------------------------------------------------ presentation


def test_times_and_durations() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert present.relative_time(now - timedelta(minutes=3, seconds=5), now) == "3 min ago"
    assert present.relative_time(now + timedelta(days=2, hours=1), now) == "in 2 d"
    assert present.relative_time(now, now) == "just now"
    assert present.relative_time(None, now) == ""
    assert present.absolute_time(now) == "2026-01-02 00:00:00 UTC"
    assert present.format_duration(0.1234) == "123 ms"
    assert present.format_duration(4.21) == "4.2 s"
    assert present.format_duration(timedelta(minutes=3, seconds=4)) == "3 min 4 s"
    assert present.format_duration(timedelta(hours=2)) == "2 h"
    assert present.format_duration(timedelta(days=3, hours=4, minutes=5)) == "3 d 4 h"
    assert present.format_duration(None) == ""


def test_counts_are_labelled() -> None:
    assert present.count_text(Count(1234)) == "1,234"
    capped = Count(10_000, capped=True, estimate=812_345)
    assert present.count_text(capped) == "10,000+"
    assert "PostgreSQL estimates 812,345" in present.count_title(capped)
    assert present.compact_number(812_345) == "812k"
    assert present.compact_number(1_234_567) == "1.2M"


def test_only_http_and_local_urls_are_linked() -> None:
    assert present.safe_url("https://admin.example.com/users/1") is not None
    assert present.safe_url("/admin/users/1") == "/admin/users/1"
    for bad in (
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "//evil.example.com",
        "data:x",
        None,
        42,
        "",
    ):
        assert present.safe_url(bad) is None


def test_repeated_failures_fold() -> None:
    wf = SimpleNamespace(id=1)
    other = SimpleNamespace(id=2)

    def failure(step: str, error: str) -> Any:
        return SimpleNamespace(step_name=step, error_class_name=error)

    a, b, c, d = failure("s", "E"), failure("s", "E"), failure("s", "F"), failure("s", "F")
    grouped = present.group_repeats([(a, wf), (b, wf), (c, wf), (d, other)])
    assert [(e, w.id, n) for e, w, n in grouped] == [(a, 1, 2), (c, 1, 1), (d, 2, 1)]


def test_estimates_come_from_the_planner_statistics(app: Flask) -> None:
    _insert(30, state="finished", workflow_class="Big")
    _insert(10, state="paused", workflow_class="Small")
    if db.engine.dialect.name != "postgresql":
        assert queries.workflow_statistics(geneva) is None
        return
    db.session.execute(sa.text("ANALYZE geneva_workflows"))
    db.session.commit()
    statistics = queries.workflow_statistics(geneva)
    assert statistics is not None
    assert statistics.estimate(state="finished") == 30
    assert statistics.estimate(workflow_class="Small", state="paused") == 2  # independence
    assert statistics.estimate(state="ready") is None  # not a common value
    counts = queries.state_counts(geneva, cap=5)
    assert counts["finished"] == Count(5, capped=True, estimate=30)
    assert counts["paused"] == Count(5, capped=True, estimate=10)
    by_name = {c.workflow_class: c for c in queries.class_counts(geneva, cap=5)}
    assert by_name["Big"].counts["finished"] == Count(5, capped=True, estimate=22)


def test_statistics_estimate_arithmetic() -> None:
    statistics = queries.WorkflowStatistics(
        1000.0, {"state": {"finished": 0.9, "ready": 0.1}, "workflow_class": {"A": 0.5}}
    )
    assert statistics.estimate(state="finished") == 900
    assert statistics.estimate(state="ready", workflow_class="A") == 50
    assert statistics.estimate(workflow_class="B") is None
