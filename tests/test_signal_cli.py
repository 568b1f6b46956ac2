"""``flask geneva signal`` and what ``flask geneva show`` says about signals (SPEC 6, 11).

The command stores a signal through ``geneva.send_signal`` and commits; every refusal is
one line on stderr, with the database left as it was. ``show`` says what a workflow
waits for, since when and until when, and lists its signals, escaped and bounded.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import utcnow
from tests.helpers import reload
from tests.models import db, geneva
from tests.test_cli import assert_ok, assert_one_line_error, invoke
from tests.uuid_models import uuid_db, uuid_geneva

WORKFLOWS = geneva.Workflow.__table__
EXECUTIONS = geneva.StepExecution.__table__
OUTBOX = geneva.OutboxMessage.__table__
SIGNALS = geneva.WorkflowSignal.__table__

#: A small payload limit, so that "too large" needs no megabyte on a command line.
MAX_PAYLOAD = 200


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"GENEVA_MAX_SIGNAL_PAYLOAD": MAX_PAYLOAD}


class SignalCliFlow(geneva.Workflow):
    """``ask``, then ``decide`` waits three days for ``approved``."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step
    def ask(self) -> None:
        pass

    @step(wait_for="approved", timeout=timedelta(days=3))
    def decide(self) -> None:
        self.data["got"] = self.received_signal and self.received_signal.payload

    @step
    def done(self) -> None:
        pass


class ForeverCliFlow(geneva.Workflow):
    """Waits for ``event`` from the start, without a timeout."""

    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="event")
    def listen(self) -> None:
        pass


def waiting_flow() -> Any:
    """A committed SignalCliFlow whose ``decide`` waits for ``approved``."""
    workflow = SignalCliFlow.create()
    db.session.commit()
    perform_next_step(workflow)
    return reload(workflow)


def forever_flow() -> Any:
    workflow = ForeverCliFlow.create()
    db.session.commit()
    return reload(workflow)


def snapshot() -> tuple[list[Any], ...]:
    """Every geneva row, signals included, as committed."""
    with db.engine.connect() as connection:
        return tuple(
            connection.execute(sa.select(table).order_by(table.c.id)).all()
            for table in (WORKFLOWS, EXECUTIONS, OUTBOX, SIGNALS)
        )


def signal_rows(workflow: Any) -> list[Any]:
    with db.engine.connect() as connection:
        return connection.execute(
            sa.select(SIGNALS).where(SIGNALS.c.workflow_id == workflow.id).order_by(SIGNALS.c.id)
        ).all()


def waiting_execution(workflow: Any) -> Any:
    with db.engine.connect() as connection:
        return connection.execute(
            sa.select(EXECUTIONS).where(
                EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.state == "scheduled"
            )
        ).one()


def outbox_times(workflow: Any) -> list[Any]:
    with db.engine.connect() as connection:
        return list(
            connection.scalars(
                sa.select(OUTBOX.c.available_at).where(OUTBOX.c.workflow_id == workflow.id)
            )
        )


# ---------------------------------------------------------------------- sending


def test_a_signal_is_stored_committed_and_wakes_the_waiting_step(app):
    workflow = waiting_flow()
    deadline = waiting_execution(workflow).scheduled_for
    assert len(outbox_times(workflow)) == 1  # woken at the deadline only

    lines = assert_ok(
        invoke(app, "signal", str(workflow.id), "approved", "--payload", '{"ok": true}')
    )

    (row,) = signal_rows(workflow)
    assert lines == [
        f"signal 'approved' stored for SignalCliFlow #{workflow.id} (signal #{row.id}); "
        f"step decide waits for it and is due now"
    ]
    assert (row.name, row.payload, row.idempotency_key, row.state) == (
        "approved", {"ok": True}, None, "pending",
    )  # fmt: skip
    (due,) = outbox_times(workflow)
    assert due < deadline  # the step is due now, not in three days
    perform_next_step(reload(workflow))
    assert reload(workflow).data["got"] == {"ok": True}


def test_a_signal_no_step_waits_for_yet_stays_pending(app):
    workflow = SignalCliFlow.create()
    db.session.commit()

    lines = assert_ok(invoke(app, "signal", str(workflow.id), "approved"))

    (row,) = signal_rows(workflow)
    assert lines == [
        f"signal 'approved' stored for SignalCliFlow #{workflow.id} (signal #{row.id}); "
        f"pending until a step waits for it"
    ]
    assert row.payload is None and row.state == "pending"


