"""External signals (SPEC section 11): steps that wait for the outside world."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_geneva import (
    InvalidSignalError,
    InvalidStateError,
    SignalMatcher,
    StepConfigurationError,
    WaitingForSignalError,
    cancel_if,
    step,
)
from flask_geneva.executor import execute_step
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.testing import perform_next_step, perform_step, speedrun_workflow
from flask_geneva.timeutil import utcnow
from tests.models import db, geneva

Signal = geneva.WorkflowSignal
Execution = geneva.StepExecution
Outbox = geneva.OutboxMessage


class ApprovalFlow(geneva.Workflow):
    allow_multiple = True

    @step
    def request_approval(self):
        self.data["asked"] = True

    @step(wait_for="approved", timeout=timedelta(days=3))
    def act_on_decision(self):
        sig = self.received_signal
        self.data["got"] = None if sig is None else sig.payload
        self.data.setdefault("seen", []).append(None if sig is None else sig.id)
        if self.data.get("explode") and self.current_execution.sequence == 2:
            raise RuntimeError("the decision failed")  # its writes are rolled back
        if sig is None or not sig.payload.get("ok"):
            self.cancel()

    @step
    def done(self):
        self.data["done"] = True


class ForeverFlow(geneva.Workflow):
    """Waits without a timeout; the payload's ``go`` flag picks the signal."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for=SignalMatcher("event", lambda wf, sig: bool((sig.payload or {}).get("go"))))
    def wait_here(self):
        self.data["got"] = self.received_signal.payload

    @step
    def after(self):
        pass


class TimeoutChoices(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True
    cancel_if(lambda wf: wf.data.get("stop"))

    @step(wait_for="go", timeout=60, on_timeout="skip")
    def skipped_on_timeout(self):
        self.data["ran"] = True

    @step(wait_for="go", timeout=60, on_timeout="pause")
    def paused_on_timeout(self):
        self.data["ran2"] = self.received_signal.payload

    @step(wait_for="go", timeout=60, on_timeout="cancel")
    def canceled_on_timeout(self):
        pass


#: What Flaky's attempts saw (a failed attempt's own writes are rolled back).
FLAKY_SEEN: list[object] = []


class Flaky(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go", on_exception="pause")
    def use_it(self):
        FLAKY_SEEN.append(self.received_signal.payload)
        if self.current_execution.sequence == 1:
            raise RuntimeError("first try fails")


def _approval(user, **data):
    wf = ApprovalFlow.create(hero=user, data=data)
    db.session.commit()
    return wf


def _executions(wf):
    return db.session.scalars(
        sa.select(Execution).where(Execution.workflow_id == wf.id).order_by(Execution.sequence)
    ).all()


def _signals(wf):
    return db.session.scalars(
        sa.select(Signal).where(Signal.workflow_id == wf.id).order_by(Signal.id)
    ).all()


def _outbox(execution):
    return db.session.scalars(sa.select(Outbox).where(Outbox.execution_id == execution.id)).all()


def _nested(depth):
    """A payload of ``depth`` lists, one inside the other."""
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _circular():
    loop = {"a": 1}
    loop["self"] = loop
    return loop


# -- the DSL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait_for": "x", "wait": 5}, "give wait or wait_for, not both"),
        ({"timeout": 5}, "timeout only applies with wait_for"),
        ({"on_timeout": "skip"}, "on_timeout only applies with wait_for"),
        ({"wait_for": "x", "on_timeout": "explode"}, "on_timeout must be one of"),
        ({"wait_for": "x", "timeout": 0}, "timeout must be > 0"),
        ({"wait_for": "x", "timeout": "soon"}, "timeout must be a timedelta"),
        ({"wait_for": 42}, "wait_for takes a signal name or a flask_geneva.SignalMatcher"),
        ({"wait_for": ""}, "a signal name must be a non-empty string"),
        ({"wait_for": "a\x00b"}, "without NUL"),
        ({"wait_for": "x", "timeout": math.nan}, "timeout must be a finite number"),
        ({"wait_for": "x", "timeout": math.inf}, "timeout must be a finite number"),
        ({"wait_for": "x", "timeout": 1e20}, "timeout must be a finite number"),
        ({"wait_for": "x", "timeout": timedelta(days=999_999)}, "at most 365250 days"),
    ],
)
def test_wrong_signal_options_are_configuration_errors(options, message):
    with pytest.raises(StepConfigurationError, match=message):

        class Wrong(geneva.Workflow):
            @step(**options)
            def only(self):
                pass


