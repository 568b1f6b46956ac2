"""The relay's LISTEN connection is made like every connection of the app's engine.

PostgreSQL only (SQLite has no LISTEN). The engine here is given ``connect_args`` through
``SQLALCHEMY_ENGINE_OPTIONS``, as an app gives SSL settings; ``application_name`` stands
for them because PostgreSQL shows it in ``pg_stat_activity``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.e2e_support import wait_until
from tests.models import db

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

APPLICATION_NAME = f"geneva-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"application_name": APPLICATION_NAME}}
    }


def _listening_backend(app: Flask) -> Any:
    state = app.extensions["geneva"]
    wait_until(lambda: state.relay._listener is not None, message="the LISTEN connection")
    pid = state.relay._listener.info.backend_pid
    row = db.session.execute(
        sa.text("SELECT application_name, query FROM pg_stat_activity WHERE pid = :pid"),
        {"pid": pid},
    ).one()
    db.session.rollback()
    return row


def test_the_listen_connection_is_made_with_the_engine_s_connect_args(app: Flask) -> None:
    state = app.extensions["geneva"]
    state.start_relay()
    try:
        backend = _listening_backend(app)
        assert backend.application_name == APPLICATION_NAME
        assert backend.query == "LISTEN geneva_outbox"
    finally:
        state.stop_relay()


def test_the_listen_connection_takes_no_place_in_the_engine_s_pool(app: Flask) -> None:
    state = app.extensions["geneva"]
    db.session.remove()
    pool = db.engine.pool
    state.start_relay()
    try:
        _listening_backend(app)
        db.session.remove()
        # The relay listens before its first pass, which holds a pool connection for a
        # moment; once the pass ends, the listening connection is the only one it keeps.
        wait_until(
            lambda: pool.checkedout() == 0,  # type: ignore[attr-defined]
            timeout=10,
            message="the relay to give its pool connection back while it listens",
        )
    finally:
        state.stop_relay()
