"""What docs/waiting-for-signals.md says about signals, beyond tests/test_external_signals.py:
the predicate's exception, the signal a canceling or pausing step keeps, a retry after
a timeout ran the step, finish() consuming, and housekeeping leaving waiting steps alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_geneva import SignalMatcher, WaitingForSignalError, step
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.testing import perform_next_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from tests.models import db, geneva

Signal = geneva.WorkflowSignal
Execution = geneva.StepExecution
Outbox = geneva.OutboxMessage


def _explode(wf, sig):
    if sig.payload.get("boom"):
        raise KeyError("the predicate failed")
    return True


class DocsPredicateFlow(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for=SignalMatcher("event", _explode))
    def take(self):
        self.data["got"] = self.received_signal.payload


class DocsEndingFlow(geneva.Workflow):
    """The body ends as ``data["end"]`` says, with the signal it took."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go", on_exception="pause")
    def decide(self):
        self.data.setdefault("seen", []).append(self.received_signal.id)
        end = self.received_signal.payload["end"]
        if end == "cancel":
            self.cancel()
        if end == "finish":
            self.finish()
        if end == "reattempt" and len(self.data["seen"]) == 1:
            self.reattempt()
        if end == "raise" and self.current_execution.sequence == 1:
            raise RuntimeError("first attempt fails")

    @step
    def after(self):
        pass


class DocsTimeoutRetryFlow(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go", timeout=timedelta(hours=2), on_exception="reattempt")
    def act(self):
        signal = self.received_signal
        if signal is None:
            raise RuntimeError("no decision: try again")
        self.data["got"] = signal.payload


class DocsForeverFlow(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go")
    def wait_here(self):
        pass


def _signals(wf):
    return db.session.scalars(
        sa.select(Signal).where(Signal.workflow_id == wf.id).order_by(Signal.id)
    ).all()


def _executions(wf):
    return db.session.scalars(
        sa.select(Execution).where(Execution.workflow_id == wf.id).order_by(Execution.sequence)
    ).all()


def test_a_predicate_that_raises_does_not_match_that_signal(app, caplog):
    wf = DocsPredicateFlow.create()
    bad = wf.signal("event", payload={"boom": True})
    db.session.commit()
    # The malformed signal is passed over (and logged); the step waits on.
    with pytest.raises(WaitingForSignalError):
        perform_next_step(wf)
    assert wf.state == "ready"
    assert "raised for signal #" in caplog.text and "the predicate failed" in caplog.text
    good = wf.signal("event", payload={"fine": True})
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished" and wf.data["got"] == {"fine": True}
    states = {s.id: (s.state, s.execution_id) for s in _signals(wf)}
    assert states[bad.id] == ("pending", None)
    assert states[good.id][0] == "consumed"


def test_finish_consumes_the_signal_cancel_leaves_it_pending(app):
    finished = DocsEndingFlow.create()
    finished.signal("go", payload={"end": "finish"})
    canceled = DocsEndingFlow.create()
    canceled.signal("go", payload={"end": "cancel"})
    db.session.commit()
    speedrun_workflow(finished)
    speedrun_workflow(canceled)
    assert (finished.state, canceled.state) == ("finished", "canceled")
    assert [s.state for s in _signals(finished)] == ["consumed"]
    [kept] = _signals(canceled)
    assert (kept.state, kept.execution_id) == ("pending", _executions(canceled)[0].id)


def test_reattempt_and_a_paused_failure_run_again_with_the_same_signal(app):
    for end in ("reattempt", "raise"):
        wf = DocsEndingFlow.create()
        wf.signal("go", payload={"end": end})
        db.session.commit()
        try:
            perform_next_step(wf)
        except RuntimeError:
            assert end == "raise"
            assert wf.state == "paused"
            wf.resume()
            db.session.commit()
        retry = _executions(wf)[-1]
        assert (retry.state, retry.waiting_for) == ("scheduled", None), end
        perform_next_step(wf)
        [signal] = _signals(wf)
        assert wf.data["seen"] == [signal.id] * (2 if end == "reattempt" else 1), end
        assert (signal.state, signal.execution_id) == ("consumed", retry.id), end


def test_a_retry_after_the_timeout_ran_the_step_waits_again_with_a_fresh_timeout(app):
    wf = DocsTimeoutRetryFlow.create()
    db.session.commit()
    before = utcnow()
    with pytest.raises(RuntimeError, match="no decision"):
        perform_next_step(wf, timeout_elapsed=True)
    first, retry = _executions(wf)
    assert (first.state, first.outcome) == ("failed", "reattempted")
    assert (retry.state, retry.waiting_for) == ("scheduled", "go")
    assert retry.scheduled_for >= before + timedelta(hours=2)
    [row] = db.session.scalars(sa.select(Outbox).where(Outbox.execution_id == retry.id)).all()
    assert row.available_at == retry.scheduled_for
    wf.signal("go", payload={"ok": True})
    db.session.commit()
    perform_next_step(wf)
    assert (wf.state, wf.data) == ("finished", {"got": {"ok": True}})


def test_housekeeping_never_takes_a_step_waiting_without_a_timeout_for_overdue(app):
    forever = DocsForeverFlow.create()
    with_deadline = DocsTimeoutRetryFlow.create()
    db.session.commit()
    result = run_housekeeping(now=utcnow() + timedelta(days=3650))
    assert result.recovered_scheduled == 1  # the one with a deadline, long past
    [waiting] = _executions(forever)
    assert (waiting.state, waiting.waiting_for, waiting.scheduled_for) == (
        "scheduled", "go", None
    )
    recovered = _executions(with_deadline)
    assert [(e.state, e.outcome) for e in recovered] == [
        ("completed", "recovered"), ("scheduled", None)
    ]
    assert recovered[1].waiting_for == "go"  # and it waits again
