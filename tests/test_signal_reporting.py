"""What ``show``, the status UI and its JSON say after a step waited for a signal
(SPEC 6, 8, 11): whether a signal or the timeout ended the wait, why a workflow paused,
what resume does, and what ``flask geneva signal`` says it did.

An execution that waited (``waiting_for``) and started without taking a signal timed
out; a paused workflow's step that waits for a signal waits again after resume (or runs
at once when one is pending); a signal still pending on an ended workflow is *kept*, not
held. The testing helpers' and the name check's error messages are usable as written.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva import InvalidSignalError, SignalMatcher, WaitingForSignalError, step
from flask_geneva.testing import perform_next_step, perform_step
from tests.helpers import reload
from tests.models import db, geneva
from tests.test_cli import assert_ok, invoke
from tests.test_signal_cli import field, section
from tests.test_signal_ui import callout as callout_markup
from tests.test_signal_ui import page, signals_panel, twin
from tests.test_signal_ui import text_of as markup_text

EXECUTIONS = geneva.StepExecution.__table__
#: How many times TimeoutRunFlow's ``decide`` failed for a "fail once" signal.
FAILURES: list[int] = []


def tidy(text: str) -> str:
    """Visible text without the spaces that tags leave inside brackets."""
    return re.sub(r"\(\s+", "(", re.sub(r"\s+([).,;])", r"\1", text))


def text_of(markup: str) -> str:
    return tidy(markup_text(markup))


def callout(markup: str) -> str:
    return tidy(callout_markup(markup))


class TimeoutPauseFlow(geneva.Workflow):
    """``ask``, then ``decide`` waits three days for ``approved``, and pauses after."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def ask(self) -> None:
        pass

    @step(wait_for="approved", timeout=timedelta(days=3), on_timeout="pause")
    def decide(self) -> None:
        self.data["got"] = self.received_signal.payload


class TimeoutRunFlow(geneva.Workflow):
    """``decide`` waits a day for ``approved``, then runs anyway."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="approved", timeout=timedelta(days=1))
    def decide(self) -> None:
        signal = self.received_signal
        self.data["got"] = None if signal is None else signal.payload
        if signal is not None and signal.payload == "fail once" and not FAILURES:
            FAILURES.append(1)
            raise RuntimeError("fails once")
        if signal is not None and signal.payload == "cancel":
            self.cancel()

    @step
    def done(self) -> None:
        pass


def paid_enough(workflow: Any, signal: Any) -> bool:
    return bool((signal.payload or {}).get("amount", 0) >= 10)


class MatcherFlow(geneva.Workflow):
    """Waits for a ``paid`` signal of at least 10, or for ``note``; skips when told to."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for=SignalMatcher("paid", paid_enough), skip_if=lambda wf: wf.data.get("skip"))
    def confirm(self) -> None:
        pass

    @step(wait_for="note", on_exception="reattempt")
    def annotate(self) -> None:
        pass


def created(cls: Any, **data: Any) -> Any:
    workflow = cls.create(data=data)
    db.session.commit()
    return reload(workflow)


def timed_out_and_paused() -> Any:
    """A TimeoutPauseFlow whose ``decide`` timed out, which paused it."""
    workflow = created(TimeoutPauseFlow)
    perform_next_step(workflow)
    perform_next_step(workflow, timeout_elapsed=True)
    assert workflow.state == "paused"
    return reload(workflow)


def step_executions(data: Any, name: str) -> list[Any]:
    return next(s for s in data["steps"] if s["name"] == name)["executions"]


def url(workflow: Any) -> str:
    return f"/geneva/workflows/{workflow.id}"


# ------------------------------------------------------------------ timed out


