"""The ``flask geneva`` commands, through Flask's CLI runner and as a real ``flask`` process.

Each command exits 0 on success; an unknown id, a malformed argument or a state that does
not allow the action exits non-zero with exactly one line on stderr, and leaves every
geneva row as it was.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import utcnow
from tests.helpers import history, outbox_rows, reload
from tests.models import User, db, geneva
from tests.uuid_models import Customer, uuid_db, uuid_geneva

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = geneva.Workflow.__table__
EXECUTIONS = geneva.StepExecution.__table__
OUTBOX = geneva.OutboxMessage.__table__


class CliWorkflow(geneva.Workflow):
    """``first`` fails when the data says so; ``second`` waits a day."""

    allow_multiple = True

    @step
    def first(self) -> None:
        if self.data.get("fail"):
            raise RuntimeError(self.data.get("message", "first failed"))

    @step(wait=timedelta(days=1))
    def second(self) -> None:
        pass


class OtherCliWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def only(self) -> None:
        pass


# ----------------------------------------------------------------------------- helpers


def invoke(app: Flask, *args: str) -> Result:
    """``flask geneva ARGS`` with its own app context (so its own session), like a process."""
    runner = app.test_cli_runner()
    with app.app_context():
        return runner.invoke(args=["geneva", *args])


def assert_ok(result: Result) -> list[str]:
    """The command succeeded; returns its stdout lines."""
    assert result.exception is None, result.exc_info
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout.splitlines()


def assert_one_line_error(result: Result, exit_code: int = 1) -> str:
    """The command failed cleanly: the exit code, one ``Error:`` line on stderr, nothing on
    stdout, and no unhandled exception (the runner would have caught it). Returns the line."""
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert all(ch.isprintable() for ch in lines[0]), repr(lines[0])
    return lines[0]


def snapshot() -> tuple[list[Any], list[Any], list[Any]]:
    """Every geneva row, read on a connection of its own (what is committed)."""
    with db.engine.connect() as connection:
        return (
            connection.execute(sa.select(WORKFLOWS).order_by(WORKFLOWS.c.id)).all(),
            connection.execute(sa.select(EXECUTIONS).order_by(EXECUTIONS.c.id)).all(),
            connection.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id)).all(),
        )


def make_hero(email: str = "cli@example.com") -> Any:
    hero = User(email=email)
    db.session.add(hero)
    db.session.commit()
    return hero


def in_state(state: str, user: Any, cls: Any = CliWorkflow, **data: Any) -> Any:
    """A committed workflow in ``state``.

    ``paused`` is paused by an operator (its scheduled execution is kept); ``failed`` is
    paused by a failed step (nothing scheduled); ``performing`` has its step in progress.
    """
    workflow = cls.create(hero=user, data={**data, "fail": state == "failed"})
    db.session.commit()
    if state == "paused":
        workflow.pause()
    elif state == "canceled":
        workflow.cancel()
    elif state == "finished":
        perform_next_step(workflow)
        perform_next_step(workflow)
    elif state == "failed":
        with pytest.raises(RuntimeError):
            perform_next_step(workflow)
    elif state == "performing":
        set_in_progress(workflow, started_ago=timedelta(seconds=1))
    db.session.commit()
    workflow = reload(workflow)
    assert workflow.state == ("paused" if state == "failed" else state)
    return workflow


def scheduled_id(workflow: Any) -> Any:
    return db.session.scalar(
        sa.select(EXECUTIONS.c.id).where(
            EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.state == "scheduled"
        )
    )


def set_in_progress(workflow: Any, started_ago: timedelta) -> None:
    """The scheduled execution claimed by a worker ``started_ago``: the step is running."""
    execution_id = scheduled_id(workflow)
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.id == execution_id)
        .values(state="in_progress", started_at=utcnow() - started_ago)
    )
    db.session.execute(sa.delete(OUTBOX).where(OUTBOX.c.execution_id == execution_id))
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow.id)
        .values(state="performing", current_step_name="first")
    )
    db.session.commit()


def set_due(workflow: Any, ago: timedelta) -> None:
    """Move the scheduled execution's due time ``ago`` into the past."""
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.id == scheduled_id(workflow))
        .values(scheduled_for=utcnow() - ago)
    )
    db.session.commit()


