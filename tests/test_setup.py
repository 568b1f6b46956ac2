"""Setup: Geneva(db=db), init_app, app.extensions["geneva"], the models' tables, and every
configuration key's default."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva, step
from flask_geneva.testing import speedrun_workflow
from tests.models import db, geneva

SPEC_DEFAULTS = {
    "GENEVA_BROKER_URL": "memory://",
    "GENEVA_EMBEDDED_WORKER": None,
    "GENEVA_DEFAULT_QUEUE": "geneva",
    "GENEVA_RELAY_IN_WORKERS": True,
    "GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER": timedelta(days=30),
    "GENEVA_STUCK_IN_PROGRESS_THRESHOLD": timedelta(hours=1),
    "GENEVA_STUCK_SCHEDULED_THRESHOLD": timedelta(minutes=15),
    "GENEVA_STUCK_RECOVERY_ACTION": "reattempt",
    "GENEVA_HOUSEKEEPING_BATCH_SIZE": 1000,
    "GENEVA_UI_URL_PREFIX": "/geneva",
    "GENEVA_UI_ACCESS": None,
}


def _bare_app(**config):
    app = Flask("geneva_setup_tests")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    app.config.update(config)
    db.init_app(app)
    geneva.init_app(app)
    return app


def test_every_configuration_key_has_its_documented_default():
    app = _bare_app()
    for key, default in SPEC_DEFAULTS.items():
        assert app.config[key] == default, key
    config = app.extensions["geneva"].config
    assert config.broker_url == "memory://"
    assert config.embedded_worker is True  # None: memory:// and not testing
    assert config.default_queue == "geneva"
    assert config.relay_in_workers is True
    assert config.delete_completed_workflows_after == timedelta(days=30)
    assert config.stuck_in_progress_threshold == timedelta(hours=1)
    assert config.stuck_scheduled_threshold == timedelta(minutes=15)
    assert config.stuck_recovery_action == "reattempt"
    assert config.housekeeping_batch_size == 1000
    assert config.ui_url_prefix == "/geneva"
    assert config.ui_access is None


def test_configuration_given_by_the_app_wins_and_is_read_once():
    app = _bare_app(
        GENEVA_DEFAULT_QUEUE="workflows",
        GENEVA_DELETE_COMPLETED_WORKFLOWS_AFTER=None,
        GENEVA_STUCK_SCHEDULED_THRESHOLD=60,
        GENEVA_STUCK_RECOVERY_ACTION="cancel",
    )
    config = app.extensions["geneva"].config
    assert config.default_queue == "workflows"
    assert config.delete_completed_workflows_after is None
    assert config.stuck_scheduled_threshold == timedelta(seconds=60)
    assert config.stuck_recovery_action == "cancel"
    app.config["GENEVA_DEFAULT_QUEUE"] = "changed later"
    assert app.extensions["geneva"].config.default_queue == "workflows"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("GENEVA_STUCK_RECOVERY_ACTION", "delete"),
        ("GENEVA_HOUSEKEEPING_BATCH_SIZE", 0),
        ("GENEVA_STUCK_IN_PROGRESS_THRESHOLD", "an hour"),
        ("GENEVA_UI_ACCESS", True),
        ("GENEVA_UI_URL_PREFIX", "geneva"),
        ("GENEVA_BROKER_URL", "kafka://localhost"),
    ],
)
def test_a_bad_configuration_value_is_refused_by_init_app(key, value):
    with pytest.raises(ValueError, match=key if key != "GENEVA_BROKER_URL" else "BROKER_URL"):
        _bare_app(**{key: value})


def test_the_state_lives_in_app_extensions():
    app = _bare_app()
    state = app.extensions["geneva"]
    assert state.geneva is geneva
    assert state.app is app
    assert state.broker is not None
    assert state.step_actor.broker is state.broker


def test_registering_twice_on_one_app_raises():
    app = _bare_app()
    with pytest.raises(RuntimeError, match="already registered"):
        geneva.init_app(app)


def test_init_app_needs_flask_sqlalchemy_first():
    app = Flask("no_db_yet")
    with pytest.raises(RuntimeError, match=r"db\.init_app\(app\) before"):
        geneva.init_app(app)


def test_one_geneva_per_sqlalchemy_instance():
    with pytest.raises(RuntimeError, match="one Geneva per SQLAlchemy"):
        Geneva(db=db)


def test_geneva_needs_a_flask_sqlalchemy():
    with pytest.raises(TypeError, match=r"flask_sqlalchemy\.SQLAlchemy"):
        Geneva(db=None)


def test_the_tables_live_on_db_metadata():
    assert {"geneva_workflows", "geneva_step_executions", "geneva_outbox"} <= set(
        db.metadata.tables
    )
    assert geneva.Workflow.__tablename__ == "geneva_workflows"
    assert geneva.StepExecution.__tablename__ == "geneva_step_executions"
    assert geneva.OutboxMessage.__tablename__ == "geneva_outbox"


def test_geneva_app_db_form_and_create_all(tmp_path):
    """``Geneva(app, db=db)`` initialises at once; ``db.create_all()`` makes the tables."""
    own_db = SQLAlchemy()
    app = Flask("own_app")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'own.sqlite3'}"
    own_db.init_app(app)
    own_geneva = Geneva(app, db=own_db)
    assert app.extensions["geneva"].geneva is own_geneva

    class NoHeroWorkflow(own_geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def only(self):
            self.data["ran"] = True

    with app.app_context():
        own_db.create_all()
        tables = set(sa.inspect(own_db.engine).get_table_names())
        assert {"geneva_workflows", "geneva_step_executions", "geneva_outbox"} <= tables
        wf = NoHeroWorkflow.create()
        own_db.session.commit()
        speedrun_workflow(wf)
        assert (wf.state, wf.data) == ("finished", {"ran": True})
        own_db.session.remove()
        own_db.engine.dispose()


def test_a_database_geneva_does_not_run_on_is_refused_at_init_app():
    """Microsoft SQL Server here (a stand-in DBAPI module: no server is needed to be
    refused)."""
    from types import SimpleNamespace

    app = Flask("geneva_setup_tests")
    app.config["SQLALCHEMY_DATABASE_URI"] = "mssql+pymssql://someone:secret@db.example/shop"
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "module": SimpleNamespace(paramstyle="pyformat", __name__="pymssql")
    }
    own_db = SQLAlchemy()
    own_db.init_app(app)
    with pytest.raises(ValueError) as raised:
        Geneva(db=own_db).init_app(app)
    message = str(raised.value)
    assert "runs on PostgreSQL, MariaDB, MySQL or SQLite" in message
    assert "is mssql" in message and "db.example/shop" in message
    assert "secret" not in message
    assert "geneva" not in app.extensions


def test_a_mariadb_connector_url_is_a_supported_database():
    """``mariadb+mariadbconnector://`` (a stand-in DBAPI module: the driver need not be
    installed to be recognised) and MariaDB's store and wake-up channel are chosen."""
    from types import SimpleNamespace

    from flask_geneva.store import store_for
    from flask_geneva.store.mysql import MysqlStore

    app = Flask("geneva_setup_tests")
    app.config["SQLALCHEMY_DATABASE_URI"] = "mariadb+mariadbconnector://someone@db.example/shop"
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "module": SimpleNamespace(paramstyle="qmark", __name__="mariadb")
    }
    app.config["GENEVA_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    own_db = SQLAlchemy()
    own_db.init_app(app)
    own_geneva = Geneva(db=own_db)
    own_geneva.init_app(app)
    state = app.extensions["geneva"]
    assert state.wakeups is not None
    assert state.wakeups.channel.endswith(":geneva-outbox:db.example:/shop")
    with app.app_context():
        session = SimpleNamespace(get_bind=lambda: own_db.engine)
        assert own_db.engine.dialect.name == "mariadb"
        assert isinstance(store_for(own_geneva, session), MysqlStore)


def test_mariadb_with_another_isolation_level_is_refused_at_init_app():
    app = Flask("geneva_setup_tests")
    app.config["SQLALCHEMY_DATABASE_URI"] = "mysql+pymysql://someone@db.example/shop"
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"isolation_level": "REPEATABLE READ"}
    own_db = SQLAlchemy()
    own_db.init_app(app)
    with pytest.raises(ValueError, match="needs 'READ COMMITTED'"):
        Geneva(db=own_db).init_app(app)
    assert "geneva" not in app.extensions


@pytest.mark.parametrize(
    ("version", "refused"),
    [("10.5.23-MariaDB", True), ("10.6.0-MariaDB-1", False), ("10.11.19-MariaDB-0+deb12u1",
     False), ("5.7.44", True), ("8.0.36", False), ("8.4.0", False)],
)
def test_mariadb_and_mysql_servers_too_old_for_skip_locked_are_refused(version, refused):
    from flask_geneva.databases import check_server_version

    if refused:
        with pytest.raises(ValueError, match="or newer"):
            check_server_version(version)
    else:
        check_server_version(version)


def test_an_app_with_binds_only_is_told_to_set_its_default_database():
    own_db = SQLAlchemy()  # binds change a SQLAlchemy's metadata: not the shared one
    app = Flask("geneva_setup_tests")
    app.config["SQLALCHEMY_BINDS"] = {"reports": "sqlite://"}
    own_db.init_app(app)
    with pytest.raises(ValueError, match="set SQLALCHEMY_DATABASE_URI"):
        Geneva(db=own_db).init_app(app)
    assert "geneva" not in app.extensions
