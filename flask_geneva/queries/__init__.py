"""Read-only queries shared by the status UI and the CLI.

Nothing here changes state. Each function takes the ``Geneva`` instance and uses
``db.session``; filters and ids are validated (by :mod:`flask_geneva.ids`) so that both
front ends give the same errors.

Every query is written to stay fast on large tables (a million workflows, several million
executions): each one is served by an index of the models (named beside it), and counts
stop reading after :data:`COUNT_CAP` rows instead of scanning a whole table.

=====================  ==========================================================
:mod:`.lookups`        list filters, one workflow by id, one workflow's history
:mod:`.counts`         capped counts by state and by class, planner estimates
:mod:`.pages`          keyset pages of the workflow list, cursors, row activity
:mod:`.health_panel`   the overview's health panel
:mod:`.detail`         one workflow's page, and the operator actions of a state
:mod:`.signals`        what a workflow waits for, and its signals
=====================  ==========================================================

The names below are re-exported so that ``from flask_geneva import queries`` reads them
all.
"""

from __future__ import annotations

from flask_geneva.queries.counts import (
    CLASS_COUNT_CAP,
    COUNT_CAP,
    ClassCounts,
    Count,
    WorkflowStatistics,
    class_counts,
    counts_by_state,
    planner_estimate,
    state_counts,
    stored_workflow_classes,
    workflow_statistics,
)
from flask_geneva.queries.detail import (
    ACTIONS_BY_STATE,
    HISTORY_LIMIT,
    Attempt,
    Due,
    OperatorAction,
    StepRow,
    WorkflowDetail,
    operator_actions,
    workflow_detail,
)
from flask_geneva.queries.health_panel import HEALTH_LIST_LIMIT, OVERDUE_GRACE, Health, health
from flask_geneva.queries.lookups import (
    QueryError,
    WorkflowFilters,
    execution_history,
    filtered_workflows,
    find_workflow,
    parse_hero,
)
from flask_geneva.queries.pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Cursor,
    WorkflowActivity,
    WorkflowPage,
    list_workflows,
    workflow_activity,
    workflow_page,
)
from flask_geneva.queries.signals import (
    SIGNAL_LIMIT,
    SignalList,
    Waiting,
    waiting_of,
    workflow_signals,
)

__all__ = [
    "ACTIONS_BY_STATE",
    "CLASS_COUNT_CAP",
    "COUNT_CAP",
    "DEFAULT_PAGE_SIZE",
    "HEALTH_LIST_LIMIT",
    "HISTORY_LIMIT",
    "MAX_PAGE_SIZE",
    "OVERDUE_GRACE",
    "SIGNAL_LIMIT",
    "Attempt",
    "ClassCounts",
    "Count",
    "Cursor",
    "Due",
    "Health",
    "OperatorAction",
    "QueryError",
    "SignalList",
    "StepRow",
    "Waiting",
    "WorkflowActivity",
    "WorkflowDetail",
    "WorkflowFilters",
    "WorkflowPage",
    "WorkflowStatistics",
    "class_counts",
    "counts_by_state",
    "execution_history",
    "filtered_workflows",
    "find_workflow",
    "health",
    "list_workflows",
    "operator_actions",
    "parse_hero",
    "planner_estimate",
    "state_counts",
    "stored_workflow_classes",
    "waiting_of",
    "workflow_activity",
    "workflow_detail",
    "workflow_page",
    "workflow_signals",
    "workflow_statistics",
]
