"""Flask-Migrate picks up geneva's tables: ``flask db migrate`` creates the three tables
with their indexes, ``flask db upgrade`` builds them, and a second ``migrate`` proposes
nothing. Runs the real ``flask db`` commands in a temporary project."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATABASES, create_server_database, drop_server_database
from tests.models import geneva

GENEVA_TABLES = ("geneva_workflows", "geneva_step_executions", "geneva_outbox")

TEST_APP = textwrap.dedent(
    """
    import os

    from flask import Flask
    from flask_migrate import Migrate
    from flask_sqlalchemy import SQLAlchemy

    from flask_geneva import Geneva, step

    db = SQLAlchemy()
    geneva = Geneva(db=db, uuid_primary_keys=os.environ["GENEVA_UUID_KEYS"] == "1")


    class Customer(db.Model):
        __tablename__ = "customers"
        id = db.Column(db.Integer, primary_key=True)


    class OnboardingWorkflow(geneva.Workflow):
        @step
        def welcome(self):
            pass


    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    geneva.init_app(app)
    Migrate(app, db)
    """
)


@pytest.fixture(params=DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
        return
    url = create_server_database(request.param, "geneva_migrate")
    yield url
    drop_server_database(url)


def _flask_db(project: Path, database_url: str, uuid_keys: bool, *args: str) -> str:
    """Run ``flask db ARGS`` in ``project``; return its output (stdout and stderr)."""
    env = dict(os.environ)
    env.update(
        FLASK_APP="migrate_app:app",
        DATABASE_URL=database_url,
        GENEVA_UUID_KEYS="1" if uuid_keys else "0",
        # This checkout's flask_geneva, not whichever one the environment installed.
        PYTHONPATH=os.pathsep.join([str(project), str(Path(__file__).resolve().parents[1])]),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "flask", "db", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


def _expected_indexes() -> dict[str, set[str]]:
    return {
        table: {index.name for index in geneva.Workflow.metadata.tables[table].indexes}
        for table in GENEVA_TABLES
    }


@pytest.mark.parametrize("uuid_keys", [False, True], ids=["integer keys", "uuid keys"])
def test_flask_db_migrate_and_upgrade(tmp_path, empty_database, uuid_keys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "migrate_app.py").write_text(TEST_APP)
    _flask_db(project, empty_database, uuid_keys, "init")

    output = _flask_db(project, empty_database, uuid_keys, "migrate", "-m", "geneva")
    [script] = (project / "migrations" / "versions").glob("*.py")
    source = script.read_text()
    for table in GENEVA_TABLES:
        assert f"Detected added table '{table}'" in output
        assert f"op.create_table('{table}'" in source
    for names in _expected_indexes().values():
        for name in names:
            assert f"create_index('{name}'" in source
    assert "drop_table" not in source.split("def downgrade")[0]

    _flask_db(project, empty_database, uuid_keys, "upgrade")
    engine = sa.create_engine(empty_database)
    try:
        inspector = sa.inspect(engine)
        assert set(GENEVA_TABLES) <= set(inspector.get_table_names())
        for table, names in _expected_indexes().items():
            built = {index["name"]: index for index in inspector.get_indexes(table)}
            assert names <= set(built), table
        one_active = {
            i["name"]: i for i in inspector.get_indexes("geneva_step_executions")
        }["geneva_step_executions_one_active"]
        assert one_active["unique"]
        key_type = next(
            c["type"] for c in inspector.get_columns("geneva_workflows") if c["name"] == "id"
        )
        assert isinstance(key_type, sa.Integer) != uuid_keys
    finally:
        engine.dispose()

    again = _flask_db(project, empty_database, uuid_keys, "migrate", "-m", "nothing")
    assert "No changes in schema detected" in again
    assert "Detected" not in again.replace("Detected sequence", "")
    assert len(list((project / "migrations" / "versions").glob("*.py"))) == 1
