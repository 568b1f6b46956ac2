"""The embedded default: worker threads and the relay inside the app process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import step
from tests.e2e_support import ROOT, wait_until
from tests.models import Note, db, geneva


class EmbeddedWorkflow(geneva.Workflow):
    may_proceed_without_hero = True

    @step
    def write(self) -> None:
        db.session.add(Note(text=f"first {self.id}"))

    @step(wait=timedelta(milliseconds=200))
    def write_again(self) -> None:
        db.session.add(Note(text=f"second {self.id}"))


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"GENEVA_EMBEDDED_WORKER": True, "GENEVA_EMBEDDED_WORKER_THREADS": 3}


@pytest.fixture
def embedded(app: Flask) -> Iterator[Any]:
    state = app.extensions["geneva"]
    yield state
    state.stop_embedded_worker()


def _states(ids: list[Any]) -> list[str]:
    db.session.rollback()
    return [
        str(state)
        for state in db.session.scalars(
            sa.select(geneva.Workflow.state).where(geneva.Workflow.id.in_(ids))
        )
    ]


def test_it_starts_with_the_first_request(app: Flask, embedded: Any) -> None:
    assert not embedded.embedded_running
    app.test_client().get("/anything")
    assert embedded.embedded_running
    assert embedded.relay.running


def test_it_starts_once_per_process(app: Flask, embedded: Any) -> None:
    embedded.start_embedded_worker()
    worker = embedded._embedded_worker
    embedded.start_embedded_worker()
    app.test_client().get("/anything")
    assert embedded._embedded_worker is worker


def test_workflows_run_to_the_end_in_the_app_process(app: Flask, embedded: Any) -> None:
    embedded.start_embedded_worker()
    workflows = [EmbeddedWorkflow.create() for _ in range(10)]
    db.session.commit()
    ids = [wf.id for wf in workflows]
    wait_until(lambda: _states(ids) == ["finished"] * 10, timeout=60, message="finished")
    notes = db.session.scalars(sa.select(Note.text)).all()
    assert sorted(notes) == sorted(
        [f"first {i}" for i in ids] + [f"second {i}" for i in ids]
    )


def test_it_stops_at_exit(tmp_path: Path) -> None:
    """A process that started the embedded worker exits by itself when its work is done."""
    script = textwrap.dedent(
        f"""
        import time
        import sqlalchemy as sa
        from tests.conftest import make_app
        from tests.models import db, geneva
        from tests.test_embedded_worker import EmbeddedWorkflow

        app = make_app("sqlite:///{tmp_path / 'exit.sqlite3'}", GENEVA_EMBEDDED_WORKER=True)
        with app.app_context():
            db.create_all()
            app.extensions["geneva"].start_embedded_worker()
            workflow = EmbeddedWorkflow.create()
            db.session.commit()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                db.session.expire_all()
                if workflow.state == "finished":
                    print("finished")
                    break
                time.sleep(0.05)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "finished"


def test_it_never_starts_in_the_reloaders_watcher_process(
    app: Flask, embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flask run --reload``: the watcher process loads the app too, but only the child
    that Werkzeug starts (``WERKZEUG_RUN_MAIN=true``) serves and runs the worker."""
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.setattr(sys, "argv", ["flask", "run", "--reload"])
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    embedded.start_embedded_worker()
    assert not embedded.embedded_running
    assert not embedded.relay.running

    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")  # the serving child
    embedded.start_embedded_worker()
    assert embedded.embedded_running


def test_flask_run_without_the_reloader_starts_it(
    app: Flask, embedded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.setattr(sys, "argv", ["flask", "run", "--no-reload"])
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    embedded.start_embedded_worker()
    assert embedded.embedded_running
