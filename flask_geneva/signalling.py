"""Sending a signal to a workflow: ``wf.signal(...)`` and ``geneva.send_signal(...)``.

The signal is checked before anything is written (a bad name, key or payload raises
:class:`~flask_geneva.InvalidSignalError`, a ``ValueError``, and changes nothing). Then,
under the workflow's row lock: a repeated idempotency key returns the stored signal
(``duplicate`` True); a finished or canceled workflow refuses; otherwise the signal is
stored pending and, when the workflow's scheduled execution waits for that name, its
message is moved to now. Nothing commits here: the caller's commit stores the signal
together with its own writes, and only then is the step published.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from flask_geneva.errors import (
    InvalidInputError,
    InvalidSignalError,
    InvalidStateError,
    WorkflowNotFoundError,
)
from flask_geneva.extension import require_state
from flask_geneva.ids import parse_workflow_id
from flask_geneva.jsonvalues import JSONTooLarge, json_text
from flask_geneva.logs import logger, workflow_logger
from flask_geneva.models import IDEMPOTENCY_KEY_LENGTH
from flask_geneva.runs import message_options
from flask_geneva.states import FINAL_STATES, WorkflowState
from flask_geneva.store import store_for
from flask_geneva.text import quoted
from flask_geneva.timeutil import utcnow
from flask_geneva.waiting import check_signal_name


def checked_signal(name: Any, payload: Any, key: Any, max_payload: int) -> tuple[str, Any, Any]:
    """The name, the payload as the database will give it back, and the key; or
    :class:`~flask_geneva.InvalidSignalError` naming what is wrong."""
    try:
        check_signal_name(name, "signal()")
    except (TypeError, ValueError) as error:
        raise InvalidSignalError(str(error)) from None
    if key is not None and (
        not isinstance(key, str)
        or not key
        or len(key) > IDEMPOTENCY_KEY_LENGTH
        or "\x00" in key
    ):
        raise InvalidSignalError(
            f"signal({name!r}): idempotency_key must be None or a non-empty string of at "
            f"most {IDEMPOTENCY_KEY_LENGTH} characters, without NUL, got {quoted(key)}"
        )
    try:
        text = json_text(payload, "payload", max_bytes=max_payload)
    except JSONTooLarge as error:
        raise InvalidSignalError(
            f"signal({name!r}): the payload is {error.size} bytes of JSON, more than "
            f"GENEVA_MAX_SIGNAL_PAYLOAD ({max_payload}); store the data in your own table "
            f"and send its id"
        ) from None
    except (TypeError, ValueError) as error:
        raise InvalidSignalError(
            f"signal({name!r}): the payload must be JSON-serialisable: {error}"
        ) from None
    return name, json.loads(text), key


def send_signal(workflow: Any, name: Any, payload: Any = None,
                idempotency_key: Any = None) -> Any:
    """Store a signal for ``workflow`` (see the module's docstring); the stored row."""
    state = require_state()
    name, payload, key = checked_signal(
        name, payload, idempotency_key, state.config.max_signal_payload
    )
    geneva = workflow._geneva
    session: Session = sa.orm.object_session(workflow) or geneva.db.session()
    if workflow.id is None:
        session.flush()
    return _store(session, geneva, workflow.id, name, payload, key)


def send_signal_by_id(geneva: Any, workflow_id: Any, name: Any, payload: Any = None,
                      idempotency_key: Any = None) -> Any:
    """:func:`send_signal` for the workflow of ``workflow_id``, in ``db.session``.

    :raises WorkflowNotFoundError: (a ``LookupError``) no workflow has that id, or it is
        not a workflow id at all.
    """
    state = require_state()
    name, payload, key = checked_signal(
        name, payload, idempotency_key, state.config.max_signal_payload
    )
    try:
        key_value = parse_workflow_id(geneva, workflow_id)
    except InvalidInputError as error:
        raise WorkflowNotFoundError(f"no workflow with id {quoted(workflow_id)}: {error}") from None
    return _store(geneva.db.session(), geneva, key_value, name, payload, key)


def _store(session: Session, geneva: Any, workflow_id: Any, name: str, payload: Any,
           key: str | None) -> Any:
    store = store_for(geneva, session)
    locked = store.lock_workflow(session, workflow_id)
    if locked is None:
        raise WorkflowNotFoundError(f"no workflow with id {quoted(workflow_id)}")
    if key is not None:
        stored = store.stored_signal(session, locked.id, name, key)
        if stored is not None:
            return _duplicate_of(stored)
    if locked.state in FINAL_STATES:
        raise InvalidStateError(
            f"cannot signal {locked.workflow_class} #{locked.id}: it is {locked.state}, and "
            f"a signal needs an ongoing workflow"
        )
    now = utcnow()
    signal = store.store_signal(session, locked.id, name, payload, key, now)
    if locked.state == WorkflowState.READY:
        store.wake_waiting(session, locked.id, name, now, message_options(type(locked)))
    _warn_if_nobody_waits(locked, name)
    _watch_until_commit(session, f"{quoted(name)} for {locked.workflow_class} #{locked.id}")
    return signal


def _duplicate_of(stored: Any) -> Any:
    """What a repeated idempotency key returns: a copy of the stored row (not attached to
    the session) with ``duplicate`` True, so that the object an earlier call returned in
    this session (the same row) keeps saying it stored the signal."""
    model = type(stored)
    mapper: Any = sa.inspect(model)
    copy = model(**{attribute.key: getattr(stored, attribute.key)
                    for attribute in mapper.column_attrs})  # fmt: skip
    copy.duplicate = True
    return copy


def waiting_names(workflow_class: Any) -> list[str]:
    """The signal names the steps of ``workflow_class`` wait for (none for a class that
    is no longer defined)."""
    if not workflow_class.is_defined():
        return []
    waits = workflow_class._geneva_definition.signal_waits.values()
    return sorted({wait.name for wait in waits})


#: Set while a caller says itself that no step waits for the name (``flask geneva
#: signal`` prints it in its own line), so that it is not said twice.
_CALLER_REPORTS_UNWAITED: ContextVar[bool] = ContextVar("geneva_caller_reports_unwaited",
                                                        default=False)


@contextmanager
def unwaited_names_reported_by_caller() -> Iterator[None]:
    """Within this block, storing a signal no step waits for logs no warning: the caller
    reports it to its user itself."""
    token = _CALLER_REPORTS_UNWAITED.set(True)
    try:
        yield
    finally:
        _CALLER_REPORTS_UNWAITED.reset(token)


def _warn_if_nobody_waits(workflow: Any, name: str) -> None:
    """A name no step of the class waits for is most likely a typo: it stays pending."""
    if _CALLER_REPORTS_UNWAITED.get():
        return
    names = waiting_names(type(workflow))
    if name in names or not type(workflow).is_defined():
        return
    workflow_logger(workflow).warning(
        "signal %s stored, but no step of %s waits for it (its steps wait for: %s); it "
        "stays pending", quoted(name), type(workflow).__name__,
        ", ".join(map(quoted, names)) or "nothing",
    )  # fmt: skip


#: Where a session keeps the signals it stored and has not committed yet.
_UNSAVED_KEY = "geneva_unsaved_signals"


def _watch_until_commit(session: Session, described: str) -> None:
    """Log a warning if ``session`` ends its transaction without committing the signal:
    ``signal()`` does not commit, and a forgotten ``db.session.commit()`` loses it."""
    info = session.info
    if _UNSAVED_KEY not in info:
        info[_UNSAVED_KEY] = []
        if not info.get(_WATCHING_KEY):
            event.listen(session, "after_commit", _committed)
            event.listen(session, "after_transaction_end", _ended)
            info[_WATCHING_KEY] = True
    info[_UNSAVED_KEY].append(described)


_WATCHING_KEY = "geneva_watching_signals"


def _committed(session: Session) -> None:
    if session.get_nested_transaction() is None:  # the transaction itself, not a savepoint
        session.info.pop(_UNSAVED_KEY, None)


def _ended(session: Session, transaction: Any) -> None:
    if transaction.parent is not None or transaction.nested:
        return
    lost = session.info.pop(_UNSAVED_KEY, None)
    if lost:
        logger.warning(
            "signal %s was rolled back, never committed: wf.signal() and "
            "geneva.send_signal() do not commit; call db.session.commit() after them",
            ", ".join(lost),
        )