def test_a_timeout_that_paused_the_workflow_says_so_in_show(app):
    workflow = timed_out_and_paused()

    lines = assert_ok(invoke(app, "show", str(workflow.id)))

    assert field(lines, "paused") == "decide timed out waiting for 'approved' (on_timeout='pause')"
    assert field(lines, "waiting") == (
        "decide waits again for 'approved' after resume (a fresh timeout of 3 d)"
    )
    decide = [row for row in section(lines, "timeline") if " decide " in row]
    assert "canceled/canceled" in decide[0] and "timed out waiting for 'approved'" in decide[0]


def test_a_timeout_that_paused_the_workflow_says_so_in_the_ui_and_json(app):
    workflow = timed_out_and_paused()

    said = callout(page(app, url(workflow)))
    data = twin(app, url(workflow))

    assert "decide timed out waiting for approved (on_timeout='pause')" in said
    assert "Resume: decide waits again for approved, with a fresh timeout of 3 d" in said
    assert "again, now" not in said
    (execution,) = step_executions(data, "decide")
    assert (execution["timed_out"], execution["signal_id"]) == (True, None)
    assert data["workflow"]["paused_by_timeout"] == {
        "execution_id": execution["id"], "step_name": "decide", "waiting_for": "approved",
    }  # fmt: skip
    assert data["due"]["resume_waits_for"] == "approved"
    timeline = page(app, url(workflow))
    assert re.search(r"timed out</span>\s*<small[^>]*>waiting for", timeline)


def test_the_overview_gives_a_timeout_as_the_reason_a_workflow_paused(app):
    workflow = timed_out_and_paused()
    by_hand = created(TimeoutRunFlow)
    by_hand.pause()  # an operator's pause keeps the waiting step
    db.session.commit()

    markup = page(app, "/geneva/")
    paused = twin(app, "/geneva/")["health"]["paused"]

    feed = re.search(r"Paused workflows(.*?)</section>", markup, re.S)
    assert feed, markup
    items = {
        text_of(item).split()[1]: text_of(item)
        for item in re.findall(r"<li>(.*?)</li>", feed.group(1), re.S)
    }
    assert "timed out waiting for approved (on_timeout='pause')" in items[f"#{workflow.id}"]
    assert "called pause()" not in items[f"#{workflow.id}"]
    assert "timed out" not in items[f"#{by_hand.id}"]
    flags = {entry["workflow"]["id"]: entry["timed_out"] for entry in paused}
    assert flags == {workflow.id: True, by_hand.id: False}


def test_resume_after_a_timeout_runs_at_once_when_a_signal_is_pending(app):
    workflow = timed_out_and_paused()
    geneva.send_signal(workflow.id, "approved", payload="yes")
    db.session.commit()

    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    said = callout(page(app, url(workflow)))

    assert field(lines, "waiting") == (
        "decide runs at once (1 pending 'approved' signal) after resume"
    )
    assert "Resume: decide runs at once with the pending approved signal" in said
    assert twin(app, url(workflow))["due"]["pending_signals"] == 1
    workflow.resume()
    db.session.commit()
    perform_next_step(reload(workflow))  # it does run at once, as said
    assert reload(workflow).data == {"got": "yes"}


def test_a_step_that_ran_after_its_timeout_is_told_from_one_that_got_a_signal(app):
    timed = created(TimeoutRunFlow)
    perform_next_step(timed, timeout_elapsed=True)  # runs with no signal
    signalled = created(TimeoutRunFlow)
    sent = geneva.send_signal(signalled.id, "approved", payload="ok")
    db.session.commit()
    perform_next_step(reload(signalled))

    timed_rows = section(assert_ok(invoke(app, "show", str(timed.id))), "timeline")
    signalled_rows = section(assert_ok(invoke(app, "show", str(signalled.id))), "timeline")
    timed_json = step_executions(twin(app, url(timed)), "decide")
    signalled_json = step_executions(twin(app, url(signalled)), "decide")

    assert "completed/success" in timed_rows[0]
    assert "timed out waiting for 'approved'" in timed_rows[0]
    assert "completed/success" in signalled_rows[0]
    assert f"waited for 'approved', ran with signal #{sent.id}" in signalled_rows[0]
    assert "timed out" not in signalled_rows[0]
    assert [(e["timed_out"], e["signal_id"]) for e in timed_json] == [(True, None)]
    assert [(e["timed_out"], e["signal_id"]) for e in signalled_json] == [(False, sent.id)]
    assert "timed out" in page(app, url(timed))
    signalled_page = page(app, url(signalled))
    assert "timed out" not in signalled_page
    assert f"ran with signal <span class=\"mono\">#{sent.id}</span>" in signalled_page


