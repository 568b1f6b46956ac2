"""What JSON can hold: finding the value in ``data`` that keeps it from being JSON.

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which no JSON
parser reads back (``JSON.parse`` refuses them, PostgreSQL's ``json`` type too), so
geneva serialises workflow data with ``allow_nan=False`` and, when that fails, says
which value was refused.
"""

from __future__ import annotations

import math
from typing import Any


def non_finite_path(value: Any, path: str = "data") -> str | None:
    """The path (``data['a'][0]``) of the first NaN or infinite float in ``value``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_path(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = non_finite_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def json_problem(value: Any, error: Exception, path: str = "data") -> str:
    """Why ``value`` is not JSON, for an error message: the non-finite number and where
    it is, with what to do instead, or else ``json``'s own message."""
    where = non_finite_path(value, path)
    if where is None:
        return str(error)
    return (
        f"{where} is a non-finite number, which JSON cannot hold; "
        f"store None or a string (for example 'NaN') instead"
    )


def json_safe(value: Any) -> Any:
    """``value`` with each non-finite float replaced by its name (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``), so that JSON written from it parses anywhere.

    For data stored before non-finite numbers were refused.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value
