"""External signals at the edges: a signal is held by the step that took it, deploys that
add or remove a wait, housekeeping's recovery of a waiting step, first in first out with
UUID keys, and a predicate whose query fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_geneva import SignalMatcher, WaitingForSignalError, step
from flask_geneva.executor import execute_step
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.testing import perform_next_step, perform_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from flask_geneva.waiting import SignalWait
from tests.models import db, geneva

Signal = geneva.WorkflowSignal
Execution = geneva.StepExecution
Outbox = geneva.OutboxMessage


def _signals(wf):
    return db.session.scalars(
        sa.select(Signal).where(Signal.workflow_id == wf.id).order_by(Signal.id)
    ).all()


def _executions(wf):
    return db.session.scalars(
        sa.select(Execution).where(Execution.workflow_id == wf.id).order_by(Execution.sequence)
    ).all()


@contextmanager
def _redeployed(cls, step_name: str, signal: SignalWait | None) -> Iterator[None]:
    """The class as a new deploy defines it: ``step_name`` waits for ``signal`` (None:
    it no longer waits); the old definition is back afterwards."""
    definition = cls._geneva_definition
    before = list(definition.steps)
    definition.steps[:] = [
        dataclasses.replace(s, signal=signal) if s.name == step_name else s for s in before
    ]
    definition.__dict__.pop("signal_waits", None)
    try:
        yield
    finally:
        definition.steps[:] = before
        definition.__dict__.pop("signal_waits", None)


class TwoWaits(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="first", on_exception="skip")
    def a(self):
        if self.data.get("fail", True):
            raise RuntimeError("a fails")

    @step(wait_for="second")
    def b(self):
        sig = self.received_signal
        self.data["b_got"] = None if sig is None else sig.name


class TwoWaitsPausing(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="first")
    def a(self):
        if self.data.get("fail", True):
            raise RuntimeError("a fails")

    @step(wait_for="second")
    def b(self):
        sig = self.received_signal
        self.data["b_got"] = None if sig is None else sig.name


def test_a_signal_held_by_a_skipped_step_is_not_another_steps(app):
    wf = TwoWaits.create()
    wf.signal("first", payload={"for": "a"})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)  # a takes 'first', fails; its policy skips it
    assert wf.next_step_name == "b"
    # b waits for 'second': the signal a holds is not b's.
    assert _executions(wf)[-1].waiting_for == "second"
    assert speedrun_workflow(wf).state == "ready" and "b_got" not in wf.data
    wf.signal("second")
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished" and wf.data["b_got"] == "second"


def test_perform_step_to_another_waiting_step_does_not_take_the_held_signal(app):
    wf = TwoWaitsPausing.create()
    wf.signal("first")
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)
    assert wf.state == "paused"
    with pytest.raises(WaitingForSignalError, match="'second'"):
        perform_step(wf, "b")


def test_a_step_that_stopped_waiting_leaves_its_held_signal_to_no_other_step(app):
    wf = TwoWaitsPausing.create()
    wf.signal("first")
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)  # a takes 'first', fails: paused, 'first' held by a
    with _redeployed(TwoWaitsPausing, "a", None):
        wf.data["fail"] = False
        wf.resume()
        db.session.commit()
        perform_next_step(wf)  # the new a (no wait) completes
        assert wf.next_step_name == "b"
        assert speedrun_workflow(wf).state == "ready" and "b_got" not in wf.data


class LaterWaits(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def a(self):
        sig = self.received_signal
        self.data["a_got"] = None if sig is None else sig.payload


def test_a_step_that_came_to_wait_takes_a_pending_signal(app):
    wf = LaterWaits.create()  # scheduled by the old code: a does not wait
    db.session.commit()
    with _redeployed(LaterWaits, "a", SignalWait(SignalMatcher("go"))):
        wf.signal("go", payload={"x": 1})
        db.session.commit()
        perform_next_step(wf)
    assert wf.data["a_got"] == {"x": 1}


def test_a_step_that_came_to_wait_starts_waiting_on_its_message(app):
    wf = LaterWaits.create()
    db.session.commit()
    (execution,) = _executions(wf)
    with _redeployed(LaterWaits, "a", SignalWait(SignalMatcher("go"), timedelta(hours=1))):
        before = utcnow()
        assert execute_step(geneva, execution.id) is None  # nothing ran: it waits now
        db.session.expire_all()
        waiting = db.session.get(Execution, execution.id)
        assert waiting.state == "scheduled" and waiting.waiting_for == "go"
        assert waiting.scheduled_for >= before + timedelta(hours=1)
        (row,) = db.session.scalars(sa.select(Outbox).where(Outbox.execution_id == execution.id))
        assert row.available_at == waiting.scheduled_for
        wf.signal("go", payload={"x": 2})
        db.session.commit()
        perform_next_step(wf)
    assert wf.data["a_got"] == {"x": 2}


class LongWait(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go", timeout=timedelta(days=3), on_timeout="cancel")
    def w(self):
        pass


def test_recovering_a_waiting_step_keeps_its_ended_timeout(app):
    wf = LongWait.create()
    db.session.commit()
    # Its timeout ended an hour ago and its message was lost.
    past = utcnow() - timedelta(hours=1)
    db.session.execute(sa.update(Execution).where(Execution.workflow_id == wf.id)
                       .values(scheduled_for=past))  # fmt: skip
    db.session.execute(sa.delete(Outbox).where(Outbox.workflow_id == wf.id))
    db.session.commit()
    assert run_housekeeping().recovered_scheduled == 1
    recovered, again = _executions(wf)
    assert (recovered.state, recovered.outcome) == ("completed", "recovered")
    assert again.waiting_for == "go" and again.scheduled_for == past
    (row,) = db.session.scalars(sa.select(Outbox).where(Outbox.execution_id == again.id))
    assert row.available_at <= utcnow()
    # Its message times it out at once (no signal came).
    execute_step(geneva, again.id)
    db.session.refresh(wf)
    assert wf.state == "canceled"


def _query_fails(wf, sig):
    if sig.payload.get("bad"):
        db.session.execute(sa.text("select * from no_such_table"))
    return True


class QueryingPredicate(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for=SignalMatcher("go", _query_fails))
    def w(self):
        self.data["got"] = self.received_signal.payload


def test_a_predicate_whose_query_fails_does_not_block_a_good_signal(app):
    wf = QueryingPredicate.create()
    wf.signal("go", {"bad": True})
    wf.signal("go", {"good": True})
    db.session.commit()
    (execution,) = _executions(wf)
    result = execute_step(geneva, execution.id)  # as a worker runs its message
    assert result is not None and result.outcome == "completed"
    db.session.refresh(wf)
    assert wf.data["got"] == {"good": True}


def test_signals_are_taken_first_in_first_out_with_uuid_keys(uuid_app):
    from tests.uuid_models import uuid_db, uuid_geneva

    class UuidFifo(uuid_geneva.Workflow):
        allow_multiple = True
        may_proceed_without_hero = True
        for _ in range(8):
            step(lambda wf: wf.data.setdefault("got", []).append(wf.received_signal.payload),
                 wait_for="n")  # fmt: skip

    wf = UuidFifo.create()
    uuid_db.session.commit()
    for number in range(8):
        wf.signal("n", payload=number)
        uuid_db.session.commit()
    speedrun_workflow(wf)
    assert wf.data["got"] == list(range(8))


def _raises_on_bad(wf, sig):
    if sig.payload.get("bad"):
        raise KeyError("no such field")
    return sig.payload.get("ok", False)


class PickyPredicate(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for=SignalMatcher("go", _raises_on_bad))
    def w(self):
        self.data["got"] = self.received_signal.payload


def test_a_predicate_that_raises_is_reported_once_not_at_every_wake(app, caplog):
    wf = PickyPredicate.create()
    bad = wf.signal("go", {"bad": True})
    db.session.commit()
    (execution,) = _executions(wf)
    with caplog.at_level("WARNING", logger="flask_geneva"):
        for _ in range(3):  # three wakes; the bad signal is checked at each
            wf.signal("go", {"ok": False})
            db.session.commit()
            execute_step(geneva, execution.id)
    said = [r for r in caplog.records if "predicate of step" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert f"signal #{bad.id}" in said[0].getMessage()
    wf.signal("go", {"ok": True})
    db.session.commit()
    result = execute_step(geneva, execution.id)
    assert result is not None and result.outcome == "completed"
    db.session.refresh(wf)
    assert wf.data["got"] == {"ok": True}
