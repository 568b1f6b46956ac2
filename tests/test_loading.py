"""Canary: the one SQLAlchemy internal that building objects from known rows needs.

``flask_geneva.loading.attach_as_loaded`` makes an inline run's workflow and execution
objects from the row its finalize returned, without a ``SELECT``. It stays on public API
(``make_transient_to_detached``, ``Session.merge(load=False)``) but for
``Mapper.class_manager.new_instance()``, which makes an instance without calling its
``__init__``, as a load does. If a SQLAlchemy upgrade changes that, this test says so.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from flask_geneva.loading import attach_as_loaded, mapped_columns
from tests.models import User, db


def test_class_manager_new_instance_is_still_there() -> None:
    manager = sa.orm.class_mapper(User).class_manager
    assert callable(getattr(manager, "new_instance", None)), (
        "SQLAlchemy's Mapper.class_manager.new_instance() is gone: "
        "flask_geneva.loading.attach_as_loaded needs another way to make an instance "
        "without calling __init__"
    )
    instance = manager.new_instance()
    assert isinstance(instance, User)
    assert sa.inspect(instance).transient


def test_attached_objects_are_persistent_clean_and_loaded(app: Any) -> None:
    """What an inline run relies on: the object is in the session as persistent, has no
    pending change, and its load listeners ran; no statement was sent."""
    hero = User(email="known@example.com")
    db.session.add(hero)
    db.session.commit()
    values = {key: getattr(hero, key) for key, _ in mapped_columns(User)}
    db.session.expunge_all()
    loaded: list[Any] = []
    statements: list[str] = []

    def on_load(target: Any, context: Any) -> None:
        loaded.append(target)

    def on_statement(*args: Any) -> None:
        statements.append(args[2])

    event.listen(User, "load", on_load)
    event.listen(db.engine, "before_cursor_execute", on_statement)
    try:
        attached = attach_as_loaded(db.session, User, values)
    finally:
        event.remove(User, "load", on_load)
        event.remove(db.engine, "before_cursor_execute", on_statement)
    state = sa.inspect(attached)
    assert state.persistent and not state.modified
    assert loaded == [attached]
    assert statements == []
    assert attached.email == "known@example.com"
    attached.counter = 5  # a change afterwards is flushed as an update of that row
    db.session.commit()
    assert db.session.scalar(sa.select(User.counter).where(User.id == values["id"])) == 5
