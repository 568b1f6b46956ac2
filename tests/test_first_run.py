"""A new user's first run: the README's app runs its steps as written, the demo answers
the CLI at once, and every slip in the setup fails loudly with what to do."""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import (
    ConfigurationError,
    Geneva,
    GenevaError,
    SetupError,
    StepConfigurationError,
    step,
)
from tests.e2e_support import ROOT, wait_until
from tests.helpers import published_execution_ids
from tests.models import db as tests_db
from tests.models import geneva as tests_geneva


class FirstRunWorkflow(tests_geneva.Workflow):
    may_proceed_without_hero = True

    @step
    def only(self) -> None: ...


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENEVA_", "FLASK_"))}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)  # this checkout's flask_geneva
    env.update(extra)
    return env


class Server:
    """A process serving HTTP on ``port``; its output is kept for the assertions."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], port: int, log: Path
    ) -> None:
        self.port = port
        self.log = log
        self._out = self.log.open("w")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT, text=True
        )
        wait_until(self._answers, timeout=60, message=f"the server on port {port}")

    def _answers(self) -> bool:
        assert self.popen.poll() is None, self.output()
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def post(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=15)
        self._out.close()


def _readme_app() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r'```python title="app.py"\n(.*?)```', readme, re.S)
    assert match, "README.md has no app.py snippet"
    return match.group(1)


def _sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # the tables are not there yet
        return []
    finally:
        connection.close()


# ---------------------------------------------------------------- the README's app


def test_the_readme_app_copied_into_a_file_runs_its_steps_as_written(tmp_path: Path) -> None:
    """No broker, no worker, no GENEVA_* key: `flask run` runs the steps itself, and the
    steps' log lines reach its terminal."""
    readme = (ROOT / "README.md").read_text()
    for command in (
        "flask --app app run",
        "curl -X POST http://127.0.0.1:5000/users/ada@example.com/renewal",
        "flask --app app geneva show 1",
    ):
        assert command in readme, f"the README no longer says {command!r}"
    (tmp_path / "app.py").write_text(_readme_app())
    port = _free_port()
    server = Server(
        [sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port)],
        tmp_path,
        _clean_env(),
        port,
        tmp_path / "server.log",
    )
    try:
        assert '"workflow":1' in server.post("/users/ada@example.com/renewal").replace(" ", "")
        database = tmp_path / "instance" / "app.sqlite3"

        def finished() -> bool:
            return _sqlite_rows(database, "SELECT state FROM geneva_workflows") == [
                ("finished",)
            ]

        wait_until(finished, timeout=30, message="the README's workflow to finish")
        assert _sqlite_rows(database, "SELECT payments FROM user") == [(1,)]
        shown = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "geneva", "show", "1"],
            cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "finished" in shown.stdout
        log = server.output()
        assert "telling ada@example.com: your subscription renews soon" in log
        assert "charged ada@example.com" in log
    finally:
        server.stop()


# ---------------------------------------------------------------- embedded + the CLI

DEMO_PAUSED_WORKFLOW = 7  # PaymentProcessingWorkflow, gateway down: waits for an operator


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def demo_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The demo's database: a SQLite file, or a server database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'demo.sqlite3'}"
        return
    from tests.conftest import create_server_database, drop_server_database

    url = create_server_database(request.param, "geneva_demo")
    yield url
    drop_server_database(url)


