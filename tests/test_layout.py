"""What people read: `flask geneva list` and `show` line up, the UI's words stay apart."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

from flask import Flask

from flask_geneva import step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.models import db, geneva


class LayoutWorkflow(geneva.Workflow):
    may_proceed_without_hero = True

    @step
    def a_step_with_a_rather_long_name(self) -> None:
        if self.data.get("reattempt"):
            self.data["reattempt"] = False
            self.reattempt()

    @step(wait=timedelta(hours=1))
    def later(self) -> None: ...


def _cli(app: Flask, *args: str) -> list[str]:
    result = app.test_cli_runner().invoke(args=["geneva", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_list_columns_are_as_wide_as_their_contents(app: Flask) -> None:
    for _ in range(3):
        LayoutWorkflow.create()
    db.session.commit()
    header, *rows = _cli(app, "list")
    widest_id = max(len(row.split()[0]) for row in rows)
    # The ID column is as wide as the widest id, plus the gap: not 38 characters.
    assert header.index("CLASS") == max(len("ID"), widest_id) + 2
    for row in rows:
        assert row[header.index("CLASS") :].startswith("LayoutWorkflow")
        assert row[header.index("STATE") :].startswith("ready")


def test_show_timeline_columns_line_up(app: Flask) -> None:
    workflow = LayoutWorkflow.create(data={"reattempt": True})
    db.session.commit()
    perform_next_step(workflow)  # completed/reattempted
    perform_next_step(workflow)  # completed/success; `later` is scheduled in an hour
    lines = _cli(app, "show", str(workflow.id))
    rows = lines[lines.index("  timeline:") + 1 :]
    assert len(rows) == 3
    # completed/reattempted, completed/success and scheduled differ in width; the
    # columns after them start at one place on every line.
    assert len({row.index("scheduled 20") for row in rows}) == 1
    started = [row.index("started ") for row in rows if "started " in row]
    assert len(started) == 2 and len(set(started)) == 1
    assert len({row.index("completed") for row in rows[:2]} | {rows[2].index("scheduled")}) == 1


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "".join(parser.parts)


def test_the_list_page_keeps_a_space_between_a_state_and_its_time(app: Flask) -> None:
    finished = LayoutWorkflow.create()
    paused = LayoutWorkflow.create()
    LayoutWorkflow.create()  # ready: "due"
    db.session.commit()
    speedrun_workflow(finished)
    paused.pause()
    db.session.commit()
    client = app.test_client()
    text = _visible_text(client.get("/geneva/workflows").get_data(as_text=True))
    assert re.search(r"finished \S", text), text
    assert re.search(r"kept for \S", text) or re.search(r"paused \S", text), text
    # No word runs into the time after it ("finished8 s ago", "paused10 s ago").
    assert not re.search(r"[a-z]\d+ (s|min|h|d) ago", text), text
    assert not re.search(r"[a-z](just now|in \d)", text), text