def test_a_matcher_needs_a_callable_predicate():
    with pytest.raises(StepConfigurationError, match="the predicate must be a callable"):
        SignalMatcher("x", "not callable")


# -- waiting and waking ----------------------------------------------------------------


def test_a_waiting_step_stays_scheduled_with_its_deadline_and_speedrun_returns(app, user):
    wf = _approval(user)
    before = utcnow()
    speedrun_workflow(wf)

    assert wf.state == "ready" and wf.next_step_name == "act_on_decision"
    first, waiting = _executions(wf)
    assert first.state == "completed"
    assert waiting.state == "scheduled" and waiting.waiting_for == "approved"
    assert before + timedelta(days=3) <= waiting.scheduled_for <= utcnow() + timedelta(days=3)
    # Its only message is the one for the end of the timeout.
    (row,) = _outbox(waiting)
    assert row.available_at == waiting.scheduled_for


def test_without_a_timeout_a_waiting_step_has_no_deadline_and_no_message(app):
    wf = ForeverFlow.create()
    db.session.commit()
    (waiting,) = _executions(wf)
    assert waiting.waiting_for == "event" and waiting.scheduled_for is None
    assert _outbox(waiting) == []
    # Never overdue: housekeeping leaves it alone.
    result = run_housekeeping(now=utcnow() + timedelta(days=400))
    assert result.recovered_scheduled == 0
    db.session.refresh(waiting)
    assert waiting.state == "scheduled"


def test_a_signal_wakes_the_step_which_consumes_it(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)

    sig = wf.signal("approved", payload={"ok": True}, idempotency_key="k1")
    assert sig.duplicate is False and sig.state == "pending" and sig.id is not None
    # Due now: the timeout's message gave way to one due at once.
    (row,) = _outbox(waiting)
    assert row.available_at <= utcnow()
    db.session.commit()

    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert wf.data["got"] == {"ok": True} and wf.data["seen"] == [sig.id]
    db.session.refresh(sig)
    assert sig.state == "consumed" and sig.consumed_at is not None
    assert sig.execution_id == waiting.id


def test_a_worker_message_without_a_signal_puts_the_step_back_to_waiting(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)
    # A stray message (say, republished) finds no signal: nothing runs, it waits on.
    assert execute_step(geneva, waiting.id) is None
    db.session.expire_all()
    assert db.session.get(Execution, waiting.id).state == "scheduled"
    (row,) = _outbox(waiting)
    assert row.available_at == waiting.scheduled_for


def test_a_signal_sent_before_the_step_waits_is_taken_at_once_first_in_first_out(app, user):
    wf = _approval(user)  # request_approval not run yet
    first = wf.signal("approved", payload={"ok": True, "n": 1})
    second = wf.signal("approved", payload={"ok": True, "n": 2})
    db.session.commit()

    perform_next_step(wf)  # request_approval; the next step does not wait
    _, due = _executions(wf)
    (row,) = _outbox(due)
    assert row.available_at <= utcnow()
    perform_next_step(wf)
    assert wf.data["got"] == {"ok": True, "n": 1}
    db.session.expire_all()
    assert db.session.get(Signal, first.id).state == "consumed"
    assert db.session.get(Signal, second.id).state == "pending"


def test_a_matcher_takes_the_oldest_signal_its_predicate_accepts(app):
    wf = ForeverFlow.create()
    db.session.commit()
    wf.signal("event", payload={"go": False})
    wf.signal("other", payload={"go": True})
    db.session.commit()
    # Neither matches: the step keeps waiting.
    assert speedrun_workflow(wf).next_step_name == "wait_here"
    with pytest.raises(WaitingForSignalError, match="'event'"):
        perform_next_step(wf)
    wanted = wf.signal("event", payload={"go": True, "n": 3})
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished" and wf.data["got"] == {"go": True, "n": 3}
    states = {s.id: s.state for s in _signals(wf)}
    assert states[wanted.id] == "consumed"
    assert sorted(states.values()) == ["consumed", "pending", "pending"]


# -- idempotency and refusals ----------------------------------------------------------


