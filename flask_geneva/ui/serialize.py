"""The JSON twins of the status pages: plain dicts of what each HTML page shows.

Times are ISO 8601 strings in UTC (``null`` when unset), durations are seconds, ids are
numbers (or strings for UUID keys), counts are ``{"count", "exact", "estimate"}``.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for

from flask_geneva.jsonvalues import json_safe
from flask_geneva.queries.counts import Count
from flask_geneva.queries.detail import Due, StepRow, WorkflowDetail
from flask_geneva.queries.health_panel import OVERDUE_GRACE, Health
from flask_geneva.queries.pages import WorkflowActivity
from flask_geneva.queries.signals import (
    Waiting,
    payload_excerpt,
    signal_status,
    timed_out,
    waiting_of,
)
from flask_geneva.text import excerpt
from flask_geneva.ui.present import describe_condition, describe_policy, iso_time


def json_id(value: Any) -> Any:
    """A primary key as JSON: an int stays an int, a UUID becomes its text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def workflow_json(workflow: Any, activity: WorkflowActivity | None = None) -> dict[str, Any]:
    """A workflow as the list and detail pages show it."""
    result: dict[str, Any] = {
        "id": json_id(workflow.id),
        "url": url_for("geneva.workflow", workflow_id=workflow.id),
        "workflow_class": workflow.workflow_class,
        "class_defined": bool(type(workflow).is_defined()),
        "state": str(workflow.state),
        "hero_type": workflow.hero_type,
        "hero_id": workflow.hero_id,
        "next_step_name": workflow.next_step_name,
        "current_step_name": workflow.current_step_name,
        "previous_step_name": workflow.previous_step_name,
        "execution_count": workflow.execution_count,
        "created_at": iso_time(workflow.created_at),
        "updated_at": iso_time(workflow.updated_at),
        "transitioned_at": iso_time(workflow.transitioned_at),
    }
    if activity is not None:
        result["active_execution"] = (
            execution_json(activity.active) if activity.active is not None else None
        )
        result["last_execution"] = (
            execution_json(activity.last) if activity.last is not None else None
        )
        result["waiting"] = waiting_json(waiting_of(activity.active))
    return result


def waiting_json(waiting: Waiting | None) -> dict[str, Any] | None:
    """What a workflow waits for: ``{"signal", "since", "until", "execution_id"}``
    (``until`` null: no timeout), or None when no step waits for a signal."""
    if waiting is None:
        return None
    return {
        "signal": waiting.signal,
        "since": iso_time(waiting.since),
        "until": iso_time(waiting.until),
        "execution_id": json_id(waiting.execution.id),
    }


def signal_json(signal: Any, workflow_state: Any = None) -> dict[str, Any]:
    """A stored signal. ``state`` is as stored; ``status`` tells a pending signal no
    step has taken (``pending``) from one a step holds (``held``: its attempt has not
    ended), and either from one whose workflow ended (``kept``: still stored as
    pending, no step will take it)."""
    return {
        "id": json_id(signal.id),
        "name": signal.name,
        "state": str(signal.state),
        "status": signal_status(signal, workflow_state),
        "idempotency_key": signal.idempotency_key,
        "created_at": iso_time(signal.created_at),
        "consumed_at": iso_time(signal.consumed_at),
        "execution_id": json_id(signal.execution_id),
        "payload": json_safe(signal.payload),
        "payload_excerpt": payload_excerpt(signal.payload),
    }


def execution_json(
    execution: Any,
    *,
    attempt: int | None = None,
    backtrace: bool = False,
    signal_id: Any = None,
    signals_known: bool = False,
) -> dict[str, Any]:
    """A step execution. With ``backtrace`` (the workflow page) the whole stored error
    message and the backtrace; without (the lists), an excerpt of the message of at most
    :data:`~flask_geneva.text.LIST_ERROR_EXCERPT_LENGTH` characters and
    ``error_message_truncated``. With ``signals_known`` (the workflow page) also
    ``signal_id`` (the signal it ran with, or null) and ``timed_out`` (it waited for a
    signal and its timeout ended it, or ran it)."""
    result: dict[str, Any] = {
        "id": json_id(execution.id),
        "workflow_id": json_id(execution.workflow_id),
        "sequence": execution.sequence,
        "step_name": execution.step_name,
        "state": str(execution.state),
        "outcome": None if execution.outcome is None else str(execution.outcome),
        "scheduled_for": iso_time(execution.scheduled_for),
        "waiting_for": execution.waiting_for,
        "started_at": iso_time(execution.started_at),
        "finished_at": iso_time(execution.finished_at),
        "duration_seconds": execution.duration,
        "error_class_name": execution.error_class_name,
        "error_message": execution.error_message,
        "message_id": execution.message_id,
    }
    if attempt is not None:
        result["attempt"] = attempt
    if signals_known:
        result["signal_id"] = json_id(signal_id)
        result["timed_out"] = timed_out(execution, signal_id)
    if backtrace:
        result["error_backtrace"] = execution.error_backtrace
    else:
        # Lists show an excerpt; the workflow page has the whole (bounded) message.
        message = execution.error_message
        result["error_message"] = None if message is None else excerpt(message)
        result["error_message_truncated"] = message is not None and excerpt(message) != message
    return result


