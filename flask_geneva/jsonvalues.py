"""What JSON can hold: finding the value in ``data`` that keeps it from being JSON.

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which no JSON
parser reads back (``JSON.parse`` refuses them, PostgreSQL's ``json`` type too), so
geneva serialises workflow data with ``allow_nan=False`` and, when that fails, says
which value was refused. It also refuses what a database or a page could not take
back: strings with a lone surrogate (not UTF-8; MariaDB's JSON check refuses them) and
values nested deeper than :data:`MAX_JSON_DEPTH` (or containing themselves).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: How deep lists and dicts may nest in workflow data and signal payloads: MariaDB's
#: limit (its JSON check refuses a 32nd level), the lowest of the supported databases.
MAX_JSON_DEPTH = 31


class JSONTooLarge(ValueError):
    """JSON text longer than the limit given to :func:`json_text`."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes of JSON")
        #: The text's length in UTF-8 bytes.
        self.size = size


def too_deep_path(value: Any, path: str = "data", limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path of the first list or dict nested more than ``limit`` levels deep in
    ``value`` (a value that contains itself nests without end), or None."""
    if not isinstance(value, dict | list | tuple):
        return None
    # (container, its depth, its parent's entry, its key there): a path is only built
    # for the container that is too deep.
    stack: list[tuple[Any, int, Any, Any]] = [(value, 1, None, None)]
    while stack:
        entry = stack.pop()
        item, depth = entry[0], entry[1]
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if isinstance(child, dict | list | tuple):
                if depth >= limit:
                    return _path_to((child, depth + 1, entry, key), path)
                stack.append((child, depth + 1, entry, key))
    return None


def _path_to(entry: tuple[Any, int, Any, Any], root: str) -> str:
    keys = []
    while entry[2] is not None:
        keys.append(entry[3])
        entry = entry[2]
    return root + "".join(f"[{key!r}]" for key in reversed(keys))


def _too_deep(where: str) -> ValueError:
    return ValueError(
        f"{where} is nested more than {MAX_JSON_DEPTH} levels deep (or contains itself); "
        f"flatten it, or store it in a table of your own and keep its id"
    )


def json_text(value: Any, path: str = "data", max_bytes: int | None = None) -> str:
    """``value`` as JSON text (not ASCII-escaped: its length in UTF-8 is its size).

    :raises TypeError: ``value`` holds something of a type JSON has not.
    :raises JSONTooLarge: the text is longer than ``max_bytes`` in UTF-8.
    :raises ValueError: ``value`` is not JSON that every supported database stores and
        gives back (NaN or an infinity, a lone surrogate, nesting too deep).
    The messages name the value and say what to do.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        size = len(text.encode())
    except RecursionError:  # nested hundreds of levels deep
        raise _too_deep(too_deep_path(value, path) or path) from None
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        where = _path_of_string(value, path, bad) or path
        raise ValueError(
            f"{where} holds a string with a lone surrogate ({bad!r}), which is not UTF-8 "
            f"and which databases refuse; decode the text properly before storing it"
        ) from None
    except (TypeError, ValueError) as error:
        # It contains itself (json_problem's walk must not follow it), a value of a type
        # JSON has not, or NaN or an infinity.
        deep = too_deep_path(value, path)
        if deep is not None:
            raise _too_deep(deep) from None
        if isinstance(error, TypeError):
            raise TypeError(json_problem(value, error, path)) from None
        raise ValueError(json_problem(value, error, path)) from None
    if max_bytes is not None and size > max_bytes:
        raise JSONTooLarge(size)
    deep = too_deep_path(value, path)
    if deep is not None:
        raise _too_deep(deep)
    return text


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


def _path_of_string(value: Any, path: str, part: str) -> str | None:
    """The path of the first string (a value, or a key: the path of its dict) in
    ``value`` that contains ``part``."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if part in item:
                return where
        elif isinstance(item, dict):
            if any(isinstance(key, str) and part in key for key in item):
                return where
            stack.extend((child, f"{where}[{key!r}]") for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
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


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with each non-finite float replaced by its name (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``) and what nests deeper than :data:`MAX_JSON_DEPTH`
    replaced by a note, so that JSON written from it parses anywhere and writing it
    cannot exhaust the stack.

    For data stored before such values were refused.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict | list | tuple) and depth >= MAX_JSON_DEPTH:
        return f"(nested more than {MAX_JSON_DEPTH} levels deep: not shown)"
    if isinstance(value, dict):
        return {key: json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item, depth + 1) for item in value]
    return value