def test_an_attempt_whose_retry_ran_with_its_signal_did_not_time_out(app):
    FAILURES.clear()
    workflow = created(TimeoutRunFlow)
    sent = geneva.send_signal(workflow.id, "approved", payload="fail once")
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(reload(workflow))  # paused (the default policy); signal held
    workflow = reload(workflow)
    workflow.resume()
    db.session.commit()
    perform_next_step(reload(workflow))  # runs again with the held signal, consumes it

    rows = [r for r in section(assert_ok(invoke(app, "show", str(workflow.id))), "timeline")
            if " decide " in r]  # fmt: skip
    executions = step_executions(twin(app, url(workflow)), "decide")

    assert len(rows) == 2 and not any("timed out" in row for row in rows)
    assert f"waited for 'approved', ran with signal #{sent.id}" in rows[0]
    assert f"ran with signal #{sent.id}" in rows[1]
    assert [(e["timed_out"], e["signal_id"]) for e in executions] == [
        (False, sent.id), (False, sent.id),
    ]  # fmt: skip


def test_operator_ends_and_preconditions_are_not_timeouts(app):
    canceled = created(TimeoutRunFlow)
    canceled.cancel()  # while it waits: it never started
    db.session.commit()
    skipped = created(MatcherFlow, skip=True)
    geneva.send_signal(skipped.id, "paid", payload={"amount": 20})
    db.session.commit()
    perform_next_step(reload(skipped))  # the signal woke it; skip_if skipped it

    for workflow, name in ((canceled, "decide"), (skipped, "confirm")):
        (execution,) = step_executions(twin(app, url(workflow)), name)
        assert (execution["timed_out"], execution["signal_id"]) == (False, None)
        rows = section(assert_ok(invoke(app, "show", str(workflow.id))), "timeline")
        assert "timed out" not in rows[0] and "waited for" in rows[0]


# ------------------------------------------------- a paused workflow's kept waiting step


def test_a_kept_waiting_step_with_a_pending_signal_runs_at_once_after_resume(app):
    workflow = created(TimeoutRunFlow)
    workflow.pause()
    db.session.commit()
    geneva.send_signal(workflow.id, "approved", payload="ok")
    db.session.commit()

    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    said = callout(page(app, url(workflow)))

    assert field(lines, "waiting") == (
        "decide runs at once (1 pending 'approved' signal) after resume"
    )
    assert "After resume, decide runs at once with the pending approved signal" in said
    assert "waits for approved again" not in said


def test_a_kept_step_with_a_predicate_is_woken_to_check_a_pending_signal(app):
    workflow = created(MatcherFlow)
    workflow.pause()
    db.session.commit()
    geneva.send_signal(workflow.id, "paid", payload={"amount": 1})
    db.session.commit()

    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    said = callout(page(app, url(workflow)))

    assert field(lines, "waiting") == (
        "confirm is woken at once to check 1 pending 'paid' signal after resume"
    )
    assert "After resume, confirm is woken at once to check the pending paid signal" in said