def forget_class(workflow: Any, name: str = "RetiredWorkflow") -> Any:
    """Make the workflow's row name a class the code no longer has; returns its id."""
    workflow_id = workflow.id
    db.session.execute(
        sa.update(WORKFLOWS).where(WORKFLOWS.c.id == workflow_id).values(workflow_class=name)
    )
    db.session.commit()
    db.session.expunge_all()
    return workflow_id


def queued_execution_ids(app: Flask) -> list[Any]:
    state = app.extensions["geneva"]
    queue = state.broker.queues[state.config.default_queue]
    return [dramatiq.Message.decode(data).args[0] for data in list(queue.queue)]


# ---------------------------------------------------------------- operator commands

ACTIONS = ("resume", "cancel", "pause", "skip")
STATES = ("ready", "paused", "failed", "performing", "finished", "canceled")
PAST = {
    "resume": "resumed",
    "cancel": "canceled",
    "pause": "paused",
    "skip": "skipped the pending step of",
}
#: (state, action) → (workflow state, executions) after the command.
ALLOWED: dict[tuple[str, str], tuple[str, list[tuple[str, str, str | None]]]] = {
    ("ready", "pause"): ("paused", [("first", "scheduled", None)]),
    ("ready", "cancel"): ("canceled", [("first", "canceled", "canceled")]),
    ("ready", "skip"): ("ready", [("first", "skipped", "skipped"), ("second", "scheduled", None)]),
    ("paused", "resume"): ("ready", [("first", "scheduled", None)]),
    ("paused", "cancel"): ("canceled", [("first", "canceled", "canceled")]),
    ("paused", "skip"): (
        "ready",
        [("first", "skipped", "skipped"), ("second", "scheduled", None)],
    ),
    ("failed", "resume"): ("ready", [("first", "failed", "failed"), ("first", "scheduled", None)]),
    ("failed", "cancel"): (
        "canceled", [("first", "failed", "failed"), ("first", "canceled", "canceled")]
    ),
    ("failed", "skip"): (
        "ready",
        [
            ("first", "failed", "failed"),
            ("first", "skipped", "skipped"),
            ("second", "scheduled", None),
        ],
    ),
}


@pytest.mark.parametrize(("state", "action"), list(ALLOWED), ids="-".join)
def test_an_action_the_state_allows_succeeds_and_commits(app, user, state, action):
    workflow = in_state(state, user)
    expected_state, expected_history = ALLOWED[(state, action)]

    lines = assert_ok(invoke(app, action, str(workflow.id)))

    workflow = reload(workflow)
    next_step = f", next step {workflow.next_step_name}" if workflow.next_step_name else ""
    assert lines == [f"{PAST[action]} CliWorkflow #{workflow.id}: now {expected_state}{next_step}"]
    assert workflow.state == expected_state
    assert history(workflow) == expected_history
    # Exactly the scheduled execution of a ready workflow waits in the outbox.
    waiting = [row.execution_id for row in outbox_rows(workflow)]
    assert waiting == ([scheduled_id(workflow)] if expected_state == "ready" else [])


@pytest.mark.parametrize(
    ("state", "action"),
    [(s, a) for s in STATES for a in ACTIONS if (s, a) not in ALLOWED],
    ids="-".join,
)
def test_an_action_the_state_refuses_fails_in_one_line_and_changes_nothing(
    app, user, state, action
):
    workflow = in_state(state, user)
    before = snapshot()

    line = assert_one_line_error(invoke(app, action, str(workflow.id)))

    shown_state = "paused" if state == "failed" else state
    assert line.startswith(
        f"Error: cannot {action} CliWorkflow #{workflow.id}: it is {shown_state}"
    ), line
    assert snapshot() == before


@pytest.mark.parametrize("command", [*ACTIONS, "show"])
def test_an_unknown_id_fails_in_one_line_and_changes_nothing(app, user, command):
    in_state("ready", user)
    before = snapshot()

    line = assert_one_line_error(invoke(app, command, "987654"))

    assert line == "Error: no workflow with id 987654"
    assert snapshot() == before


MALFORMED_IDS = [
    "abc",
    "-1",
    "-5",
    "+1",
    "1.5",
    "0x10",
    "1e3",
    "",
    "   ",
    str(uuid.uuid4()),
    "²",  # a digit to str.isdigit(), but not to int()
    "\u0661",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1, yet it is no id
    "\x1b[2J\x1b[31mred",
    "1\n2",
    "1; DROP TABLE geneva_workflows; --",
    "' OR 1=1 --",
    "--bogus",
]