def test_a_paused_workflow_takes_the_signal_after_resume(app):
    workflow = waiting_flow()
    assert_ok(invoke(app, "pause", str(workflow.id)))

    (line,) = assert_ok(invoke(app, "signal", str(workflow.id), "approved", "--key", "k1"))

    paused = "; the workflow is paused: pending until it is resumed and a step takes it"
    assert line.endswith(paused), line
    assert outbox_times(workflow) == []


def test_a_repeated_key_stores_nothing_new(app):
    workflow = waiting_flow()
    assert_ok(invoke(app, "signal", str(workflow.id), "approved", "--key", "order-7"))
    before = snapshot()

    (line,) = assert_ok(
        invoke(app, "signal", str(workflow.id), "approved", "--key", "order-7", "--payload", "1")
    )

    (row,) = signal_rows(workflow)
    assert line == (
        f"signal 'approved' for SignalCliFlow #{workflow.id} was stored before (idempotency "
        f"key 'order-7', signal #{row.id}, pending); nothing new stored"
    )
    assert snapshot() == before
    # The same key under another name is another signal.
    assert_ok(invoke(app, "signal", str(workflow.id), "rejected", "--key", "order-7"))
    assert len(signal_rows(workflow)) == 2


def test_a_repeated_key_is_answered_even_once_the_workflow_ended(app):
    workflow = forever_flow()
    assert_ok(invoke(app, "signal", str(workflow.id), "event", "--key", "k"))
    assert_ok(invoke(app, "cancel", str(workflow.id)))
    before = snapshot()

    (line,) = assert_ok(invoke(app, "signal", str(workflow.id), "event", "--key", "k"))

    assert "was stored before" in line and "nothing new stored" in line
    assert snapshot() == before


def test_the_id_may_have_spaces_around_it(app):
    workflow = forever_flow()
    assert_ok(invoke(app, "signal", f" {workflow.id} ", "event"))
    assert len(signal_rows(workflow)) == 1


# ----------------------------------------------------------------------- refusals

