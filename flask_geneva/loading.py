"""ORM objects built from rows the hot path has already read.

The finalize of an inline run returns the workflow's row as it leaves it, and knows
every value of the next execution it inserts. Turning those into the objects the next
step's body gets saves loading them again through the ORM, and gives
the same objects: every mapped column set, in the session as persistent and unmodified,
the mapper's ``load`` event sent (so mutable-type tracking, timestamp conversion and an
application's own load listeners run as for a loaded object).

It uses SQLAlchemy's public API for exactly this (``make_transient_to_detached`` and
``Session.merge(load=False)``, the way cached objects are put back into a session);
the one internal it needs, a mapped class's ``class_manager.new_instance()`` (an
instance made without calling ``__init__``, as a load makes it), is named by a canary
test (``tests/test_loading.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached

_COLUMNS: weakref.WeakKeyDictionary[type, tuple[tuple[str, Any], ...]] = (
    weakref.WeakKeyDictionary()
)
_COVERED: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def mapped_columns(model: type) -> tuple[tuple[str, Any], ...]:
    """``(attribute name, column)`` of each column a mapped class maps."""
    columns = _COLUMNS.get(model)
    if columns is None:
        mapper: sa.orm.Mapper[Any] = sa.inspect(model)
        columns = tuple((attribute.key, attribute.columns[0]) for attribute in mapper.column_attrs)
        _COLUMNS[model] = columns
    return columns


def covers(model: type, columns: tuple[Any, ...]) -> bool:
    """Whether a row of ``columns`` holds every column ``model`` maps (a class given a
    column after the statements were built does not); decided once per class."""
    known = _COVERED.get(model)
    if known is None:
        selected = {id(column) for column in columns}
        known = _COVERED[model] = all(id(c) in selected for _, c in mapped_columns(model))
    return known


def values_from(model: type, row: Mapping[Any, Any]) -> dict[str, Any]:
    """The attribute values of ``model`` in a row keyed by column."""
    return {key: row[column] for key, column in mapped_columns(model)}


def attach_as_loaded(session: Session, model: type, values: dict[str, Any]) -> Any:
    """An object of ``model`` for a row whose every column value is known, in ``session``
    as if it had just been loaded, without reading the row."""
    mapper: sa.orm.Mapper[Any] = sa.orm.class_mapper(model)
    instance = mapper.class_manager.new_instance()
    sa.inspect(instance).dict.update(values)  # as a load sets them, with no history
    make_transient_to_detached(instance)
    # The session's copy, persistent and unmodified, its load event sent: no SELECT.
    return session.merge(instance, load=False)