@pytest.mark.parametrize("command", [*ACTIONS, "show"])
@pytest.mark.parametrize("bad_id", MALFORMED_IDS, ids=repr)
def test_a_malformed_id_fails_in_one_line_and_changes_nothing(app, user, command, bad_id):
    in_state("ready", user)  # workflow #1 exists
    before = snapshot()

    line = assert_one_line_error(invoke(app, command, bad_id))

    assert "workflow ids are whole numbers" in line, line
    assert snapshot() == before
    assert "\x1b" not in line


def test_an_id_too_large_for_any_key_is_unknown(app, user):
    in_state("ready", user)
    huge = "9" * 40
    line = assert_one_line_error(invoke(app, "cancel", huge))
    assert line == f"Error: no workflow with id {huge}"


def test_surrounding_spaces_around_an_id_are_ignored(app, user):
    workflow = in_state("ready", user)
    assert_ok(invoke(app, "pause", f" {workflow.id} "))
    assert reload(workflow).state == "paused"


def test_a_missing_argument_or_unknown_command_is_a_one_line_usage_error(app, user):
    assert "Missing argument" in assert_one_line_error(invoke(app, "resume"), exit_code=2)
    assert "No such command" in assert_one_line_error(invoke(app, "frobnicate"), exit_code=2)
    line = assert_one_line_error(invoke(app, "show", "1", "2"), exit_code=2)
    assert "unexpected extra argument (2)" in line


def test_help_still_works(app):
    result = invoke(app, "--help")
    lines = assert_ok(result)
    for command in (*ACTIONS, "show", "list", "housekeeping", "relay"):
        assert any(line.strip().startswith(command) for line in lines), command
    assert "WORKFLOW_ID" in invoke(app, "show", "--help").stdout


def test_resume_publishes_the_kept_execution_again(app, user):
    workflow = in_state("paused", user)
    kept = scheduled_id(workflow)
    app.extensions["geneva"].broker.flush_all()

    assert_ok(invoke(app, "resume", str(workflow.id)))

    assert queued_execution_ids(app) == [kept]


def test_a_workflow_whose_class_is_gone_can_be_canceled_but_not_resumed(app, user):
    paused_id = forget_class(in_state("failed", user))
    ready_id = forget_class(in_state("ready", user))
    before = snapshot()

    line = assert_one_line_error(invoke(app, "resume", str(paused_id)))
    assert "'RetiredWorkflow' is no longer defined" in line
    line = assert_one_line_error(invoke(app, "skip", str(ready_id)))
    assert "'RetiredWorkflow' is no longer defined" in line
    assert snapshot() == before

    lines = assert_ok(invoke(app, "cancel", str(ready_id)))
    assert lines == [f"canceled RetiredWorkflow #{ready_id}: now canceled"]
    workflow = db.session.get(geneva.Workflow, ready_id)
    assert workflow.state == "canceled"
    assert history(workflow) == [("first", "canceled", "canceled")]


def test_a_database_error_is_one_line(app, user):
    workflow = in_state("ready", user)
    db.session.remove()
    db.drop_all()

    line = assert_one_line_error(invoke(app, "cancel", str(workflow.id)))

    assert line.startswith("Error: database error ("), line
    assert "geneva_workflows" in line


# ------------------------------------------------------------------------------ show


def show_lines(app: Flask, workflow_id: Any, *options: str) -> list[str]:
    before = snapshot()
    lines = assert_ok(invoke(app, "show", str(workflow_id), *options))
    assert snapshot() == before  # show only reads
    return lines


def timeline(lines: list[str]) -> list[str]:
    """The timeline lines of ``show`` (executions and their errors)."""
    return lines[lines.index("  timeline:") + 1 :]