def test_a_repeated_idempotency_key_stores_nothing_new(app, user):
    wf = _approval(user)
    original = wf.signal("approved", payload={"ok": True}, idempotency_key="abc")
    db.session.commit()
    again = wf.signal("approved", payload={"ok": False}, idempotency_key="abc")
    assert again.duplicate is True and again.id == original.id
    assert again.payload == {"ok": True}
    # Another name, or no key, is a new signal.
    other = wf.signal("rejected", idempotency_key="abc")
    plain1, plain2 = wf.signal("approved"), wf.signal("approved")
    db.session.commit()
    assert not other.duplicate and plain1.id != plain2.id
    assert len(_signals(wf)) == 4


def test_an_ended_workflow_refuses_new_signals_but_answers_a_repeated_key(app, user):
    wf = _approval(user)
    wf.signal("approved", payload={"ok": True}, idempotency_key="once")
    db.session.commit()
    wf.cancel()
    db.session.commit()
    with pytest.raises(InvalidStateError, match="canceled"):
        wf.signal("approved", payload={"ok": True}, idempotency_key="twice")
    assert wf.signal("approved", idempotency_key="once").duplicate is True
    db.session.rollback()
    assert len(_signals(wf)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": {"when": object()}}, "must be JSON-serialisable"),
        ({"payload": {"n": math.nan}}, "non-finite number"),
        ({"payload": "x" * 70_000}, "GENEVA_MAX_SIGNAL_PAYLOAD"),
        ({"idempotency_key": ""}, "idempotency_key must be"),
        ({"idempotency_key": 5}, "idempotency_key must be"),
        ({"idempotency_key": "a\x00b"}, "without NUL"),
        ({"payload": {"s": "\ud800"}}, r"payload\['s'\] holds a string with a lone surrogate"),
        ({"payload": _nested(32)}, "nested more than 31 levels deep"),
        ({"payload": _nested(3000)}, "nested more than 31 levels deep"),
        ({"payload": _circular()}, "nested more than 31 levels deep \\(or contains itself\\)"),
    ],
)
def test_a_bad_payload_or_key_raises_value_error_and_stores_nothing(app, user, kwargs, message):
    wf = _approval(user)
    with pytest.raises(ValueError, match=message) as raised:
        wf.signal("approved", **kwargs)
    assert isinstance(raised.value, InvalidSignalError)
    db.session.commit()
    assert _signals(wf) == []


def test_a_payload_nested_31_deep_is_taken(app, user):
    wf = _approval(user)
    assert wf.signal("approved", _nested(31)).payload == _nested(31)
    db.session.commit()
    assert _signals(wf)[0].payload == _nested(31)


def test_the_payload_limit_counts_utf8_bytes_as_sent(app, user):
    wf = _approval(user)
    accents = {"s": "é" * 30_000}  # 60,009 bytes of UTF-8 (180,009 if escaped)
    assert wf.signal("approved", accents).payload == accents
    db.session.commit()
    assert _signals(wf)[0].payload == accents
    with pytest.raises(InvalidSignalError, match=r"the payload is 80009 bytes of JSON"):
        wf.signal("approved", {"s": "é" * 40_000})


def test_a_bad_name_is_refused(app, user):
    wf = _approval(user)
    with pytest.raises(InvalidSignalError, match="a signal name"):
        wf.signal("")
    with pytest.raises(InvalidSignalError, match="without NUL"):
        wf.signal("appro\x00ved")
    with pytest.raises(InvalidSignalError, match="a signal name"):
        wf.signal("n" * 300)


def test_send_signal_by_id(app, user):
    wf = _approval(user)
    sig = geneva.send_signal(wf.id, "approved", payload={"ok": True}, idempotency_key="x")
    db.session.commit()
    assert sig.workflow_id == wf.id
    assert geneva.send_signal(str(wf.id), "approved", idempotency_key="x").duplicate
    with pytest.raises(LookupError, match="no workflow with id 987654"):
        geneva.send_signal(987654, "approved")
    for malformed in ("not-an-id", None, 2**70):
        with pytest.raises(LookupError, match="no workflow with id"):
            geneva.send_signal(malformed, "approved")


