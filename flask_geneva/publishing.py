"""The fast path: publishing a session's step messages once its transaction has committed.

:meth:`flask_geneva.store.Store.announce` remembers each message on the session that wrote
its outbox row; listeners on that session publish the messages due at once right after
the outermost transaction commits, and forget them when it rolls back or is closed
without a commit. A savepoint (``begin_nested()``) publishes nothing when it is released:
its messages wait for the transaction around it, and are forgotten if the savepoint is
rolled back. A message the broker refused is handed to the relay once the session has
given its connection back.

A process that cannot deliver a message (the in-process ``memory://`` broker of an app
with an embedded worker that does not run here: ``flask geneva resume`` on the command
line, ``flask shell``) publishes nothing: it hands its rows to the relay of the process
that serves the app, at once (on PostgreSQL with a NOTIFY; on SQLite that relay looks
every second).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

logger = logging.getLogger("flask_geneva")

#: ``session.info`` key of the messages to publish after the session commits, each as
#: ``(savepoint, message)``: the innermost savepoint open when it was announced, or None.
PENDING_PUBLISH_KEY: Final = "geneva_pending_publish"
#: ``session.info`` key of the messages the broker refused after the last commit.
REFUSED_KEY: Final = "geneva_refused_publish"
#: ``session.info`` key of the messages this process could not deliver (see above).
UNDELIVERABLE_KEY: Final = "geneva_undeliverable_publish"
#: The session classes whose sessions have the listeners below (see
#: :func:`listen_to_sessions_of`; replaced, never changed in place, so that readers need
#: no lock); other sessions get them one by one.
_listening: tuple[type, ...] = ()
_registering = threading.Lock()
_LISTENING_KEY: Final = "geneva_listening"


@dataclass(frozen=True)
class PendingMessage:
    """A message to publish once the scheduling transaction has committed."""

    state: Any  # GenevaState
    execution_id: Any
    queue_name: str
    priority: int
    time_limit_ms: int | None
    available_at: datetime
    created_at: datetime
    workflow_id: Any = None

    @property
    def due_at_once(self) -> bool:
        """Whether the committing process publishes it (a later step is the relay's)."""
        return self.available_at <= self.created_at


def published_marks(available_at: datetime, now: datetime) -> tuple[datetime | None, int]:
    """``published_at`` and ``publish_count`` of a new outbox row.

    A step due at once is the committing process's to publish right after the commit
    (the fast path), so its row counts as published then, once: the relay sends it
    again only if nobody claims it for ``GENEVA_RELAY_REPUBLISH_AFTER`` (the process died
    before publishing, or the message was lost), not merely because it waits behind a
    long queue. Should the fast path fail, it marks the row unpublished again and the
    relay publishes it after ``GENEVA_RELAY_GRACE_PERIOD``. A later step is the relay's
    from the start.
    """
    if available_at <= now:
        return now, 1
    return None, 0


def listen_to_sessions_of(session_class: type) -> None:
    """Give every session of ``session_class`` the listeners, once; call it at setup
    (``Geneva(db=...)`` does, for ``db.session``'s class): adding a listener to a class
    while other threads fire its events is not safe."""
    global _listening
    with _registering:
        if issubclass(session_class, _listening):
            return
        for name, listener in _LISTENERS:
            event.listen(session_class, name, listener)
        _listening = (*_listening, session_class)


def remember_for_commit(session: Session | scoped_session[Any], pending: PendingMessage) -> None:
    """Publish ``pending`` after the session's outermost transaction commits."""
    current = session() if isinstance(session, scoped_session) else session
    info = current.info
    if not isinstance(current, _listening) and not info.get(_LISTENING_KEY):
        # A session of another class: listeners of its own (it belongs to one thread).
        for name, listener in _LISTENERS:
            event.listen(current, name, listener)
        info[_LISTENING_KEY] = True
    scope = current.get_nested_transaction()
    info.setdefault(PENDING_PUBLISH_KEY, []).append((scope, pending))


def take_for_inline_run(session: Session, workflow_id: Any) -> Any:
    """Keep the due-at-once message of ``workflow_id`` from being published after commit,
    because the caller is going to run that execution itself; returns its id (or None).

    Its outbox row stays, marked published like any the fast path sends: if the caller
    dies before claiming it, the relay publishes it after ``GENEVA_RELAY_REPUBLISH_AFTER``.
    """
    pending: list[tuple[Any, PendingMessage]] = session.info.get(PENDING_PUBLISH_KEY) or []
    for index, (_, message) in enumerate(pending):
        if message.workflow_id == workflow_id and message.due_at_once:
            del pending[index]
            return message.execution_id
    return None


def _after_commit(session: Session) -> None:
    pending: list[tuple[Any, PendingMessage]] = session.info.get(PENDING_PUBLISH_KEY) or []
    if not pending:
        return
    if session.get_nested_transaction() is not None:
        # A savepoint was released (SQLAlchemy sends after_commit for it too): its
        # messages wait for the transaction around it (a rollback of that finds them
        # through the savepoint's parents).
        return
    del session.info[PENDING_PUBLISH_KEY]
    refused, undeliverable = _publish([message for _, message in pending])
    if refused:
        session.info.setdefault(REFUSED_KEY, []).extend(refused)
    if undeliverable:
        session.info.setdefault(UNDELIVERABLE_KEY, []).extend(undeliverable)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    pending: list[tuple[Any, PendingMessage]] = session.info.get(PENDING_PUBLISH_KEY) or []
    if not pending:
        return
    # What the database rolled back: the innermost savepoint around the transaction (a
    # failed flush rolls back its own sub-transaction's savepoint or root), else all.
    boundary = previous_transaction
    while boundary.parent is not None and not boundary.nested:
        boundary = boundary.parent
    if not boundary.nested:
        del session.info[PENDING_PUBLISH_KEY]
        return
    session.info[PENDING_PUBLISH_KEY] = [
        (scope, message) for scope, message in pending if not _inside(scope, boundary)
    ]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    # The outermost transaction is over and the session has given its connection back.
    # Whatever was not published now never commits (closed without a commit).
    session.info.pop(PENDING_PUBLISH_KEY, None)
    refused: list[PendingMessage] | None = session.info.pop(REFUSED_KEY, None)
    if refused:
        _hand_to_relay(session, refused, sent=True)
    undeliverable: list[PendingMessage] | None = session.info.pop(UNDELIVERABLE_KEY, None)
    if undeliverable:
        _hand_to_relay(session, undeliverable, sent=False)


def _inside(scope: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    """Whether a message announced in ``scope`` was announced within ``savepoint``."""
    while scope is not None:
        if scope is savepoint:
            return True
        scope = scope.parent
    return False


def _publish(
    messages: list[PendingMessage],
) -> tuple[list[PendingMessage], list[PendingMessage]]:
    """Publish the messages due at once, wake the relays for later ones; never raises.
    Returns the messages the broker refused, and those this process cannot deliver."""
    refused: list[PendingMessage] = []
    undeliverable: list[PendingMessage] = []
    later = False
    for message in messages:
        if not message.due_at_once:
            later = True
            continue
        state = message.state
        if not state.can_deliver:
            undeliverable.append(message)
            continue
        try:
            state.publish(
                message.execution_id, message.queue_name, message.priority, message.time_limit_ms
            )
        except Exception as error:
            state.publish_outage.failed(
                error,
                f"step execution {message.execution_id} waits in the outbox, and the relay "
                f"publishes it (and any others) once the broker answers",
            )
            refused.append(message)
        else:
            state.publish_outage.succeeded()
    if later:
        for state in {id(m.state): m.state for m in messages}.values():
            state.wake_relay()
    return refused, undeliverable


def _hand_to_relay(session: Session, messages: list[PendingMessage], *, sent: bool) -> None:
    """Mark the rows of ``messages`` as not published, for the relay; never raises.

    ``sent``: the broker refused them, and the relay publishes them after
    ``GENEVA_RELAY_GRACE_PERIOD`` (their ``publish_count`` keeps the attempt). Else this
    process could not deliver them: their ``publish_count`` goes back to 0, which the
    relay publishes at once (woken by a NOTIFY on PostgreSQL).

    Runs once the session's transaction is over, on a connection of its own (the
    session's is back in the pool, so a full pool cannot leave it waiting for itself).
    Should it fail too (the database went away with the broker), or not see the rows (a
    session bound to a connection whose transaction is still open, as in some test
    setups), the rows keep their mark and the relay publishes them after
    ``GENEVA_RELAY_REPUBLISH_AFTER``.
    """
    from flask_geneva.store.postgresql import NOTIFY_CHANNEL

    by_model: dict[int, tuple[Any, list[Any]]] = {}
    for message in messages:
        model = message.state.geneva.OutboxMessage
        by_model.setdefault(id(model), (model, []))[1].append(message.execution_id)
    for model, execution_ids in by_model.values():
        outbox = model.__table__
        marks: dict[str, Any] = {"published_at": None}
        if not sent:
            marks["publish_count"] = 0
        try:
            bind = session.get_bind(model)
            engine = bind if isinstance(bind, sa.Engine) else bind.engine
            with engine.begin() as connection:
                connection.execute(
                    sa.update(outbox)
                    .where(outbox.c.execution_id.in_(execution_ids), outbox.c.publish_count == 1)
                    .values(**marks)
                )
                if not sent and engine.dialect.name == "postgresql":
                    connection.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))
        except Exception:
            logger.warning(
                "could not hand step execution(s) %s to the relay; it publishes them "
                "after GENEVA_RELAY_REPUBLISH_AFTER",
                ", ".join(str(i) for i in execution_ids),
                exc_info=True,
            )


_LISTENERS: Final = (
    ("after_commit", _after_commit),
    ("after_soft_rollback", _after_soft_rollback),
    ("after_transaction_end", _after_transaction_end),
)
