"""External signals under concurrency (SPEC section 11), end to end.

Real ``dramatiq`` worker processes (``tests.e2e_app:broker``, the relay inside them) run
200 workflows whose steps wait for signals, while 8 threads of this process, each in
its own app context and session, send the signals and commit: some before the step
waits (in the creating commit, or while an earlier step is still due), some after; a
third of the keyed sends twice at the same moment from two threads (the same
idempotency key, another payload); some filtered by a ``SignalMatcher`` with decoys
that must stay pending; and some never, so that their timeouts fire. Then the database
must show each signal taken by the right step exactly once, nothing lost, nothing
stored twice.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.e2e_app import (
    AwaitsFirst,
    AwaitsMatching,
    PreparesThenAwaits,
    StepRun,
    TimesOutAndRuns,
    TimesOutAndSkips,
)
from tests.e2e_support import wait_until
from tests.models import db, geneva
from tests.test_e2e_workers import E2E, REDIS_URL, _e2e, _require_redis

pytestmark = pytest.mark.e2e

Signal = geneva.WorkflowSignal
Execution = geneva.StepExecution

SENDER_THREADS = 8
#: How late a timeout may fire. The relay wakes at the deadline (test_e2e_workers shows
#: waits end within a second); here 60 timeouts end within the same 1.5 s window while
#: 16 worker threads on a shared 2-core machine run the other workflows' steps, so the
#: bound allows for queueing behind them; a timeout that never fires fails the wait for
#: every workflow to finish, and one that fires early fails the lower bound.
TIMEOUT_LATENESS_BOUND = timedelta(seconds=10)


@pytest.fixture(params=["postgresql", "sqlite"])
def e2e(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[E2E]:
    _require_redis()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'signals.sqlite3'}"
    else:
        url = str(request.getfixturevalue("pg_database_url"))
    yield from _e2e(url, REDIS_URL)


@dataclass
class Send:
    """One ``signal()`` call a sender thread makes (and commits)."""

    workflow_id: Any
    name: str
    payload: Any
    key: str | None
    by_object: bool  # wf.signal(...) on the loaded workflow, else geneva.send_signal(id, ...)
    #: Both sends of a duplicated key pass it together, so they reach the workflow's row
    #: lock at the same moment.
    together: threading.Barrier | None = None


@dataclass
class Sent:
    send: Send
    signal_id: Any
    duplicate: bool


@dataclass
class Senders:
    """Sends from ``SENDER_THREADS`` threads, each with its own app context and session."""

    app: Flask
    sent: list[Sent] = field(default_factory=list)
    errors: list[tuple[Send, str]] = field(default_factory=list)

    def run(self, sends: list[Send]) -> None:
        jobs: queue.Queue[Send] = queue.Queue()
        for job in sends:  # the two sends of a duplicated key are next to each other
            jobs.put(job)
        threads = [threading.Thread(target=self._send, args=(jobs,)) for _ in range(SENDER_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a sender thread hangs"

    def _send(self, jobs: queue.Queue[Send]) -> None:
        with self.app.app_context():
            while True:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                try:
                    workflow = db.session.get(geneva.Workflow, job.workflow_id)
                    if job.together is not None:
                        job.together.wait(timeout=60)
                    if job.by_object:
                        signal = workflow.signal(job.name, job.payload, job.key)
                    else:
                        signal = geneva.send_signal(job.workflow_id, job.name, job.payload,
                                                    idempotency_key=job.key)  # fmt: skip
                    signal_id, duplicate = signal.id, signal.duplicate
                    db.session.commit()
                    self.sent.append(Sent(job, signal_id, duplicate))
                except Exception as error:  # reported by the test
                    db.session.rollback()
                    self.errors.append((job, repr(error)))
            db.session.remove()


def _sends(workflow_id: Any, name: str, payload: dict[str, Any], number: int) -> list[Send]:
    """The sends of one signal: one in six without a key (never deduplicated), every
    third keyed one twice at once from two threads (the second with another payload:
    whichever reaches the lock first is stored)."""
    by_object = number % 2 == 0
    if number % 6 == 5:
        return [Send(workflow_id, name, payload, None, by_object)]
    key = f"key-{workflow_id}-{name}-{number}"
    if number % 3 != 0:
        return [Send(workflow_id, name, payload, key, by_object)]
    together = threading.Barrier(2)
    return [
        Send(workflow_id, name, {**payload, "copy": 1}, key, by_object, together),
        Send(workflow_id, name, {**payload, "copy": 2}, key, not by_object, together),
    ]


def _shuffled_keeping_pairs(groups: list[list[Send]]) -> list[Send]:
    random.shuffle(groups)
    return list(itertools.chain.from_iterable(groups))


def _create(cls: Any, count: int, **kwargs: Any) -> list[Any]:
    workflows = [cls.create(**kwargs) for _ in range(count)]
    db.session.commit()
    return [wf.id for wf in workflows]


def _waiting_count(ids: list[Any]) -> int:
    db.session.rollback()
    return int(
        db.session.scalar(
            sa.select(sa.func.count()).where(
                Execution.workflow_id.in_(ids),
                Execution.step_name == "take",
                Execution.state == "scheduled",
                Execution.waiting_for.is_not(None),
            )
        )
    )


def test_200_workflows_take_their_concurrent_signals_exactly_once(e2e: E2E) -> None:
    e2e.start_workers(processes=2, threads=8)
    counter = itertools.count()

    def payload(workflow_id: Any, **extra: Any) -> dict[str, Any]:
        return {"wf": str(workflow_id), "nonce": uuid.uuid4().hex, **extra}

    # 20 workflows whose first step waits, signalled in the very commit that creates them.
    in_creating_commit: dict[Any, dict[str, Any]] = {}
    for _ in range(20):
        workflow = AwaitsFirst.create()
        sent_payload = payload("new")
        signal = workflow.signal("go", sent_payload, f"create-{next(counter)}")
        in_creating_commit[workflow] = sent_payload
        assert signal.duplicate is False
    db.session.commit()
    creating_commit = {wf.id: sent_payload for wf, sent_payload in in_creating_commit.items()}

    first_waits = _create(AwaitsFirst, 20)
    early = _create(PreparesThenAwaits, 30)  # signalled while their first step is due
    late = _create(PreparesThenAwaits, 30)  # signalled once their step waits
    matching = [AwaitsMatching.create(data={"token": f"token-{number}"}) for number in range(40)]
    db.session.commit()
    matching_ids = {wf.id: wf.data["token"] for wf in matching}
    times_out_and_runs = _create(TimesOutAndRuns, 30)
    times_out_and_skips = _create(TimesOutAndSkips, 30)
    timing_out = times_out_and_runs + times_out_and_skips

    # Round 1: for each matching workflow, a decoy its predicate refuses (first: the
    # workflow ends with the step that takes the right one, and then refuses signals).
    senders = Senders(e2e.app)
    decoys = {
        wf: Send(wf, "event", payload(wf, **{"for": "someone-else"}), None, number % 2 == 0)
        for number, wf in enumerate(matching_ids)
    }
    senders.run(list(decoys.values()))
    # Round 2, at once: the first steps that wait, the prepared ones, the matching ones.
    groups = [_sends(wf, "go", payload(wf), next(counter)) for wf in first_waits + early]
    for wf, token in matching_ids.items():
        groups.append(_sends(wf, "event", payload(wf, **{"for": token}), next(counter)))
    senders.run(_shuffled_keeping_pairs(groups))

    # Round 3: the late ones, once every one of them waits.
    wait_until(lambda: _waiting_count(late) == len(late), timeout=120,
               message="the late workflows to wait for their signal")  # fmt: skip
    senders.run(_shuffled_keeping_pairs([_sends(wf, "go", payload(wf), next(counter))
                                         for wf in late]))  # fmt: skip
    assert senders.errors == []

    every = list(creating_commit) + first_waits + early + late + list(matching_ids) + timing_out
    assert len(every) == 200
    wait_until(lambda: e2e.all_finished(every), timeout=240,
               message="the 200 workflows to finish")  # fmt: skip
    db.session.expire_all()

    # Each duplicated key: one send stored it, the other got that same row back.
    by_key: dict[str, list[Sent]] = {}
    for sent in senders.sent:
        if sent.send.key is not None:
            by_key.setdefault(sent.send.key, []).append(sent)
    pairs = [sends for sends in by_key.values() if len(sends) == 2]
    assert len(pairs) >= 40
    for first, second in pairs:
        assert first.signal_id == second.signal_id
        assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert all(len(sends) in (1, 2) for sends in by_key.values())
    stored = {sent.signal_id: sent for sent in senders.sent if not sent.duplicate}
    assert len(stored) == len([s for s in senders.sent if not s.duplicate])

    # Every signal stored once, with the payload of the send that stored it.
    signals = {row.id: row for row in db.session.scalars(sa.select(Signal))}
    assert len(signals) == len(stored) + len(creating_commit)
    for signal_id, sent in stored.items():
        row = signals[signal_id]
        assert (row.workflow_id, row.name, row.payload, row.idempotency_key) == (
            sent.send.workflow_id,
            sent.send.name,
            sent.send.payload,
            sent.send.key,
        )
    decoy_ids = {sent.signal_id for sent in stored.values() if sent.send in decoys.values()}
    assert len(decoy_ids) == len(decoys)

    # Each waiting step ran once, with its own signal; that signal is consumed by the
    # execution that ran; the decoys stay pending and free; the timeouts had none.
    take_runs = Counter(
        workflow_id
        for (workflow_id,) in db.session.execute(
            sa.select(StepRun.workflow_id).where(StepRun.step_name == "take")
        )
    )
    take_executions = {
        row.workflow_id: row
        for row in db.session.scalars(
            sa.select(Execution).where(Execution.step_name == "take",
                                       Execution.workflow_id.in_(every))
        )
    }  # fmt: skip
    assert len(take_executions) == 200  # one execution of the step per workflow: no retries
    expected_signal = {
        sent.send.workflow_id: sent.signal_id
        for sent in stored.values()
        if sent.send.name in ("go", "event") and sent.send not in decoys.values()
    }
    for wf, sent_payload in creating_commit.items():
        [row] = [s for s in signals.values() if s.workflow_id == wf]
        assert row.payload == sent_payload
        expected_signal[wf] = row.id
    assert len(expected_signal) == 140
    workflows = {wf.id: wf for wf in db.session.scalars(sa.select(geneva.Workflow))}
    for wf, signal_id in expected_signal.items():
        signal = signals[signal_id]
        execution = take_executions[wf]
        assert take_runs[str(wf)] == 1, wf
        assert workflows[wf].data["signal_id"] == signal_id, wf
        assert workflows[wf].data["got"] == signal.payload, wf
        assert (str(execution.state), str(execution.outcome)) == ("completed", "success")
        assert (str(signal.state), signal.execution_id) == ("consumed", execution.id), wf
        assert signal.consumed_at is not None
    consumed = [s for s in signals.values() if str(s.state) == "consumed"]
    assert len(consumed) == 140
    assert len({s.execution_id for s in consumed}) == 140  # no execution took two
    pending = {s.id for s in signals.values() if str(s.state) == "pending"}
    assert pending == decoy_ids
    assert all(signals[s].execution_id is None for s in pending)

    # Signals that arrived before their step waited (pending, taken when it came due),
    # and after: both happened.
    before = {
        wf for wf, signal_id in expected_signal.items()
        if signals[signal_id].created_at < take_executions[wf].created_at
    }  # fmt: skip
    assert before and not before & set(late)

    # The timeouts fired, never early, and the steps ran without a signal or were skipped.
    assert not any(s.workflow_id in timing_out for s in signals.values())
    for wf in timing_out:
        execution = take_executions[wf]
        ended = execution.started_at or execution.finished_at
        assert execution.scheduled_for <= ended <= execution.scheduled_for + TIMEOUT_LATENESS_BOUND
        if wf in times_out_and_runs:
            assert take_runs[str(wf)] == 1
            assert (workflows[wf].data["got"], workflows[wf].data["signal_id"]) == (None, None)
            assert str(execution.outcome) == "success"
        else:
            assert take_runs[str(wf)] == 0
            assert str(execution.outcome) == "skipped"
    runs = e2e.runs()
    assert set(runs.values()) == {1}
    assert all(runs[(str(wf), "after")] == 1 for wf in timing_out)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.OutboxMessage)) == 0


@pytest.fixture
def pg_e2e(pg_database_url: str) -> Iterator[E2E]:
    _require_redis()
    yield from _e2e(pg_database_url, REDIS_URL)


@pytest.mark.parametrize("first_ends_with", ["commit", "rollback"])
def test_two_transactions_sending_one_key_at_once_are_serialised_by_the_workflow_lock(
    pg_e2e: E2E, first_ends_with: str
) -> None:
    """On PostgreSQL the second send blocks on the workflow's row lock until the first
    transaction ends; then it sees the first one's row (a duplicate), or, when the first
    rolled back, stores its own. Neither fails on the unique index."""
    workflow = AwaitsFirst.create()
    db.session.commit()
    workflow_id = workflow.id
    first = geneva.send_signal(workflow_id, "go", {"from": "first"}, idempotency_key="k")
    assert first.duplicate is False
    first_id = first.id
    result: list[Any] = []

    def second_sender() -> None:
        with pg_e2e.app.app_context():
            try:
                signal = geneva.send_signal(workflow_id, "go", {"from": "second"},
                                            idempotency_key="k")  # fmt: skip
                result.append((signal.id, signal.duplicate, signal.payload))
                db.session.commit()
            except Exception as error:  # reported below
                result.append(error)
            finally:
                db.session.remove()

    sender = threading.Thread(target=second_sender)
    sender.start()
    # In autocommit: a transaction would keep its first snapshot of pg_stat_activity.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as observer:

        def second_blocked() -> bool:
            return bool(
                observer.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar()
            )

        wait_until(second_blocked, timeout=30, message="the second send to wait for the lock")
    assert result == [] and sender.is_alive()
    if first_ends_with == "commit":
        db.session.commit()
    else:
        db.session.rollback()
    sender.join(timeout=30)
    assert not sender.is_alive()
    [outcome] = result
    rows = db.session.execute(sa.select(Signal.id, Signal.payload)).all()
    if first_ends_with == "commit":
        assert outcome == (first_id, True, {"from": "first"})
        assert rows == [(first_id, {"from": "first"})]
    else:
        assert isinstance(outcome, tuple) and outcome[1:] == (False, {"from": "second"})
        assert rows == [(outcome[0], {"from": "second"})]


def test_a_repeated_key_does_not_change_what_the_first_call_returned(pg_e2e: E2E) -> None:
    workflow = AwaitsFirst.create()
    db.session.commit()
    first = workflow.signal("go", {"n": 1}, idempotency_key="same")
    db.session.commit()
    assert first.duplicate is False
    again = workflow.signal("go", {"n": 2}, idempotency_key="same")
    assert again.duplicate is True and again.id == first.id
    assert first.duplicate is False  # what the first call returned says it stored the signal