REFUSALS = {
    "unknown id": (["987654", "event"], "Error: no workflow with id 987654"),
    "malformed id": (["abc", "event"], "workflow ids are whole numbers"),
    "negative id": (["-1", "event"], "workflow ids are whole numbers"),
    "not JSON": (
        ["{id}", "event", "--payload", '{"ok": tru}'],
        "Error: --payload is not JSON: Expecting value at line 1 column 8 (character 8)",
    ),
    "not JSON, unquoted text": (["{id}", "event", "--payload", "yes"], "--payload is not JSON"),
    "empty payload": (["{id}", "event", "--payload", ""], "--payload is not JSON"),
    "nested too deeply": (["{id}", "event", "--payload", "[" * 100_000], "nests too deeply"),
    "huge number": (["{id}", "event", "--payload", "9" * 5000], "--payload is not JSON"),
    "NaN": (["{id}", "event", "--payload", "NaN"], "the payload must be JSON-serialisable"),
    "too large": (
        ["{id}", "event", "--payload", json.dumps("x" * MAX_PAYLOAD)],
        f"more than GENEVA_MAX_SIGNAL_PAYLOAD ({MAX_PAYLOAD})",
    ),
    "empty name": (["{id}", ""], "a signal name must be a non-empty string"),
    "long name": (["{id}", "n" * 256], "a signal name must be a non-empty string"),
    "empty key": (["{id}", "event", "--key", ""], "idempotency_key must be None or a non-empty"),
    "long key": (["{id}", "event", "--key", "k" * 256], "idempotency_key must be None"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_signal_is_one_line_and_changes_nothing(app, case):
    workflow = forever_flow()
    args, expected = REFUSALS[case]
    before = snapshot()

    line = assert_one_line_error(
        invoke(app, "signal", *(arg.replace("{id}", str(workflow.id)) for arg in args))
    )

    assert expected in line, line
    assert len(line) < 400, line  # a huge argument is quoted, not echoed whole
    assert snapshot() == before


@pytest.mark.parametrize("ending", ["cancel", "finish"])
def test_an_ended_workflow_refuses_a_new_signal(app, ending):
    workflow = waiting_flow()
    if ending == "cancel":
        assert_ok(invoke(app, "cancel", str(workflow.id)))
        state = "canceled"
    else:
        assert_ok(invoke(app, "signal", str(workflow.id), "approved"))
        perform_next_step(reload(workflow))
        perform_next_step(reload(workflow))
        state = "finished"
    before = snapshot()

    line = assert_one_line_error(invoke(app, "signal", str(workflow.id), "approved"))

    assert line == (
        f"Error: cannot signal SignalCliFlow #{workflow.id}: it is {state}, and a signal "
        f"needs an ongoing workflow"
    )
    assert snapshot() == before


def test_a_missing_name_is_a_usage_error(app):
    workflow = forever_flow()
    line = assert_one_line_error(invoke(app, "signal", str(workflow.id)), exit_code=2)
    assert "Missing argument 'NAME'" in line


def test_hostile_names_keys_and_payloads_do_not_reach_the_terminal(app):
    workflow = forever_flow()
    hostile = "\x1b]0;owned\x07\x1b[2J\rFORGED\nline\u202e"

    result = invoke(
        app, "signal", str(workflow.id), hostile, "--key", hostile, "--payload",
        json.dumps({"note": hostile}),
    )  # fmt: skip
    (line,) = assert_ok(result)
    assert all(ch.isprintable() for ch in result.stdout.rstrip("\n")), repr(result.stdout)
    assert "\\x1b]0;owned\\x07" in line
    result = invoke(app, "signal", str(workflow.id), hostile, "--key", hostile)
    (line,) = assert_ok(result)
    assert "was stored before" in line
    assert all(ch.isprintable() for ch in result.stdout.rstrip("\n"))

    result = invoke(app, "show", str(workflow.id))
    lines = assert_ok(result)
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "\x07" not in result.stdout and "\u202e" not in result.stdout
    assert all(ch.isprintable() for ch in "".join(lines))
    _header, row = section(lines, "signals")
    assert "\\x1b]0;owned\\x07\\x1b[2J\\rFORGED\\nline\\u202e" in row


# --------------------------------------------------------------------------- show


def section(lines: list[str], title: str) -> list[str]:
    """The indented lines under ``  title:`` up to the next heading."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {title}:"))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("    ")), len(rest))
    return rest[:end]


def field(lines: list[str], name: str) -> str | None:
    prefix = f"  {name}:"
    found = [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]
    return found[0] if found else None


def test_show_says_what_a_workflow_waits_for_and_until_when(app):
    workflow = waiting_flow()
    execution = waiting_execution(workflow)
    since = execution.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    until = execution.scheduled_for.strftime("%Y-%m-%d %H:%M:%S UTC")

    lines = assert_ok(invoke(app, "show", str(workflow.id)))

    assert field(lines, "waiting") == (
        f"decide waits for 'approved' since {since}, until {until}"
    )
    assert field(lines, "signals") is None  # none sent yet
    rows = section(lines, "timeline")
    assert rows[-1].split()[:3] == ["#2", "decide", "scheduled"]
    assert f"waiting for 'approved' until {until}" in rows[-1]
    assert "[" not in rows[-1]  # not overdue while it waits


def test_show_says_when_a_workflow_waits_without_a_timeout(app):
    workflow = forever_flow()
    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    assert re.fullmatch(
        r"listen waits for 'event' since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, no timeout",
        field(lines, "waiting") or "",
    ), lines
    (row,) = section(lines, "timeline")
    assert "waiting for 'event', no timeout" in row and "[" not in row


def test_show_says_a_paused_workflow_waits_again_after_resume(app):
    workflow = forever_flow()
    assert_ok(invoke(app, "pause", str(workflow.id)))
    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    assert (field(lines, "waiting") or "").endswith(", no timeout (after resume)")
    (row,) = section(lines, "timeline")
    assert row.endswith("[kept: runs after resume]")


def test_show_says_a_paused_workflow_past_its_timeout_times_out_when_resumed(app):
    workflow = waiting_flow()
    assert_ok(invoke(app, "pause", str(workflow.id)))
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.id == waiting_execution(workflow).id)
        .values(scheduled_for=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()
    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    assert (field(lines, "waiting") or "").endswith(" (passed: it times out when resumed)")


def test_show_calls_an_ended_workflows_pending_signals_kept(app):
    workflow = waiting_flow()
    assert_ok(invoke(app, "signal", str(workflow.id), "late"))  # no step waits for it
    assert_ok(invoke(app, "cancel", str(workflow.id)))
    lines = assert_ok(invoke(app, "show", str(workflow.id)))
    assert field(lines, "signals") == "1 kept (workflow ended)"


def test_show_calls_a_waiting_step_overdue_only_past_its_timeout(app):
    workflow = waiting_flow()
    execution = waiting_execution(workflow)
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.id == execution.id)
        .values(scheduled_for=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()

    rows = section(assert_ok(invoke(app, "show", str(workflow.id))), "timeline")

    assert re.search(r"  \[overdue by 0:05:[0-5]\d\]$", rows[-1]), rows[-1]


def test_show_lists_the_signals_pending_held_and_consumed(app):
    workflow = waiting_flow()
    assert_ok(invoke(app, "signal", str(workflow.id), "approved", "--payload", '{"ok": 1}',
                     "--key", "first"))  # fmt: skip
    perform_next_step(reload(workflow))  # decide consumes it
    assert_ok(invoke(app, "signal", str(workflow.id), "late", "--payload", json.dumps("y" * 150)))
    consumer = db.session.scalar(
        sa.select(EXECUTIONS.c.id).where(
            EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.step_name == "decide"
        )
    )
    first, second = signal_rows(workflow)

    lines = assert_ok(invoke(app, "show", str(workflow.id)))

    assert field(lines, "waiting") is None  # done is due; nothing waits
    assert field(lines, "signals") == "1 pending"
    header, newest, oldest = section(lines, "signals")
    assert header.split() == [
        "ID", "NAME", "STATE", "CREATED", "CONSUMED", "KEY", "EXECUTION", "PAYLOAD",
    ]  # fmt: skip
    assert newest.split()[:3] == [f"#{second.id}", "'late'", "pending"]
    assert newest.split()[-1].startswith('"yyy') and newest.endswith("…")
    assert len(newest.split()[-1]) == 60  # the payload's excerpt is bounded
    assert oldest.split()[:3] == [f"#{first.id}", "'approved'", "consumed"]
    assert "'first'" in oldest and f"#{consumer}" in oldest and '{"ok": 1}' in oldest
    assert oldest.count(" UTC") == 2  # created and consumed
    # The timeline keeps the record of what decide waited for.
    decide = [row for row in section(lines, "timeline") if " decide " in row]
    assert "completed/success" in decide[0] and "waited for 'approved'" in decide[0]


# ------------------------------------------------------------------------ UUID keys


class UuidSignalFlow(uuid_geneva.Workflow):
    allow_multiple = True
    may_proceed_without_hero = True

    @step(wait_for="go")
    def listen(self) -> None:
        pass


def test_signal_and_show_take_uuid_ids_and_the_ui_shows_them(uuid_app):
    workflow = UuidSignalFlow.create()
    uuid_db.session.commit()
    workflow_id = str(workflow.id)

    (line,) = assert_ok(invoke(uuid_app, "signal", workflow_id.upper(), "go", "--key", "k"))
    assert line.startswith(f"signal 'go' stored for UuidSignalFlow #{workflow_id} (signal #")
    lines = assert_ok(invoke(uuid_app, "show", workflow_id))
    assert field(lines, "waiting") is not None
    _header, row = section(lines, "signals")
    assert row.split()[1:3] == ["'go'", "pending"]
    assert "workflow ids are UUIDs" in assert_one_line_error(invoke(uuid_app, "signal", "1", "go"))

    data = uuid_app.test_client().get(f"/geneva/workflows/{workflow_id}?format=json").get_json()
    (signal,) = data["signals"]
    assert uuid.UUID(signal["id"]) and signal["idempotency_key"] == "k"
    assert data["workflow"]["waiting"]["execution_id"] == str(
        uuid_db.session.scalar(
            sa.select(uuid_geneva.StepExecution.id).where(
                uuid_geneva.StepExecution.workflow_id == workflow.id
            )
        )
    )
