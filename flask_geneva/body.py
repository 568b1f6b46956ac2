"""Running step code: the body, and an imperative exception handler, outside any lock.

Both run in ``db.session``; their writes are flushed here so that their errors are the
step's, and commit later together with the outcome (:mod:`flask_geneva.finalizing`).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from flask_geneva import signals
from flask_geneva.dsl import StepDefinition
from flask_geneva.flow import FlowControlSignal
from flask_geneva.jsonvalues import json_text
from flask_geneva.logs import workflow_logger
from flask_geneva.machine import timeout_call
from flask_geneva.models import json_snapshot
from flask_geneva.policies import ExceptionPolicy
from flask_geneva.runs import STEP_FAILURES, Subject, send


def run_body(
    session: Session, workflow: Any, execution: Any, step: StepDefinition, subject: Subject,
    *, timed_out: bool = False,
) -> tuple[FlowControlSignal | None, BaseException | None]:
    """Run the step body and flush its writes; returns its flow-control call or error
    (both when the call's writes failed to flush: the error decides, and the call tells
    a retry how long to wait).

    ``timed_out``: the step's signal timeout ended first; unless its ``on_timeout`` is
    ``"run"``, the body does not run and the timeout's call (skip, cancel, pause) stands
    for it."""
    call: FlowControlSignal | None = None
    error: BaseException | None = None
    body_started = time.perf_counter()
    workflow.__dict__["_geneva_running"] = execution
    try:
        try:
            snapshot = json_snapshot(workflow.data)
            if timed_out and step.signal is not None:
                instead = timeout_call(step.signal.on_timeout)
                if instead is not None:
                    raise instead
            step.perform(workflow)
        except FlowControlSignal as raised:
            call = raised
        keep_data_changes(workflow, snapshot)
        session.flush()  # the body's own writes: their errors are the step's
    except STEP_FAILURES as raised:
        error = raised
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    send(signals.step_performed, subject, performed_outcome(call, error), error, body_started)
    return call, error


def performed_outcome(call: FlowControlSignal | None, error: BaseException | None) -> str:
    """The ``step_performed`` outcome: ``"completed"``, a flow-control name, or
    ``"exception"``."""
    if error is not None:
        return "exception"
    return call.outcome if call is not None else "completed"


def keep_data_changes(workflow: Any, snapshot: str) -> None:
    """Mark ``data`` changed when step code changed it in place (nested values too).

    :raises TypeError: the new data holds a value JSON cannot (the step's failure).
    :raises ValueError: it is not JSON the database takes back: NaN or an infinity, a
        lone surrogate, nesting too deep. Both messages name the value.
    """
    try:
        changed = json_snapshot(workflow.data) != snapshot
    except (ValueError, RecursionError):  # it contains itself, or nests very deep
        changed = True  # json_text says which value
    if changed:
        json_text(workflow.data)
        flag_modified(workflow, "data")


def run_handler(
    session: Session,
    workflow: Any,
    execution: Any,
    policy: ExceptionPolicy,
    error: BaseException,
) -> tuple[FlowControlSignal | None, BaseException]:
    """Call an imperative handler, outside geneva's locks, in a session holding nothing else.

    Returns the flow-control call it made (if any) and the error to record. The
    handler's writes are flushed to commit with the outcome; if the handler itself fails,
    they are rolled back and its error (chained to the step's) is recorded instead.
    """
    if policy.handler is None:
        return None, error
    call: FlowControlSignal | None = None
    workflow.__dict__["_geneva_running"] = execution
    try:
        try:
            snapshot = json_snapshot(workflow.data)
            policy.handler(workflow, error)
        except FlowControlSignal as raised:
            call = raised
        keep_data_changes(workflow, snapshot)
        session.flush()
    except STEP_FAILURES as handler_error:
        session.rollback()
        if handler_error.__context__ is None:
            handler_error.__context__ = error
        workflow_logger(workflow, execution).exception("the exception handler itself failed")
        return None, handler_error
    finally:
        workflow.__dict__.pop("_geneva_running", None)
    return call, error
