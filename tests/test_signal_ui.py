"""The status UI and its JSON twin for workflows that wait for signals (SPEC 8, 11).

The workflow page says what a workflow waits for, since when and until when (or that it
has no timeout), and lists its signals; the lists, the hero page and the overview handle
a step waiting without a due time, and none calls a waiting step overdue until a signal
woke it or its timeout ended, past the grace.
"""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.queries.signals import PAYLOAD_EXCERPT_LENGTH
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import as_utc, utcnow
from flask_geneva.ui.present import absolute_time
from tests.helpers import reload
from tests.models import db, geneva

EXECUTIONS = geneva.StepExecution.__table__
OUTBOX = geneva.OutboxMessage.__table__
SIGNALS = geneva.WorkflowSignal.__table__

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"


class SignalUiFlow(geneva.Workflow):
    """``ask``, then ``decide`` waits three days for ``approved``."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def ask(self) -> None:
        pass

    @step(wait_for="approved", timeout=timedelta(days=3), on_timeout="skip")
    def decide(self) -> None:
        pass

    @step
    def done(self) -> None:
        pass


class ForeverUiFlow(geneva.Workflow):
    """Waits for ``event`` from the start, without a timeout; fails when told to."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="event", on_exception="pause")
    def listen(self) -> None:
        if (self.received_signal.payload or {}).get("fail"):
            raise RuntimeError("the listener failed")


