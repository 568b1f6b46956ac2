"""The outbox relay: publish step messages that are due and were not published yet.

The committing process publishes a step that is due at once right after its commit (the
fast path, :mod:`flask_geneva.publishing`). The relay publishes everything else:

* rows whose wait has come (a step scheduled for later is published by the relay, at its
  due time — waits live in the database, never in the broker);
* rows the fast path could not publish (the broker refused them): the committing
  process marks them unpublished, and the relay publishes them
  ``GENEVA_RELAY_GRACE_PERIOD`` after they were written;
* rows published (by the fast path, which marks a row due at once published when it
  writes it, or by the relay) that nobody claimed are published again
  ``GENEVA_RELAY_REPUBLISH_AFTER`` later, then after twice as long each time (up to 16
  times as long): that covers a lost message and a process that died between its commit
  and its publish, while a message that only waits behind a long queue gets few copies.

It wakes when the earliest wait ends, when this process commits a row for later, and on
PostgreSQL when any process does (``LISTEN geneva_outbox``; the scheduling transaction
sends ``NOTIFY``); on MariaDB and MySQL with a Redis broker, a wake-up on a Redis channel
does that (:mod:`flask_geneva.wakeups`). So a step starts within milliseconds of its due
time. Several relays may run at once: on PostgreSQL, MariaDB and MySQL each claims its
rows with ``FOR UPDATE SKIP LOCKED``.
Errors (the database or the broker is down) are logged; the relay backs off and goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from flask_geneva.databases import is_mysql
from flask_geneva.executor import EARLY_WAIT_MAX
from flask_geneva.logs import OutageLog
from flask_geneva.store.postgresql import NOTIFY_CHANNEL
from flask_geneva.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from flask_geneva.worker import GenevaState

logger = logging.getLogger("flask_geneva.relay")

#: Rows published per batch.
BATCH_SIZE: Final = 500
#: The longest the relay sleeps without looking, in seconds (SQLite; PostgreSQL listens).
POLL_INTERVAL_SQLITE_S: Final = 1.0
POLL_INTERVAL_POSTGRESQL_S: Final = 5.0
#: Back-off bounds after an error, in seconds.
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: Time for the relay's own commit and publish, on top of a consumer's idle poll; on a
#: busy worker process the relay's thread waits for the GIL too (in the benchmark's burst
#: of 50 timers, 25 ms left the steps 25-30 ms late at the median, 75 ms about 20).
LEAD_MARGIN_MS: Final = 75
#: A row published again and again waits at most this many times
#: ``GENEVA_RELAY_REPUBLISH_AFTER`` before the next time.
REPUBLISH_BACKOFF_MAX: Final = 16
#: How often orphaned rows (their execution no longer scheduled) are swept, in seconds.
SWEEP_INTERVAL_S: Final = 60.0


class Relay:
    """Publishes due outbox rows for one app; run it in a thread or in the foreground."""

    def __init__(self, state: GenevaState) -> None:
        self.state = state
        self.grace_period = state.config.relay_grace_period
        self.republish_after = state.config.relay_republish_after
        #: How long before its due time a waited step is published: enough for the
        #: broker hop and an idle consumer's next poll, so that the worker has the
        #: message at the due time (it waits for it: ``executor.EARLY_WAIT_MAX``).
        self.lead = min(
            timedelta(milliseconds=state.config.worker_idle_timeout_ms + LEAD_MARGIN_MS),
            EARLY_WAIT_MAX,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._listener: Any = None
        self._last_sweep = 0.0
        self._outage = OutageLog(logger, "the outbox relay (database or broker)")
        #: Rows published since the relay started (for tests and the logs).
        self.published_count = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the relay thread (once)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="geneva-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay thread and wait for it."""
        self._stop.set()
        self.wake()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wake(self) -> None:
        """Make the relay look at the outbox now (new rows were committed)."""
        # A full pipe means the relay is going to wake anyway.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")

    # ------------------------------------------------------------------ the loop

    def run_forever(self) -> None:
        """Publish due rows until :meth:`stop`; survive database and broker outages."""
        logger.info("outbox relay started")
        done = threading.Event()
        wakeups = self.state.wakeups
        if wakeups is not None:
            threading.Thread(
                target=wakeups.listen, args=(self.wake, done), name="geneva-relay-wakeups",
                daemon=True,
            ).start()
        try:
            self._run_until_stopped()
        finally:
            done.set()
            self._close_listener()
            logger.info("outbox relay stopped")

    def _run_until_stopped(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                with self.state.app.app_context():
                    # LISTEN before looking: a row committed after the look is notified.
                    # A LISTEN that fails still lets the pass publish (then backs off).
                    try:
                        self._ensure_listener()
                        listen_error = None
                    except Exception as error:
                        listen_error = error
                    self.publish_due()
                    self._maybe_sweep()
                    next_due = self.next_due()
                    if listen_error is not None:
                        raise listen_error
                backoff = BACKOFF_MIN_S
                self._outage.succeeded()
            except Exception as error:
                self._outage.failed(
                    error, f"it retries with a back-off of up to {BACKOFF_MAX_S:.0f} s"
                )
                self._close_listener()
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._sleep(self._timeout_until(next_due))

    def _timeout_until(self, next_due: datetime | None) -> float:
        poll = POLL_INTERVAL_POSTGRESQL_S if self._listener is not None else POLL_INTERVAL_SQLITE_S
        if next_due is None:
            return poll
        return max(0.0, min(poll, (next_due - self.lead - utcnow()).total_seconds()))

    def _sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a wake-up, a NOTIFY, or :meth:`stop`."""
        if self._stop.is_set():
            return
        readers: list[Any] = [self._wake_read]
        listener = self._listener
        if listener is not None:
            readers.append(listener.fileno())
        try:
            ready, _, _ = select.select(readers, [], [], seconds)
        except (OSError, ValueError):
            self._close_listener()
            return
        if self._wake_read in ready:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass
        if listener is not None and len(ready) > (self._wake_read in ready):
            try:
                for _ in listener.notifies(timeout=0):
                    pass
            except Exception:
                self._close_listener()

    # ------------------------------------------------------------------ one pass

    def publish_due(self, now: datetime | None = None) -> int:
        """Publish every row that is due now; returns how many were published.

        Needs an app context. Each batch is claimed and committed before it is sent, so
        two relays never send the same row at once; a row whose send fails is released
        for the next pass.
        """
        if not self.state.can_deliver:
            # The in-process broker of an embedded app, in a process that runs no worker:
            # the rows are for the relay of the process that serves the app.
            return 0
        total = 0
        while True:
            count = self._publish_batch(now or utcnow())
            total += count
            if count < BATCH_SIZE:
                return total

    def _publish_batch(self, now: datetime) -> int:
        geneva = self.state.geneva
        session = geneva.db.session
        outbox = geneva.OutboxMessage.__table__
        due = sa.or_(
            # A later step (the fast path does not publish those): due now, or within
            # the lead time (the worker waits for its due time).
            sa.and_(
                outbox.c.available_at <= now + self.lead,
                outbox.c.published_at.is_(None),
                outbox.c.available_at > outbox.c.created_at,
            ),
            sa.and_(
                outbox.c.available_at <= now,
                sa.or_(
                    # Due at once, and the committing process did not publish it: it
                    # could not deliver it (publish_count 0: the relay's at once), or
                    # the broker refused it (after the grace period).
                    sa.and_(
                        outbox.c.published_at.is_(None),
                        sa.or_(
                            outbox.c.publish_count == 0,
                            outbox.c.created_at <= now - self.grace_period,
                        ),
                    ),
                    # Published (by the fast path or a relay) and never claimed: a
                    # lost message, a process that died before its publish, or one
                    # still waiting behind a long queue.
                    self._republish_due(outbox, now),
                ),
            ),
        )
        claimed = self._claim_batch(session, outbox, due, now)
        session.commit()
        failed: list[Any] = []
        first_error: Exception | None = None
        for row in claimed:
            try:
                self.state.publish(
                    row.execution_id, row.queue_name, row.priority, row.time_limit_ms
                )
            except Exception as error:
                logger.debug(
                    "could not publish step execution %s", row.execution_id, exc_info=True
                )
                first_error = first_error or error
                failed.append(row.id)
        if failed:
            session.execute(
                sa.update(outbox).where(outbox.c.id.in_(failed)).values(published_at=None)
            )
            session.commit()
            raise RuntimeError(
                f"the broker refused {len(failed)} step message(s): "
                f"{type(first_error).__name__}: {first_error}"
            ) from first_error
        self.published_count += len(claimed)
        if claimed:
            logger.debug("published %d step message(s)", len(claimed))
        return len(claimed)

    @staticmethod
    def _claim_batch(session: Any, outbox: sa.Table, due: Any, now: datetime) -> list[Any]:
        """Mark up to :data:`BATCH_SIZE` due rows published, skipping rows another relay
        holds; the rows marked."""
        columns = (
            outbox.c.id, outbox.c.execution_id, outbox.c.queue_name, outbox.c.priority,
            outbox.c.time_limit_ms,
        )  # fmt: skip
        candidates = (
            sa.select(outbox.c.id)
            .where(due)
            .order_by(outbox.c.available_at)
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True)
        )
        mark = sa.update(outbox).values(
            published_at=now, publish_count=outbox.c.publish_count + 1
        )
        if not is_mysql(session.get_bind().dialect.name):
            return session.execute(
                mark.where(outbox.c.id.in_(candidates.scalar_subquery())).returning(*columns)
            ).all()
        # MariaDB and MySQL take no LIMIT in an IN subquery, nor an UPDATE of the table
        # it reads, nor (MySQL) UPDATE ... RETURNING: lock the rows, then mark them.
        rows = session.execute(candidates.with_only_columns(*columns)).all()
        if rows:
            session.execute(mark.where(outbox.c.id.in_([row.id for row in rows])))
        return rows

    def _republish_due(self, outbox: sa.Table, now: datetime) -> Any:
        """Published rows that look lost. Each time again they wait twice as long:
        ``republish_after``, then twice, four times ... up to ``REPUBLISH_BACKOFF_MAX``
        times that, so that a queue that is only slow is not filled with copies of what
        it holds. ``publish_count`` counts the sends, the fast path's included."""
        count, published = outbox.c.publish_count, outbox.c.published_at
        conditions = []
        factor, level = 1, 1
        while factor < REPUBLISH_BACKOFF_MAX:
            at_level = count <= level if level == 1 else count == level
            conditions.append(sa.and_(at_level, published <= now - self.republish_after * factor))
            factor, level = factor * 2, level + 1
        conditions.append(sa.and_(count >= level, published <= now - self.republish_after * factor))
        return sa.or_(*conditions)

    def next_due(self) -> datetime | None:
        """When the earliest later step waiting for the relay is due (needs an app context).

        Rows due at once are the fast path's; the relay looks at them on its regular
        poll, once their grace period has passed (the fast path failed) or once they
        look lost.
        """
        geneva = self.state.geneva
        outbox = geneva.OutboxMessage.__table__
        value = geneva.db.session.scalar(
            sa.select(sa.func.min(outbox.c.available_at)).where(
                outbox.c.published_at.is_(None), outbox.c.available_at > outbox.c.created_at
            )
        )
        geneva.db.session.rollback()
        return as_utc(value)

    def _maybe_sweep(self) -> None:
        """Delete rows whose execution is no longer scheduled (defensive; rare)."""
        if time.monotonic() - self._last_sweep < SWEEP_INTERVAL_S:
            return
        self._last_sweep = time.monotonic()
        geneva = self.state.geneva
        outbox = geneva.OutboxMessage.__table__
        executions = geneva.StepExecution.__table__
        still_scheduled = (
            sa.select(executions.c.id)
            .where(executions.c.id == outbox.c.execution_id, executions.c.state == "scheduled")
            .exists()
        )
        result = geneva.db.session.execute(sa.delete(outbox).where(~still_scheduled))
        geneva.db.session.commit()
        if result.rowcount:
            logger.info(
                "swept %d outbox row(s) whose execution was no longer scheduled",
                result.rowcount,
            )

    # ------------------------------------------------------------------ LISTEN

    def _ensure_listener(self) -> None:
        """On PostgreSQL with psycopg 3, LISTEN for new rows on a connection of our own.

        The connection is made by the app's engine, as it makes every connection (its
        URL, its ``connect_args`` such as SSL settings, a ``creator``, connect events),
        then detached from the engine's pool: the relay keeps it, in autocommit, for as
        long as it lives, and it takes no place in the pool.
        """
        if self._listener is not None:
            return
        engine = self.state.geneva.db.engine
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            return
        pooled = engine.raw_connection()
        connection: Any = pooled.driver_connection
        try:
            pooled.detach()
            connection.rollback()  # a checkout's ping may have begun a transaction
            connection.autocommit = True
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            pooled.close()  # detached (or not yet): closed for good, or back to the pool
            raise
        self._listener = connection

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                listener.close()