def test_resume_from_the_cli_takes_effect_in_the_running_demo_within_two_seconds(
    tmp_path: Path, demo_database: str
) -> None:
    """The demo serves on the embedded default; `flask geneva resume` runs in another
    process, which cannot deliver a message into the demo's in-process broker: it leaves
    the row to the demo's relay, which publishes it at its next look (SQLite: it looks
    every second) or at once (PostgreSQL: a NOTIFY wakes it)."""
    env = _clean_env(DATABASE_URL=demo_database, EXAMPLE_SECONDS_PER_DAY="0.05")
    engine = sa.create_engine(demo_database, poolclass=sa.pool.NullPool)
    port = _free_port()
    server = Server(
        [sys.executable, "-m", "example_app", "--port", str(port)],
        ROOT,
        env,
        port,
        tmp_path / "demo.log",
    )
    executions = (
        "SELECT count(*) FROM geneva_step_executions "
        f"WHERE workflow_id = {DEMO_PAUSED_WORKFLOW} AND state != 'scheduled'"
    )

    def rows(query: str) -> list[tuple[Any, ...]]:
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(sa.text(query))]
        except sa.exc.DBAPIError:  # the demo has not created its tables yet
            return []

    try:

        def paused() -> bool:
            return rows(
                f"SELECT state FROM geneva_workflows WHERE id = {DEMO_PAUSED_WORKFLOW}"
            ) == [("paused",)]

        wait_until(paused, timeout=60, message="the demo's payment to pause")
        [(before,)] = rows(executions)
        resumed = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "example_app.app", "geneva", "resume",
             str(DEMO_PAUSED_WORKFLOW)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        # The gateway is still down: the step runs again and pauses the workflow again.
        wait_until(
            lambda: rows(executions)[0][0] > before and paused(),
            timeout=2,
            message="the resumed step to run in the demo",
        )
    finally:
        server.stop()
        engine.dispose()


def _embedded_app(database_url: str) -> Flask:
    db, geneva = tests_db, tests_geneva
    app = Flask("geneva_embedded_cli")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, GENEVA_BROKER_URL="memory://")
    db.init_app(app)
    geneva.init_app(app)
    return app


@pytest.fixture
def cli_process_app(database_url: str) -> Iterator[Flask]:
    """An app on the embedded default, in a process that runs no worker (as the CLI)."""
    db = tests_db
    app = _embedded_app(database_url)
    with app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


def test_a_process_that_cannot_deliver_leaves_its_rows_to_the_serving_process(
    cli_process_app: Flask,
) -> None:
    db, geneva, Quick = tests_db, tests_geneva, FirstRunWorkflow

    state = cli_process_app.extensions["geneva"]
    assert state.config.embedded_worker and not state.can_deliver
    workflow = Quick.create()
    db.session.commit()
    # Nothing went into this process's in-memory broker, which nobody reads ...
    assert published_execution_ids(cli_process_app) == []
    # ... and the row is the relay's at once (publish_count 0), not in 60 s.
    [row] = db.session.scalars(sa.select(geneva.OutboxMessage)).all()
    assert (row.published_at, row.publish_count) == (None, 0)
    assert state.relay.publish_due() == 0  # this process's relay cannot deliver either
    # The serving process (same app, its worker running) publishes it at its next look.
    serving = _embedded_app(str(db.engine.url.render_as_string(hide_password=False)))
    serving_state = serving.extensions["geneva"]
    serving_state._embedded_worker = object()  # as if its worker ran: only publish here
    serving_state._embedded_pid = os.getpid()
    with serving.app_context():
        assert serving_state.can_deliver
        assert serving_state.relay.publish_due() == 1
    assert published_execution_ids(serving) == [workflow.current_execution.id]


# ---------------------------------------------------------------- the default


@pytest.mark.parametrize(
    ("config", "testing", "expected"),
    [
        ({}, False, True),  # the zero-config app runs its steps
        ({}, True, False),  # tests run them with the testing helpers
        ({"GENEVA_BROKER_URL": "redis://127.0.0.1:6379/0"}, False, False),
        ({"GENEVA_EMBEDDED_WORKER": False}, False, False),
        ({"GENEVA_EMBEDDED_WORKER": True, "GENEVA_BROKER_URL": "redis://h/0"}, True, True),
    ],
)
def test_the_embedded_worker_is_on_by_default_only_for_the_in_process_broker_outside_tests(
    config: dict[str, Any], testing: bool, expected: bool
) -> None:
    db = SQLAlchemy()
    geneva = Geneva(db=db)
    app = Flask("embedded_default")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", TESTING=testing, **config)
    db.init_app(app)
    geneva.init_app(app)
    assert app.config["GENEVA_EMBEDDED_WORKER"] == config.get("GENEVA_EMBEDDED_WORKER")
    assert app.extensions["geneva"].config.embedded_worker is expected