def test_resume_of_a_step_that_holds_a_signal_runs_it_with_that_signal(app):
    FAILURES.clear()
    workflow = created(TimeoutRunFlow)
    sent = geneva.send_signal(workflow.id, "approved", payload="fail once")
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(reload(workflow))  # paused, the signal held

    said = callout(page(app, url(workflow)))
    lines = assert_ok(invoke(app, "show", str(workflow.id)))

    assert f"Resume runs decide again, now, with the signal it holds (#{sent.id})" in said
    assert "waits again" not in said
    assert field(lines, "waiting") is None
    assert twin(app, url(workflow))["due"]["held_signal_id"] == sent.id


# ------------------------------------------------------- signals of ended workflows


def test_a_signal_held_by_a_step_that_canceled_is_kept_not_held(app):
    workflow = created(TimeoutRunFlow)
    sent = geneva.send_signal(workflow.id, "approved", payload="cancel")
    db.session.commit()
    perform_next_step(reload(workflow))
    assert reload(workflow).state == "canceled"

    data = twin(app, url(workflow))
    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    panel = signals_panel(page(app, url(workflow))) or ""

    (signal,) = data["signals"]
    assert (signal["state"], signal["status"]) == ("pending", "kept")
    assert signal["execution_id"] is not None
    (_, row) = section(lines, "signals")
    assert row.split()[:2] == [f"#{sent.id}", "'approved'"]
    assert "kept (workflow ended)" in row and " held " not in row
    assert '<tr class="signal-kept">' in panel and "kept (workflow ended)" in text_of(panel)


# ------------------------------------------------------------------ flask geneva signal


def test_a_signal_no_step_waits_for_is_stored_and_said_to_be_unwaited(app, caplog):
    workflow = created(MatcherFlow)

    with caplog.at_level("WARNING", logger="flask_geneva"):
        (line,) = assert_ok(invoke(app, "signal", str(workflow.id), "payed"))

    # Said once, in the command's own line: not also as a log warning (on stderr).
    assert "waits for it" not in caplog.text, caplog.text

    assert line.endswith(
        "but no step of MatcherFlow waits for 'payed' (its steps wait for: 'paid', 'note')"
    ), line
    assert "pending until" not in line
    count = db.session.scalar(
        sa.select(sa.func.count()).select_from(geneva.WorkflowSignal.__table__)
        .where(geneva.WorkflowSignal.__table__.c.workflow_id == workflow.id)
    )  # fmt: skip
    assert count == 1  # stored all the same


def test_a_signal_for_a_step_with_a_predicate_wakes_it_to_check(app):
    workflow = created(MatcherFlow)

    (line,) = assert_ok(invoke(app, "signal", str(workflow.id), "paid",
                               "--payload", '{"amount": 1}'))  # fmt: skip

    assert line.endswith("; step confirm is woken to check it"), line
    assert "due now" not in line


def test_a_signal_for_a_later_step_is_pending_until_it_waits(app):
    workflow = created(MatcherFlow)
    (line,) = assert_ok(invoke(app, "signal", str(workflow.id), "note"))
    assert line.endswith("; pending until a step waits for it"), line


# ------------------------------------------------------------------- error messages


def test_perform_step_names_the_step_in_the_call_it_suggests(app):
    workflow = created(TimeoutPauseFlow)
    with pytest.raises(WaitingForSignalError) as raised:
        perform_step(workflow, "decide")
    assert "perform_step(wf, 'decide', timeout_elapsed=True)" in str(raised.value)
    perform_step(reload(workflow), "decide", timeout_elapsed=True)  # the call works
    assert reload(workflow).state == "paused"
    other = created(TimeoutRunFlow)
    with pytest.raises(WaitingForSignalError) as raised:
        perform_next_step(other)
    assert "perform_next_step(wf, timeout_elapsed=True)" in str(raised.value)


def test_a_name_that_is_too_long_is_shortened_in_the_error(app):
    workflow = created(TimeoutRunFlow)
    with pytest.raises(InvalidSignalError) as raised:
        workflow.signal("n" * 300)
    message = str(raised.value)
    assert "(300 characters)" in message and "n" * 100 not in message
    db.session.rollback()