def test_show_prints_the_workflow_and_every_execution(app, user):
    workflow = in_state("failed", user)
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow.id)
        .values(data={"fail": False, "plan": "gold"})
    )
    db.session.commit()
    workflow.resume()
    db.session.commit()
    perform_next_step(workflow)  # first succeeds now; second is due tomorrow

    lines = show_lines(app, workflow.id)

    assert lines[0] == f"CliWorkflow #{workflow.id}"
    assert "  state:        ready" in lines
    assert f"  hero:         User:{user.id}" in lines
    assert "  next step:    second" in lines
    assert "  previous:     first" in lines
    assert '  data:         {"fail": false, "plan": "gold"}' in lines
    assert "  steps:        first -> second" in lines
    assert any(line.startswith("  created:      20") for line in lines)
    rows = timeline(lines)
    assert len(rows) == 4  # three executions and one error line
    failed, error, succeeded, waiting = rows
    assert failed.split()[:3] == ["#1", "first", "failed/failed"]
    assert " started 20" in failed and " finished 20" in failed
    assert error.strip() == "error: RuntimeError: first failed"
    assert succeeded.split()[:3] == ["#2", "first", "completed/success"]
    assert waiting.split()[:3] == ["#3", "second", "scheduled"]
    assert " started" not in waiting and " finished" not in waiting
    assert "[" not in "".join(rows)  # nothing is late or missing


def test_show_prints_backtraces_on_request(app, user):
    workflow = in_state("failed", user)
    assert not any("Traceback" in line for line in show_lines(app, workflow.id))
    lines = show_lines(app, workflow.id, "--backtraces")
    trace = [line for line in lines if line.lstrip().startswith("|")]
    assert trace[0].endswith("Traceback (most recent call last):")
    assert trace[-1].endswith("RuntimeError: first failed")


def test_show_flags_overdue_scheduled_executions(app, user):
    on_time = in_state("ready", user)
    late = in_state("ready", user)
    set_due(late, timedelta(minutes=5))
    stuck = in_state("ready", user)
    set_due(stuck, timedelta(hours=2))

    (row,) = timeline(show_lines(app, on_time.id))
    assert "overdue" not in row
    # The clock moves on between set_due and the command: allow the seconds to tick.
    (row,) = timeline(show_lines(app, late.id))
    assert re.search(r"  \[overdue by 0:05:[0-5]\d\]$", row), row
    (row,) = timeline(show_lines(app, stuck.id))
    assert re.search(r"  \[overdue by 2:00:[0-5]\d; housekeeping will recover it\]$", row), row


def test_show_does_not_call_a_paused_workflows_kept_execution_overdue(app, user):
    workflow = in_state("paused", user)
    set_due(workflow, timedelta(days=3))
    (row,) = timeline(show_lines(app, workflow.id))
    assert row.endswith("  [kept: runs after resume]"), row


def test_show_flags_an_execution_stuck_in_progress(app, user):
    running = in_state("ready", user)
    set_in_progress(running, started_ago=timedelta(minutes=1))
    stuck = in_state("ready", user)
    set_in_progress(stuck, started_ago=timedelta(hours=2))

    (row,) = timeline(show_lines(app, running.id))
    assert row.split()[:3] == ["#1", "first", "in_progress"]
    assert "[" not in row
    (row,) = timeline(show_lines(app, stuck.id))
    # The clock moves on between set_in_progress and the command: allow the seconds to tick.
    assert re.search(
        r"  \[stuck: in progress for 2:00:[0-5]\d; housekeeping will recover it\]$", row
    ), row


def test_show_flags_executions_of_steps_the_class_no_longer_has(app, user):
    workflow = in_state("ready", user)
    perform_next_step(workflow)
    db.session.execute(
        sa.update(EXECUTIONS)
        .where(EXECUTIONS.c.workflow_id == workflow.id, EXECUTIONS.c.step_name == "first")
        .values(step_name="retired_step")
    )
    db.session.commit()

    retired, current = timeline(show_lines(app, workflow.id))

    assert retired.split()[:2] == ["#1", "retired_step"]
    assert retired.endswith("  [step no longer defined]")
    assert "no longer defined" not in current


def test_show_works_for_a_workflow_whose_class_is_gone(app, user):
    workflow_id = forget_class(in_state("failed", user))

    lines = show_lines(app, workflow_id)

    assert lines[0] == f"RetiredWorkflow #{workflow_id}"
    assert "no longer defined in the application" in lines[1]
    assert "  state:        paused" in lines
    assert not any(line.startswith("  steps:") for line in lines)
    failed, error = timeline(lines)
    assert failed.split()[:3] == ["#1", "first", "failed/failed"]
    assert error.strip() == "error: RuntimeError: first failed"


