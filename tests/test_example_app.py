"""The example app: the README's demo (embedded default) and the same app distributed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_SERVER_URL
from tests.e2e_support import ROOT, wait_until

EXPECTED_FINAL_STATES = {
    "UserOnboardingWorkflow #1": "finished",
    "UserOnboardingWorkflow #2": "finished",
    "UserOnboardingWorkflow #3": "finished",
    "PaymentProcessingWorkflow #4": "finished",  # settles
    "PaymentProcessingWorkflow #5": "finished",  # rate limited twice, then settles
    "PaymentProcessingWorkflow #6": "canceled",  # card declined
    "PaymentProcessingWorkflow #7": "paused",  # gateway down: waits for an operator
    "DataRetentionWorkflow #8": "finished",  # its user is deleted along the way
}


def test_the_demo_runs_every_example_workflow_on_the_embedded_default(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "EXAMPLE_SECONDS_PER_DAY": "0.05",
    }
    env.pop("GENEVA_BROKER_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "example_app", "--until-done", "--timeout", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = dict(line.split(": ") for line in result.stdout.strip().splitlines())
    assert states == EXPECTED_FINAL_STATES


@pytest.fixture
def example_database() -> Iterator[str]:
    admin = sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    name = f"geneva_example_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(PG_SERVER_URL).set(database=name).render_as_string(
        hide_password=False
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.e2e
def test_the_example_app_runs_on_postgresql_and_redis_with_dramatiq_workers(
    example_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dramatiq example_app.worker` (the module form) runs the example's steps."""
    from tests.e2e_support import WorkerProcesses

    queue = f"example_{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": example_database,
        "GENEVA_BROKER_URL": os.environ.get("GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "GENEVA_DEFAULT_QUEUE": queue,
        "EXAMPLE_SECONDS_PER_DAY": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from example_app.app import create_app, seed
    from example_app.models import db, geneva

    app = create_app()
    # The plain module form, without ":broker": the app's broker is Dramatiq's global one.
    workers = WorkerProcesses(env, processes=2, threads=4, module="example_app.worker", queue=queue)
    with app.app_context():
        db.create_all()
        seed()
        workers.start()
        try:

            def settled() -> dict[str, str] | None:
                db.session.rollback()
                rows = db.session.execute(
                    sa.select(geneva.Workflow.workflow_class, geneva.Workflow.id,
                              geneva.Workflow.state).order_by(geneva.Workflow.id)
                ).all()
                states = {f"{cls} #{i}": str(state) for cls, i, state in rows}
                moving = [s for s in states.values() if s in ("ready", "performing")]
                return None if moving else states

            states = wait_until(settled, timeout=120, message="the example workflows")
            assert states == EXPECTED_FINAL_STATES
        finally:
            workers.stop()
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()