def test_a_signal_does_not_commit_and_a_rollback_keeps_the_step_waiting(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    wf.signal("approved", payload={"ok": True})
    db.session.rollback()
    assert _signals(wf) == []
    with pytest.raises(WaitingForSignalError):
        perform_next_step(wf)


# -- outcomes: consumed only on success or skip ----------------------------------------


def test_a_failed_attempt_keeps_the_signal_for_the_retry(app):
    FLAKY_SEEN.clear()
    wf = Flaky.create()
    db.session.commit()
    sig = wf.signal("go", payload={"n": 1})
    db.session.commit()
    with pytest.raises(RuntimeError):
        speedrun_workflow(wf)
    assert wf.state == "paused"
    db.session.refresh(sig)
    assert sig.state == "pending" and sig.execution_id is not None
    # A second signal does not replace the one the step holds.
    wf.signal("go", payload={"n": 2})
    wf.resume()
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert FLAKY_SEEN == [{"n": 1}, {"n": 1}]
    db.session.refresh(sig)
    retried = _executions(wf)[-1]
    assert sig.state == "consumed" and sig.execution_id == retried.id
    assert [s.state for s in _signals(wf)] == ["consumed", "pending"]


def test_a_reattempted_decision_sees_the_same_payload(app, user):
    wf = _approval(user, explode=True)
    speedrun_workflow(wf)
    sig = wf.signal("approved", payload={"ok": True})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(wf)  # the default policy pauses
    wf.resume()
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished" and wf.data["seen"] == [sig.id]
    db.session.refresh(sig)
    assert sig.state == "consumed" and sig.execution_id == _executions(wf)[2].id


def test_preconditions_decide_before_a_signal_is_taken(app):
    wf = TimeoutChoices.create(data={"stop": True})
    sig = wf.signal("go", payload=1)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "canceled"
    db.session.refresh(sig)
    assert sig.state == "pending" and sig.execution_id is None


# -- timeouts --------------------------------------------------------------------------


def test_timeout_run_runs_the_body_without_a_signal(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    with pytest.raises(WaitingForSignalError, match="approved"):
        perform_next_step(wf)
    perform_next_step(wf, timeout_elapsed=True)
    assert wf.data["got"] is None and wf.state == "canceled"  # the body canceled


def test_timeout_skip_pause_and_cancel(app):
    wf = TimeoutChoices.create()
    db.session.commit()
    perform_next_step(wf, timeout_elapsed=True)
    assert _executions(wf)[0].state == "skipped" and "ran" not in wf.data
    perform_next_step(wf, timeout_elapsed=True)
    assert wf.state == "paused" and wf.next_step_name == "paused_on_timeout"
    # Resume waits again (a fresh timeout); a signal sent while paused is taken.
    wf.signal("go", payload="late")
    wf.resume()
    db.session.commit()
    perform_next_step(wf)
    assert wf.data["ran2"] == "late"
    perform_next_step(wf, timeout_elapsed=True)
    assert wf.state == "canceled"
    assert [(e.step_name, e.state, e.outcome) for e in _executions(wf)] == [
        ("skipped_on_timeout", "skipped", "skipped"),
        ("paused_on_timeout", "canceled", "canceled"),
        ("paused_on_timeout", "completed", "success"),
        ("canceled_on_timeout", "canceled", "canceled"),
    ]


def test_a_worker_runs_the_timeout_when_its_deadline_has_passed(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)
    db.session.execute(
        sa.update(Execution)
        .where(Execution.id == waiting.id)
        .values(scheduled_for=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    result = execute_step(geneva, waiting.id)
    assert result is not None and result.outcome == "cancel"
    db.session.refresh(wf)
    assert wf.state == "canceled" and wf.data["got"] is None


def test_perform_step_on_a_waiting_step(app, user):
    wf = _approval(user)
    with pytest.raises(WaitingForSignalError, match="timeout_elapsed=True"):
        perform_step(wf, "act_on_decision")
    wf.signal("approved", payload={"ok": True})
    db.session.commit()
    perform_step(wf, "act_on_decision")
    assert wf.data["got"] == {"ok": True} and wf.next_step_name == "done"


# -- operators -------------------------------------------------------------------------


def test_pause_keeps_the_waiting_step_and_its_signals(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)
    wf.pause()
    db.session.commit()
    assert _outbox(waiting) == []
    wf.signal("approved", payload={"ok": True})
    db.session.commit()
    assert _outbox(waiting) == []  # paused: nothing is published
    wf.resume()
    db.session.commit()
    (row,) = _outbox(waiting)
    assert row.available_at <= utcnow()
    speedrun_workflow(wf)
    assert wf.state == "finished"


def test_resume_without_a_signal_keeps_waiting_until_the_deadline(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)
    wf.pause()
    db.session.commit()
    wf.resume()
    db.session.commit()
    (row,) = _outbox(waiting)
    assert row.available_at == waiting.scheduled_for


def test_skipping_a_waiting_step(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    wf.skip()
    db.session.commit()
    assert wf.next_step_name == "done"
    assert _executions(wf)[1].state == "skipped"


# -- UUID keys -------------------------------------------------------------------------


def test_signals_with_uuid_keys(uuid_app):
    from tests.uuid_models import uuid_db, uuid_geneva

    class UuidWaiter(uuid_geneva.Workflow):
        allow_multiple = True
        may_proceed_without_hero = True

        @step(wait_for="ping")
        def wait_here(self):
            self.data["got"] = self.received_signal.payload

    wf = UuidWaiter.create()
    uuid_db.session.commit()
    assert speedrun_workflow(wf).state == "ready"
    sig = uuid_geneva.send_signal(str(wf.id), "ping", payload=[1, 2], idempotency_key="u")
    uuid_db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished" and wf.data["got"] == [1, 2]
    uuid_db.session.refresh(sig)
    assert sig.state == "consumed" and sig.execution_id is not None
    assert uuid_geneva.send_signal(wf.id, "ping", idempotency_key="u").duplicate


# -- what the caller gets, and the warnings ---------------------------------------------


def test_a_repeated_key_does_not_change_what_the_first_call_returned(app, user):
    wf = _approval(user)
    first = wf.signal("approved", payload={"ok": True}, idempotency_key="same")
    db.session.commit()
    again = wf.signal("approved", payload={"ok": False}, idempotency_key="same")
    assert again.duplicate is True and again.id == first.id and again.payload == {"ok": True}
    assert first.duplicate is False
    db.session.commit()
    assert len(_signals(wf)) == 1


def test_a_name_no_step_waits_for_is_stored_with_a_warning(app, user, caplog):
    wf = _approval(user)
    typo = wf.signal("aproved")
    db.session.commit()
    assert typo.state == "pending"
    assert "no step of ApprovalFlow waits for it (its steps wait for: 'approved')" in caplog.text
    caplog.clear()
    wf.signal("approved")
    db.session.commit()
    assert "no step" not in caplog.text


def test_a_signal_rolled_back_uncommitted_is_logged(app, user, caplog):
    wf = _approval(user)
    wf.signal("approved", payload={"ok": True})
    db.session.rollback()
    assert "was rolled back, never committed" in caplog.text
    assert "call db.session.commit() after them" in caplog.text
    caplog.clear()
    wf.signal("approved", payload={"ok": True})
    db.session.commit()
    db.session.rollback()
    assert "rolled back" not in caplog.text


def test_a_view_that_forgets_to_commit_is_logged_when_the_request_ends(app, user, caplog):
    wf_id = _approval(user).id

    @app.post("/forgetful/<int:wid>")
    def forgetful(wid):
        geneva.send_signal(wid, "approved", payload={"ok": True})
        return "", 202

    # An app context of its own, hence a session of its own, ended (and its session
    # removed) when the block ends, as a request's is in production.
    with app.app_context():
        assert app.test_client().post(f"/forgetful/{wf_id}").status_code == 202
    assert "was rolled back, never committed" in caplog.text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signal)) == 0


def test_a_message_just_ahead_of_the_deadline_times_out_at_the_deadline_not_before(app, user):
    wf = _approval(user)
    speedrun_workflow(wf)
    _, waiting = _executions(wf)
    deadline = utcnow() + timedelta(milliseconds=120)
    db.session.execute(
        sa.update(Execution).where(Execution.id == waiting.id).values(scheduled_for=deadline)
    )
    db.session.commit()
    # The relay publishes a little ahead: the worker waits for the deadline, then the
    # timeout runs the body (which cancels without a signal).
    result = execute_step(geneva, waiting.id)
    assert result is not None and result.outcome == "cancel"
    db.session.expire_all()
    ran = db.session.get(Execution, waiting.id)
    assert ran.started_at >= deadline


class SkipsWithoutTimeout(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="never", on_timeout="skip")
    def take(self):
        self.data["ran"] = True

    @step
    def after(self):
        self.data["after"] = True


def test_on_timeout_without_a_timeout_applies_to_timeout_elapsed_in_tests(app):
    """SPEC gives ``on_timeout`` no need of a ``timeout``: a step that waits for ever
    keeps it for ``timeout_elapsed=True``."""
    wf = SkipsWithoutTimeout.create()
    db.session.commit()
    with pytest.raises(WaitingForSignalError):
        perform_next_step(wf)
    perform_next_step(wf, timeout_elapsed=True)
    perform_next_step(wf)
    assert wf.state == "finished"
    assert wf.data == {"after": True}