def test_show_escapes_control_characters_from_the_database(app, user):
    hostile = "boom\x1b[2J\x1b]0;owned\x07\nsecond line\rthird"
    workflow = in_state("failed", user, message=hostile)
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == workflow.id)
        .values(hero_id="1\x1b[31m", data={"note": "\x1b[5mblink"})
    )
    db.session.commit()

    result = invoke(app, "show", str(workflow.id))
    lines = assert_ok(result)

    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\r" not in result.stdout
    assert "  hero:         User:1\\x1b[31m" in lines
    error_lines = [line.strip() for line in timeline(lines)[1:]]
    assert error_lines == [
        "error: RuntimeError: boom\\x1b[2J\\x1b]0;owned\\x07",
        "second line",
        "third",  # a carriage return starts a line of its own, it cannot overwrite one
    ]


# ------------------------------------------------------------------------------ list


def list_rows(app: Flask, *options: str) -> list[list[str]]:
    """The rows of ``list``, each split into columns (the header is checked and dropped)."""
    before = snapshot()
    lines = assert_ok(invoke(app, "list", *options))
    assert snapshot() == before
    if lines == ["no workflows match"]:
        return []
    assert lines[0].split() == ["ID", "CLASS", "STATE", "NEXT", "STEP", "HERO", "CREATED"]
    return [line.split() for line in lines[1:]]


def ids(rows: list[list[str]]) -> list[str]:
    return [row[0] for row in rows]


def test_list_shows_the_newest_first(app, user):
    first = in_state("ready", user)
    second = in_state("finished", user)
    third = in_state("paused", user)

    rows = list_rows(app)

    assert ids(rows) == [str(third.id), str(second.id), str(first.id)]
    assert rows[0][:5] == [str(third.id), "CliWorkflow", "paused", "first", f"User:{user.id}"]
    assert rows[1][:5] == [str(second.id), "CliWorkflow", "finished", "-", f"User:{user.id}"]


def test_list_orders_by_creation_time_not_by_id(app, user):
    older = in_state("ready", user)
    newer = in_state("ready", user)
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == newer.id)
        .values(created_at=utcnow() - timedelta(days=1))
    )
    db.session.commit()
    assert ids(list_rows(app)) == [str(older.id), str(newer.id)]


def test_list_filters_by_state_class_and_hero(app, user):
    other_hero = make_hero("other@example.com")
    ready = in_state("ready", user)
    paused = in_state("paused", user)
    other_paused = in_state("paused", other_hero)
    other_class = in_state("ready", user, cls=OtherCliWorkflow)

    assert ids(list_rows(app, "--state", "paused")) == [str(other_paused.id), str(paused.id)]
    assert ids(list_rows(app, "--workflow", "OtherCliWorkflow")) == [str(other_class.id)]
    assert ids(list_rows(app, "--workflow", "CliWorkflow", "--state", "ready")) == [str(ready.id)]
    assert ids(list_rows(app, "--hero", f"User:{other_hero.id}")) == [str(other_paused.id)]
    assert ids(list_rows(app, "--hero", f"User:{user.id}", "--state", "paused")) == [str(paused.id)]
    assert ids(list_rows(app, "--hero", f"User:{user.id}", "--limit", "2")) == [
        str(other_class.id),
        str(paused.id),
    ]
    assert list_rows(app, "--state", "canceled") == []
    assert list_rows(app, "--hero", "Document:1") == []
    assert list_rows(app, "--workflow", "NoSuchWorkflow") == []


def test_list_says_so_when_nothing_matches(app):
    assert assert_ok(invoke(app, "list")) == ["no workflows match"]


def test_list_shows_and_filters_workflows_whose_class_is_gone(app, user):
    kept_id = in_state("ready", user).id
    gone_id = forget_class(in_state("paused", user))

    rows = list_rows(app)
    assert rows[0][:3] == [str(gone_id), "RetiredWorkflow", "paused"]
    assert ids(rows) == [str(gone_id), str(kept_id)]
    assert ids(list_rows(app, "--workflow", "RetiredWorkflow")) == [str(gone_id)]


@pytest.mark.parametrize("hero", ["User", "User:", ":1", "", "User42"])
def test_list_refuses_a_hero_without_type_and_id(app, user, hero):
    in_state("ready", user)
    before = snapshot()
    line = assert_one_line_error(invoke(app, "list", "--hero", hero))
    assert "a hero is written TYPE:ID" in line
    assert snapshot() == before