def count_json(count: Count) -> dict[str, Any]:
    """``{"count": n, "exact": bool, "estimate": n | null}``."""
    return count.as_json()


def health_json(health: Health) -> dict[str, Any]:
    """The overview's health panel."""
    lag = health.outbox_lag
    return {
        "ok": health.ok,
        "outbox": {
            "oldest_unpublished_at": iso_time(health.outbox_oldest_unpublished_at),
            "oldest_unpublished_age_seconds": None if lag is None else lag.total_seconds(),
            "due": count_json(health.outbox_due),
        },
        "stuck_in_progress": {
            "threshold_seconds": health.stuck_in_progress_threshold.total_seconds(),
            "count": count_json(health.stuck_in_progress_count),
            "executions": [
                {"execution": execution_json(e), "workflow": workflow_json(w)}
                for e, w in health.stuck_in_progress
            ],
        },
        "overdue_scheduled": {
            "grace_seconds": OVERDUE_GRACE.total_seconds(),
            "stuck_threshold_seconds": health.stuck_scheduled_threshold.total_seconds(),
            "count": count_json(health.overdue_scheduled_count),
            "executions": [
                {
                    "execution": execution_json(e),
                    "workflow": workflow_json(w),
                    "due_at": iso_time(health.due_at(e)),
                    "stuck": health.will_recover(e),
                }
                for e, w in health.overdue_scheduled
            ],
        },
        "paused": [
            {
                "workflow": workflow_json(w),
                "last_execution": None if e is None else execution_json(e),
                "timed_out": e is not None and e.id in health.paused_by_timeout,
            }
            for w, e in health.paused
        ],
        "recent_failures": [
            {"execution": execution_json(e), "workflow": workflow_json(w)}
            for e, w in health.recent_failures
        ],
    }


def step_json(row: StepRow, detail: WorkflowDetail | None = None) -> dict[str, Any]:
    """One step of the workflow page with its executions (with ``detail``, each with
    the signal it ran with and whether it timed out)."""
    definition = row.definition
    result: dict[str, Any] = {
        "position": row.position,
        "name": row.name,
        "defined": row.defined,
        "executions": [
            execution_json(
                a.execution,
                attempt=a.attempt,
                backtrace=True,
                signal_id=None if detail is None else detail.signal_id(a.execution),
                signals_known=detail is not None,
            )
            for a in row.attempts
        ],
    }
    if definition is not None:
        result.update(
            {
                "wait_seconds": definition.wait.total_seconds(),
                "wait_for": None if definition.signal is None else definition.signal.name,
                "timeout_seconds": (
                    None
                    if definition.signal is None or definition.signal.timeout is None
                    else definition.signal.timeout.total_seconds()
                ),
                "on_timeout": None if definition.signal is None else definition.signal.on_timeout,
                "skip_if": describe_condition(definition.skip_if) or None,
                "only_if": describe_condition(definition.only_if) or None,
                "on_exception": describe_policy(definition.on_exception) or None,
                "anonymous": definition.anonymous,
                "source": definition.describe_source(),
            }
        )
    return result


def due_json(due: Due) -> dict[str, Any]:
    """What the workflow waits for next."""
    return {
        "kind": due.kind,
        "step_name": due.step_name,
        "execution_id": None if due.execution is None else json_id(due.execution.id),
        "at": iso_time(due.at),
        "overdue": due.overdue,
        "stuck": due.stuck,
        "waiting": waiting_json(due.waiting),
        "resume_waits_for": None if due.resume_wait is None else due.resume_wait.name,
        "pending_signals": due.pending_signals,
        "held_signal_id": json_id(due.held_signal),
    }


def detail_json(detail: WorkflowDetail, hero: dict[str, Any]) -> dict[str, Any]:
    """The workflow page."""
    workflow = detail.workflow
    payload = workflow_json(workflow)
    payload["data"] = json_safe(dict(workflow.data or {}))
    payload["waiting"] = waiting_json(detail.due.waiting)
    timed = detail.paused_by_timeout
    payload["paused_by_timeout"] = (
        None
        if timed is None
        else {"execution_id": json_id(timed.id), "step_name": timed.step_name,
              "waiting_for": timed.waiting_for}
    )  # fmt: skip
    return {
        "workflow": payload,
        "hero": hero,
        "class_defined": detail.class_defined,
        "due": due_json(detail.due),
        "steps": [step_json(row, detail) for row in detail.steps],
        "removed_steps": [step_json(row, detail) for row in detail.removed_steps],
        "history": {
            "total": detail.execution_total,
            "shown": len(detail.executions),
            "truncated": detail.history_truncated,
        },
        "actions": [{"name": a.name, "command": a.command} for a in detail.actions],
        "signals": [signal_json(signal, workflow.state) for signal in detail.signals.signals],
        "signals_truncated": detail.signals.truncated,
    }