class PlainUiFlow(geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def only(self) -> None:
        pass


def waiting_flow(**data: Any) -> Any:
    workflow = SignalUiFlow.create(data=data)
    db.session.commit()
    perform_next_step(workflow)
    return reload(workflow)


def forever_flow(user: Any = None) -> Any:
    workflow = ForeverUiFlow.create(hero=user) if user else ForeverUiFlow.create()
    db.session.commit()
    return reload(workflow)


def send(workflow: Any, name: str, payload: Any = None, key: str | None = None) -> Any:
    signal = geneva.send_signal(workflow.id, name, payload=payload, idempotency_key=key)
    db.session.commit()
    return signal


def waiting_execution(workflow: Any) -> Any:
    return db.session.execute(
        sa.select(EXECUTIONS).where(
            EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.state == "scheduled"
        )
    ).one()


def move_back(workflow: Any, *, deadline: timedelta | None = None, outbox: timedelta) -> None:
    """Move the waiting execution's deadline and its outbox row into the past."""
    execution = waiting_execution(workflow)
    if deadline is not None:
        db.session.execute(
            sa.update(EXECUTIONS)
            .where(EXECUTIONS.c.id == execution.id)
            .values(scheduled_for=utcnow() - deadline)
        )
    db.session.execute(
        sa.update(OUTBOX)
        .where(OUTBOX.c.execution_id == execution.id)
        .values(available_at=utcnow() - outbox)
    )
    db.session.commit()


def page(app: Any, url: str) -> str:
    response = app.test_client().get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return str(response.get_data(as_text=True))


def twin(app: Any, url: str) -> Any:
    response = app.test_client().get(url, query_string={"format": "json"})
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return response.get_json()


def text_of(markup: str) -> str:
    """The visible text of a piece of HTML, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def callout(markup: str) -> str:
    found = re.search(r'<section class="callout[^"]*"[^>]*>(.*?)</section>', markup, re.S)
    assert found, markup
    return text_of(found.group(1))


def signals_panel(markup: str) -> str | None:
    found = re.search(r'<section class="panel signals"[^>]*>(.*?)</section>', markup, re.S)
    return found.group(1) if found else None


# --------------------------------------------------------------- the workflow page


def test_the_page_says_what_a_workflow_waits_for_and_until_when(app):
    workflow = waiting_flow()
    execution = waiting_execution(workflow)
    until = as_utc(execution.scheduled_for)

    markup = page(app, f"/geneva/workflows/{workflow.id}")

    said = callout(markup)
    assert said.startswith("Waiting for a signal decide waits for approved since"), said
    assert f"until in 2 d {absolute_time(until)}" in said
    assert "Overdue" not in said and "overdue" not in markup
    assert f"flask geneva signal {workflow.id} approved" in said
    assert 'class="callout callout-info"' in markup
    step_item = re.search(r'<li class="step[^"]*" id="step-decide">(.*?)</li>', markup, re.S)
    assert step_item, markup
    shown = text_of(step_item.group(1))
    assert "wait_for approved" in shown and "timeout 3 d, on_timeout skip" in shown
    assert "waits for approved until" in shown
    assert "Signals none" in text_of(signals_panel(markup) or "")


def test_the_json_twin_carries_waiting_for_and_the_waiting_object(app):
    workflow = waiting_flow()
    execution = waiting_execution(workflow)

    data = twin(app, f"/geneva/workflows/{workflow.id}")

    waiting = {
        "signal": "approved",
        "since": as_utc(execution.created_at).isoformat(),
        "until": as_utc(execution.scheduled_for).isoformat(),
        "execution_id": execution.id,
    }
    assert data["workflow"]["waiting"] == waiting
    assert data["due"]["kind"] == "waiting"
    assert data["due"]["waiting"] == waiting
    assert data["due"]["overdue"] is False and data["due"]["stuck"] is False
    assert data["due"]["at"] == as_utc(execution.scheduled_for).isoformat()  # its timeout
    ask, decide, done = data["steps"]
    assert ask["executions"][0]["waiting_for"] is None
    assert decide["executions"][0]["waiting_for"] == "approved"
    assert decide["executions"][0]["state"] == "scheduled"
    assert (decide["wait_for"], decide["timeout_seconds"], decide["on_timeout"]) == (
        "approved", 3 * 86400.0, "skip",
    )  # fmt: skip
    assert (done["wait_for"], done["timeout_seconds"], done["on_timeout"]) == (None, None, None)
    assert data["signals"] == [] and data["signals_truncated"] is False


def test_a_step_waiting_without_a_timeout(app):
    workflow = forever_flow()
    execution = waiting_execution(workflow)
    assert execution.scheduled_for is None

    said = callout(page(app, f"/geneva/workflows/{workflow.id}"))
    data = twin(app, f"/geneva/workflows/{workflow.id}")

    assert "listen waits for event since" in said and "with no timeout" in said
    assert "never overdue while it waits" in said
    assert data["workflow"]["waiting"]["until"] is None
    assert data["due"] | {"waiting": None} == {
        "kind": "waiting", "step_name": "listen", "execution_id": execution.id, "at": None,
        "overdue": False, "stuck": False, "waiting": None, "resume_waits_for": None,
        "pending_signals": 0, "held_signal_id": None,
    }  # fmt: skip
    (listen,) = data["steps"]
    assert listen["executions"][0]["scheduled_for"] is None
    assert listen["timeout_seconds"] is None


def test_a_signal_that_woke_the_step_is_due_now_and_late_only_past_the_grace(app):
    workflow = forever_flow()
    signal = send(workflow, "event", {"n": 1})

    data = twin(app, f"/geneva/workflows/{workflow.id}")
    assert data["due"]["kind"] == "waiting" and data["due"]["overdue"] is False
    assert data["due"]["at"] is not None  # its message is due now
    said = callout(page(app, f"/geneva/workflows/{workflow.id}"))
    assert said.startswith("Signal arrived"), said
    assert "a worker runs the step now" in said
    (shown,) = data["signals"]
    assert shown["status"] == "pending" and shown["id"] == signal.id

    move_back(workflow, outbox=timedelta(minutes=5))  # no worker took it
    data = twin(app, f"/geneva/workflows/{workflow.id}")
    assert data["due"]["overdue"] is True
    assert data["due"]["stuck"] is False  # housekeeping never recovers a wait without timeout
    said = callout(page(app, f"/geneva/workflows/{workflow.id}"))
    assert said.startswith("Overdue") and "A signal woke it" in said


def test_a_timeout_that_ended_is_overdue_past_the_grace_and_stuck_past_the_threshold(app):
    workflow = waiting_flow()
    move_back(workflow, deadline=timedelta(seconds=10), outbox=timedelta(seconds=10))
    assert twin(app, f"/geneva/workflows/{workflow.id}")["due"]["overdue"] is False

    move_back(workflow, deadline=timedelta(minutes=5), outbox=timedelta(minutes=5))
    due = twin(app, f"/geneva/workflows/{workflow.id}")["due"]
    assert (due["overdue"], due["stuck"]) == (True, False)
    assert "Its timeout ended" in callout(page(app, f"/geneva/workflows/{workflow.id}"))

    move_back(workflow, deadline=timedelta(hours=1), outbox=timedelta(hours=1))
    due = twin(app, f"/geneva/workflows/{workflow.id}")["due"]
    assert (due["overdue"], due["stuck"]) == (True, True)
    assert "housekeeping will recover it" in callout(page(app, f"/geneva/workflows/{workflow.id}"))


def test_a_paused_workflow_waits_again_after_resume(app):
    workflow = forever_flow()
    workflow.pause()
    db.session.commit()

    said = callout(page(app, f"/geneva/workflows/{workflow.id}"))
    data = twin(app, f"/geneva/workflows/{workflow.id}")

    assert "After resume, listen waits for event again" in said and "with no timeout" in said
    assert data["due"]["kind"] == "paused"
    assert data["workflow"]["waiting"]["signal"] == "event"


def test_the_signals_pending_held_and_consumed(app):
    workflow = waiting_flow()
    consumed = send(workflow, "approved", {"ok": True}, key="req-1")
    perform_next_step(reload(workflow))
    pending = send(workflow, "late", ["x" * 500])
    consumer = db.session.scalar(
        sa.select(EXECUTIONS.c.id).where(
            EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.step_name == "decide"
        )
    )
    held_flow = forever_flow()
    held = send(held_flow, "event", {"fail": True})
    with pytest.raises(RuntimeError):
        perform_next_step(reload(held_flow))  # paused; the signal stays with the step

    data = twin(app, f"/geneva/workflows/{workflow.id}")
    newest, oldest = data["signals"]
    assert newest == {
        "id": pending.id, "name": "late", "state": "pending", "status": "pending",
        "idempotency_key": None, "created_at": as_utc(pending.created_at).isoformat(),
        "consumed_at": None, "execution_id": None, "payload": ["x" * 500],
        "payload_excerpt": '["' + "x" * (PAYLOAD_EXCERPT_LENGTH - 3) + "…",
    }  # fmt: skip
    assert (oldest["id"], oldest["status"]) == (consumed.id, "consumed")
    assert oldest["state"] == "consumed"
    assert oldest["execution_id"] == consumer and oldest["consumed_at"] is not None
    assert oldest["payload"] == {"ok": True} and oldest["idempotency_key"] == "req-1"
    assert data["workflow"]["waiting"] is None  # done is due; nothing waits
    (held_json,) = twin(app, f"/geneva/workflows/{held_flow.id}")["signals"]
    assert (held_json["id"], held_json["state"]) == (held.id, "pending")
    assert held_json["status"] == "held"

    panel = signals_panel(page(app, f"/geneva/workflows/{workflow.id}"))
    assert panel is not None
    assert "1 pending of 2" in text_of(panel)
    rows = re.findall(r'<tr class="signal-(\w+)">(.*?)</tr>', panel, re.S)
    assert [status for status, _ in rows] == ["pending", "consumed"]
    late, approved = (text_of(row) for _, row in rows)
    assert late.startswith(f"#{pending.id} late pending")
    assert len(max(late.split(), key=len)) <= PAYLOAD_EXCERPT_LENGTH  # an excerpt only
    assert approved.startswith(f"#{consumed.id} approved consumed req-1")
    assert f"#{consumer}" in approved and '{"ok": true}' in approved
    assert approved.count("UTC") == 2  # created and consumed
    held_panel = signals_panel(page(app, f"/geneva/workflows/{held_flow.id}")) or ""
    assert '<tr class="signal-held">' in held_panel


def test_a_workflow_without_signal_steps_has_no_signals_panel(app):
    workflow = PlainUiFlow.create()
    db.session.commit()
    assert signals_panel(page(app, f"/geneva/workflows/{workflow.id}")) is None
    assert twin(app, f"/geneva/workflows/{workflow.id}")["signals"] == []


def test_hostile_signal_names_keys_and_payloads_are_escaped(app):
    workflow = forever_flow()
    send(workflow, HOSTILE, {"html": HOSTILE, "pad": "y" * 5000}, key=HOSTILE)
    send(workflow, "event", HOSTILE)

    markup = page(app, f"/geneva/workflows/{workflow.id}")

    assert "<script>alert" not in markup and "<img src=x" not in markup
    assert html.escape(HOSTILE, quote=False) in markup or "&lt;script&gt;alert(1)" in markup
    assert "y" * (PAYLOAD_EXCERPT_LENGTH + 1) not in markup  # the payload is cut
    data = twin(app, f"/geneva/workflows/{workflow.id}")
    names = [signal["name"] for signal in data["signals"]]
    assert names == ["event", HOSTILE]  # the JSON twin carries the values as they are
    assert data["signals"][1]["idempotency_key"] == HOSTILE
    json.dumps(data)  # and stays JSON


# ------------------------------------------------- lists, hero page and overview


def test_the_lists_and_the_hero_page_show_waiting_steps(app, user):
    timed = waiting_flow()
    forever = forever_flow(user)
    paused = forever_flow(user)
    paused.pause()
    db.session.commit()

    for url in ("/geneva/workflows", f"/geneva/heroes/User/{user.id}"):
        markup = page(app, url)
        rows = {
            workflow_id: cells[3]
            for workflow_id, cells in (
                (re.search(r"/geneva/workflows/(\d+)", row).group(1),  # type: ignore[union-attr]
                 re.findall(r"<td[^>]*>(.*?)</td>", row, re.S))
                for row in re.findall(r'<tr class="row-\w+">(.*?)</tr>', markup, re.S)
            )
        }  # fmt: skip
        assert "waiting event no timeout" in text_of(rows[str(forever.id)])
        assert "kept, waits for event" in text_of(rows[str(paused.id)])
        if url == "/geneva/workflows":
            shown = text_of(rows[str(timed.id)])
            assert shown.startswith("waiting approved until in 2 d"), shown
        assert "overdue" not in markup

    listed = {w["id"]: w for w in twin(app, "/geneva/workflows")["workflows"]}
    assert listed[forever.id]["waiting"]["signal"] == "event"
    assert listed[forever.id]["waiting"]["until"] is None
    assert listed[timed.id]["waiting"]["until"] is not None
    assert listed[forever.id]["active_execution"]["waiting_for"] == "event"


def test_the_overview_does_not_call_a_waiting_step_overdue(app):
    forever = forever_flow()
    timed = waiting_flow()
    db.session.execute(  # waiting for a long time already
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.workflow_id.in_([forever.id, timed.id]))
        .values(created_at=utcnow() - timedelta(days=30))
    )
    db.session.commit()

    health = twin(app, "/geneva/")["health"]
    assert health["overdue_scheduled"]["executions"] == []
    assert health["overdue_scheduled"]["count"]["count"] == 0
    assert health["ok"] is True
    assert "Overdue scheduled steps" not in page(app, "/geneva/")


def test_the_overview_lists_a_woken_or_timed_out_waiting_step_once_it_is_late(app):
    woken = forever_flow()
    send(woken, "event")
    move_back(woken, outbox=timedelta(minutes=5))
    timed_out = waiting_flow()
    move_back(timed_out, deadline=timedelta(hours=1), outbox=timedelta(hours=1))

    overdue = twin(app, "/geneva/")["health"]["overdue_scheduled"]["executions"]

    by_workflow = {entry["workflow"]["id"]: entry for entry in overdue}
    assert set(by_workflow) == {woken.id, timed_out.id}
    woken_entry = by_workflow[woken.id]
    assert woken_entry["execution"]["scheduled_for"] is None
    assert woken_entry["due_at"] is not None and woken_entry["stuck"] is False
    assert by_workflow[timed_out.id]["stuck"] is True
    markup = page(app, "/geneva/")
    section = re.search(r"Overdue scheduled steps(.*?)</section>", markup, re.S)
    assert section, markup
    rows = re.findall(r"<tr><td>(.*?)</tr>", section.group(1), re.S)
    shown = {text_of(row).split()[1]: text_of(row) for row in rows}
    assert "woken: waits for event" in shown[f"#{woken.id}"]
    assert re.search(r"\b5 min\b", shown[f"#{woken.id}"]) and "stuck" not in shown[f"#{woken.id}"]
    assert "timed out waiting for approved" in shown[f"#{timed_out.id}"]
    assert " stuck " in shown[f"#{timed_out.id}"]