@pytest.mark.parametrize("state", ["bogus", "READY", "", "\x1b[2Jready"])
def test_list_refuses_an_unknown_state(app, user, state):
    in_state("ready", user)
    before = snapshot()
    line = assert_one_line_error(invoke(app, "list", "--state", state))
    assert line.startswith("Error: unknown state "), line
    assert "ready, performing, finished, canceled, paused" in line
    assert snapshot() == before


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_list_refuses_a_bad_limit(app, limit):
    line = assert_one_line_error(invoke(app, "list", "--limit", limit), exit_code=2)
    assert "--limit" in line


@pytest.mark.parametrize(
    "hostile",
    ["\x1b[2J", "'; DROP TABLE geneva_workflows; --", "%", "_", "Cli%", "x" * 5000],
    ids=repr,
)
def test_list_takes_hostile_filters_literally(app, user, hostile):
    in_state("ready", user)
    assert list_rows(app, "--workflow", hostile) == []
    assert list_rows(app, "--hero", f"User:{hostile}") == []
    assert list_rows(app, "--hero", f"{hostile}:1") == []
    assert len(list_rows(app)) == 1


# ----------------------------------------------------------------------- housekeeping


def test_housekeeping_prints_what_it_did(app, user):
    old_id = in_state("finished", user).id
    db.session.execute(
        sa.update(WORKFLOWS)
        .where(WORKFLOWS.c.id == old_id)
        .values(transitioned_at=utcnow() - timedelta(days=31))
    )
    db.session.commit()
    stuck = in_state("ready", user)
    set_in_progress(stuck, started_ago=timedelta(hours=2))
    late = in_state("ready", user)
    set_due(late, timedelta(hours=1))

    lines = assert_ok(invoke(app, "housekeeping"))

    assert [line.split(":")[0] for line in lines] == [
        "deleted workflows",
        "recovered executions in progress",
        "recovered overdue scheduled",
    ]
    assert [line.split()[-1] for line in lines] == ["1", "1", "1"]
    assert db.session.get(geneva.Workflow, old_id) is None
    assert reload(stuck).state == "ready"
    assert history(late)[0] == ("first", "completed", "recovered")

    again = assert_ok(invoke(app, "housekeeping"))
    assert [line.split()[-1] for line in again] == ["0", "0", "0"]


# ------------------------------------------------------------------------------ relay


def test_relay_once_publishes_what_is_due(app, user):
    workflow = in_state("ready", user)
    perform_next_step(workflow)  # second is due tomorrow: the relay's to publish
    second = scheduled_id(workflow)
    state = app.extensions["geneva"]
    state.broker.flush_all()

    assert assert_ok(invoke(app, "relay", "--once")) == ["published 0 step message(s)"]
    assert queued_execution_ids(app) == []

    # A day later: the step written yesterday for today is due.
    db.session.execute(
        sa.update(OUTBOX)
        .where(OUTBOX.c.execution_id == second)
        .values(
            created_at=utcnow() - timedelta(days=1), available_at=utcnow() - timedelta(seconds=1)
        )
    )
    db.session.commit()

    assert assert_ok(invoke(app, "relay", "--once")) == ["published 1 step message(s)"]
    assert queued_execution_ids(app) == [second]
    assert assert_ok(invoke(app, "relay", "--once")) == ["published 0 step message(s)"]


# ------------------------------------------------------------- a real flask process

APP_MODULE = """
import os

from flask import Flask

from flask_geneva import step
from tests.models import db, geneva


class CliWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def first(self):
        pass

    @step(wait=86400)
    def second(self):
        pass


app = Flask(__name__)
app.config.update(
    SQLALCHEMY_DATABASE_URI=os.environ["CLI_TEST_DATABASE_URL"],
    GENEVA_BROKER_URL="memory://",
    GENEVA_EMBEDDED_WORKER=False,  # no embedded worker elsewhere: this process publishes
)
db.init_app(app)
geneva.init_app(app)
"""


