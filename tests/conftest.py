"""Fixtures: every test that takes ``app`` runs on SQLite, PostgreSQL and MariaDB.

PostgreSQL is required: when it cannot be reached the run fails (it never skips). Set
``GENEVA_TEST_PG_URL`` to point at another server (default: the local one). MariaDB (or
MySQL) is required in CI (``GENEVA_REQUIRE_SERVICES=1``): there an unreachable server
fails the run; elsewhere its tests are skipped. ``GENEVA_TEST_MARIADB_URL`` points at
another server (default: the local one, as root). Each run creates a database of its own
on each server and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.models import db, geneva

PG_SERVER_URL = os.environ.get(
    "GENEVA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_SERVER_URL = os.environ.get(
    "GENEVA_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
#: The databases of the ``database_url`` fixture; the servers among them have row locks.
DATABASES = ("sqlite", "postgresql", "mariadb")
SERVER_DATABASES = ("postgresql", "mariadb")


def _pg_admin_engine() -> sa.Engine:
    return sa.create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this test run, dropped at the end."""
    name = f"geneva_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _pg_admin_engine()
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL is required for the tests and is unreachable: {error}")
    url = sa.engine.make_url(PG_SERVER_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def create_server_database(kind: str, prefix: str = "geneva_test") -> str:
    """Create an empty database named after ``prefix`` on the ``kind`` server
    (``"postgresql"`` or ``"mariadb"``); its URL. Fails (or, for MariaDB outside CI,
    skips) when the server cannot be reached."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    server = PG_SERVER_URL if kind == "postgresql" else MARIADB_SERVER_URL
    quote = '"' if kind == "postgresql" else "`"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    except sa.exc.OperationalError as error:
        if kind == "postgresql" or os.environ.get("GENEVA_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{kind} is required for the tests and is unreachable: {error}")
        pytest.skip(f"MariaDB is unreachable (GENEVA_TEST_MARIADB_URL): {error}")
    finally:
        admin.dispose()
    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_server_database(url: str) -> None:
    """Drop a database :func:`create_server_database` made."""
    parsed = sa.engine.make_url(url)
    postgresql = parsed.get_backend_name() == "postgresql"
    server = PG_SERVER_URL if postgresql else MARIADB_SERVER_URL
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if postgresql:
                connection.execute(
                    sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
                )
            else:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def mariadb_database_url() -> Iterator[str]:
    """A MariaDB database of its own for this test run, dropped at the end."""
    url = create_server_database("mariadb")
    yield url
    drop_server_database(url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``postgresql_only`` keeps only its PostgreSQL variant; one marked
    ``row_locks`` its PostgreSQL and MariaDB variants."""
    dropped = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        database = None if callspec is None else callspec.params.get("database_url")
        if database is None:
            continue
        postgresql_only = item.get_closest_marker("postgresql_only") is not None
        row_locks = item.get_closest_marker("row_locks") is not None
        if (postgresql_only and database != "postgresql") or (row_locks and database == "sqlite"):
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'geneva.sqlite3'}"
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_database_url"))
    return str(request.getfixturevalue("pg_database_url"))


def make_app(database_url: str, **config: Any) -> Flask:
    app = Flask("geneva_tests")
    app.config.update({
        "SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True,
        "GENEVA_BROKER_URL": "memory://", **config,
    })  # fmt: skip
    db.init_app(app)
    geneva.init_app(app)
    return app


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra configuration for the ``app`` fixture; override in a module to change it."""
    return {}


@pytest.fixture
def app(database_url: str, app_config: dict[str, Any]) -> Iterator[Flask]:
    app = make_app(database_url, **app_config)
    with app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def session(app: Flask) -> Any:
    return db.session


@pytest.fixture
def user(app: Flask) -> Any:
    from tests.models import User

    hero = User(email="hero@example.com")
    db.session.add(hero)
    db.session.commit()
    return hero


@pytest.fixture
def uuid_app_config() -> dict[str, Any]:
    """Extra configuration for ``uuid_app``; override in a module to change it."""
    return {}


@pytest.fixture
def uuid_app(database_url: str, uuid_app_config: dict[str, Any]) -> Iterator[Flask]:
    """An app on the separate UUID-keyed ``SQLAlchemy``/``Geneva`` of tests/uuid_models.py."""
    from tests.uuid_models import uuid_db, uuid_geneva

    app = Flask("geneva_uuid_tests")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        TESTING=True,
        GENEVA_BROKER_URL="memory://",
        **uuid_app_config,
    )
    uuid_db.init_app(app)
    uuid_geneva.init_app(app)
    with app.app_context():
        uuid_db.drop_all()
        uuid_db.create_all()
        yield app
        uuid_db.session.remove()
        uuid_db.drop_all()
        for engine in uuid_db.engines.values():
            engine.dispose()


@pytest.fixture(params=SERVER_DATABASES)
def server_database_url(request: pytest.FixtureRequest) -> str:
    """This run's PostgreSQL database, then its MariaDB database."""
    prefix = "pg" if request.param == "postgresql" else request.param
    return str(request.getfixturevalue(f"{prefix}_database_url"))