def test_a_bad_embedded_worker_value_is_refused_by_name() -> None:
    db = SQLAlchemy()
    geneva = Geneva(db=db)
    app = Flask("embedded_bad")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", GENEVA_EMBEDDED_WORKER="yes")
    db.init_app(app)
    with pytest.raises(ConfigurationError, match="GENEVA_EMBEDDED_WORKER must be True"):
        geneva.init_app(app)
    assert "geneva" not in app.extensions
    assert issubclass(ConfigurationError, ValueError)


# ---------------------------------------------------------------- slips


def test_a_forgotten_init_app_says_to_call_it() -> None:
    db = SQLAlchemy()
    geneva = Geneva(db=db)

    class Forgotten(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def only(self) -> None: ...

    app = Flask("forgotten")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    with app.app_context():
        db.create_all()
        with pytest.raises(SetupError, match=r"call geneva\.init_app\(app\)"):
            Forgotten.create()
        assert db.session.scalars(sa.select(geneva.Workflow)).all() == []
    assert issubclass(SetupError, GenevaError) and issubclass(SetupError, RuntimeError)


def test_two_step_methods_of_one_name_are_a_configuration_error() -> None:
    geneva = tests_geneva
    with pytest.raises(StepConfigurationError, match="a step named 'charge' is already"):

        class TwiceNamed(geneva.Workflow):
            @step
            def charge(self) -> None: ...

            @step(wait=5)
            def charge(self) -> None: ...  # noqa: F811 - the slip under test

    assert "TwiceNamed" not in geneva.workflow_classes


def test_a_broker_outage_logs_one_warning_not_one_per_request(
    app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, Quick = tests_db, FirstRunWorkflow

    state = app.extensions["geneva"]
    real_publish = state.publish

    def broker_down(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(state, "publish", broker_down)
    with caplog.at_level(logging.DEBUG, logger="flask_geneva"):
        for _ in range(3):  # three requests
            Quick.create()
            db.session.commit()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        [warning] = warnings
        assert warning.exc_info is None  # one line, not a traceback
        message = warning.getMessage()
        assert "Connection refused" in message
        assert "the relay publishes it (and any others) once the broker answers" in message
        monkeypatch.setattr(state, "publish", real_publish)
        caplog.clear()
        Quick.create()
        db.session.commit()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        m for m in (r.getMessage() for r in caplog.records) if "works again" in m
    ]
    assert any("works again" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- workers


def _worker_log_once(tmp_path: Path, broker_url: str, queue: str, wanted: str) -> str:
    """Start ``dramatiq tests.e2e_app:broker`` (SQLite, ``broker_url``), wait until its
    output holds ``wanted``, kill it; its output."""
    env = _clean_env(
        E2E_DATABASE_URL=f"sqlite:///{tmp_path / 'w.sqlite3'}",
        E2E_BROKER_URL=broker_url,
        E2E_QUEUE=queue,
    )
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.e2e_app:broker", "--processes", "1",
             "--threads", "1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: wanted in log.read_text(),
                timeout=60,
                message=f"the worker to say {wanted!r}",
            )
            return log.read_text()
        finally:
            os.killpg(worker.pid, 9)
            worker.wait(timeout=30)


def test_a_worker_that_cannot_reach_its_broker_says_so(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0"
    text = _worker_log_once(tmp_path, url, "unreachable", "cannot reach its broker")
    assert f"GENEVA_BROKER_URL={url}" in text
    assert "start the broker or fix GENEVA_BROKER_URL" in text


def test_a_worker_on_the_in_process_broker_says_no_other_process_reaches_it(
    tmp_path: Path,
) -> None:
    text = _worker_log_once(tmp_path, "memory://", "in_process", "ready for action")
    assert "this dramatiq worker uses the in-process broker" in text
    assert "GENEVA_BROKER_URL=memory://" in text
    assert "no other process can send it a step, so it runs only what" in text


def test_the_relay_command_refuses_an_embedded_app_it_cannot_deliver_for(
    cli_process_app: Flask,
) -> None:
    result = cli_process_app.test_cli_runner().invoke(args=["geneva", "relay", "--once"])
    assert result.exit_code == 1
    assert "this process has no worker to deliver to" in result.output
    assert "Redis or RabbitMQ" in result.output