class FlaskProcess:
    """Runs the ``flask`` executable of this environment against a small app module."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        module = tmp_path / "cli_app.py"
        module.write_text(textwrap.dedent(APP_MODULE))
        self.executable = str(Path(sys.executable).with_name("flask"))
        self.env = {
            **os.environ,
            "FLASK_APP": str(module),
            "CLI_TEST_DATABASE_URL": database_url,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.cwd = tmp_path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, "geneva", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.executable, "geneva", *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def test_the_flask_executable_runs_the_commands(app, user, database_url, tmp_path):
    workflow = CliWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = workflow.id
    flask = FlaskProcess(tmp_path, database_url)

    help_text = flask.run("--help")
    assert help_text.returncode == 0, help_text.stderr
    for command in (*ACTIONS, "show", "list", "housekeeping", "relay"):
        assert f"  {command} " in help_text.stdout, command

    listed = flask.run("list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == [str(workflow_id), "CliWorkflow", "ready"]
    shown = flask.run("show", str(workflow_id))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"CliWorkflow #{workflow_id}"

    paused = flask.run("pause", str(workflow_id))
    assert (paused.returncode, paused.stderr) == (0, "")
    assert paused.stdout == f"paused CliWorkflow #{workflow_id}: now paused, next step first\n"
    assert reload(workflow).state == "paused"

    before = snapshot()
    for args, message in [
        (("pause", str(workflow_id)), f"cannot pause CliWorkflow #{workflow_id}: it is paused"),
        (("show", "424242"), "no workflow with id 424242"),
        (("resume", "-1"), "workflow ids are whole numbers; '-1' is not one"),
        (("list", "--hero", "User"), "a hero is written TYPE:ID"),
        (("list", "--state", "stuck"), "unknown state 'stuck'"),
    ]:
        failed = flask.run(*args)
        assert failed.returncode == 1, (args, failed.stdout, failed.stderr)
        assert failed.stdout == ""
        assert len(failed.stderr.splitlines()) == 1, (args, failed.stderr)
        assert failed.stderr.startswith(f"Error: {message}"), (args, failed.stderr)
    assert snapshot() == before


def test_the_flask_relay_command_runs_until_terminated(app, database_url, tmp_path):
    relay = FlaskProcess(tmp_path, database_url).start("relay")
    try:
        assert relay.stdout is not None
        first_line = relay.stdout.readline()  # blocks until the relay is up
        assert first_line == "relay running; stop with Ctrl-C\n"
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=30) == 0
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()


# ------------------------------------------------------------------------ UUID keys


class UuidCliWorkflow(uuid_geneva.Workflow):
    @step
    def first(self) -> None:
        pass

    @step(wait=timedelta(days=1))
    def second(self) -> None:
        pass




def test_the_commands_take_uuid_ids(uuid_app):
    customer = Customer(name="Ada")
    uuid_db.session.add(customer)
    uuid_db.session.commit()
    workflow = UuidCliWorkflow.create(hero=customer)
    uuid_db.session.commit()
    workflow_id = str(workflow.id)

    assert assert_ok(invoke(uuid_app, "show", workflow_id))[0] == f"UuidCliWorkflow #{workflow_id}"
    (row,) = [line.split() for line in assert_ok(invoke(uuid_app, "list"))[1:]]
    assert row[:5] == [workflow_id, "UuidCliWorkflow", "ready", "first", f"Customer:{customer.id}"]
    rows = assert_ok(invoke(uuid_app, "list", "--hero", f"Customer:{customer.id}"))[1:]
    assert [line.split()[0] for line in rows] == [workflow_id]
    assert assert_ok(invoke(uuid_app, "pause", workflow_id.upper())) == [
        f"paused UuidCliWorkflow #{workflow_id}: now paused, next step first"
    ]
    uuid_db.session.expire_all()
    assert workflow.state == "paused"

    tables = [uuid_geneva.Workflow.__table__, uuid_geneva.StepExecution.__table__]
    with uuid_db.engine.connect() as connection:
        before = [connection.execute(sa.select(t)).all() for t in tables]
    line = assert_one_line_error(invoke(uuid_app, "pause", workflow_id))
    assert line.startswith(f"Error: cannot pause UuidCliWorkflow #{workflow_id}: it is paused")
    unknown = str(uuid.uuid4())
    assert assert_one_line_error(invoke(uuid_app, "resume", unknown)) == (
        f"Error: no workflow with id {unknown}"
    )
    for bad in ("1", "-1", "abc", workflow_id[:-1], f"{workflow_id}0"):
        line = assert_one_line_error(invoke(uuid_app, "cancel", bad))
        assert line == f"Error: workflow ids are UUIDs; {bad!r} is not one"
    with uuid_db.engine.connect() as connection:
        assert [connection.execute(sa.select(t)).all() for t in tables] == before
