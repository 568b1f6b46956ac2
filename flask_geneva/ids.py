"""The one parser of ids and numbers that come from outside.

Workflow and execution ids arrive as text in URLs and on the command line, and as JSON
values in step messages; page sizes and cursors arrive in URLs. Each is checked here
before it reaches ``int()`` or the database: only ASCII digits (``str.isdigit()`` also
accepts ``"²"`` and Arabic-Indic digits), a bounded length (``int()`` refuses more than 4,300
digits, and a database refuses a key beyond BIGINT), or a UUID when the keys are UUIDs.
A malformed value raises :class:`~flask_geneva.errors.InvalidInputError` (a
``ValueError``) whose message names it, shortened.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from flask_geneva.errors import InvalidInputError
from flask_geneva.text import QUOTED_VALUE_LENGTH, quoted

#: The largest key a BIGINT column holds; integer ids run from 0 to this.
MAX_KEY: Final = 2**63 - 1
#: Integer text longer than this is refused before ``int()`` reads it (``MAX_KEY`` has
#: 19 digits; a few leading zeros are tolerated).
MAX_INTEGER_TEXT_LENGTH: Final = 32


class IdOutOfRangeError(InvalidInputError):
    """An integer id written correctly that no BIGINT key can hold: no row has it."""


def parse_integer(text: str, *, name: str, minimum: int = 0, maximum: int = MAX_KEY) -> int:
    """A whole number written in ASCII digits, within ``minimum`` … ``maximum``.

    ``name`` says in the error what the number is (``"limit"``, ``"workflow id"``).
    Surrounding whitespace is ignored; a sign, a decimal point or any other character is
    refused.
    """
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()):
        raise InvalidInputError(
            f"{name} must be a whole number from {minimum} to {maximum}; {quoted(text)} is not one"
        )
    if len(stripped) > MAX_INTEGER_TEXT_LENGTH or not minimum <= int(stripped) <= maximum:
        raise InvalidInputError(
            f"{name} must be a whole number from {minimum} to {maximum}; "
            f"{quoted(text)} is out of range"
        )
    return int(stripped)


def parse_id(value: Any, *, uuid_keys: bool, what: str = "workflow") -> int | uuid.UUID:
    """A primary key given as text (or as an int / UUID already), in the key's type.

    Integer keys are whole numbers from 0 to :data:`MAX_KEY`; with ``uuid_keys`` a key is
    a UUID in any form :class:`uuid.UUID` reads. ``what`` names the kind of id in the
    error (``"workflow"``, ``"execution"``).
    """
    if uuid_keys:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str) and len(value) <= 2 * QUOTED_VALUE_LENGTH:
            try:
                return uuid.UUID(value.strip())
            except ValueError:
                pass
        raise InvalidInputError(f"{what} ids are UUIDs; {quoted(value)} is not one")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= MAX_KEY:
            return value
        raise IdOutOfRangeError(
            f"{what} ids are whole numbers from 0 to {MAX_KEY}; {quoted(value)} is out of range"
        )
    text = value.strip() if isinstance(value, str) else None
    if text is None or not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit()
        raise InvalidInputError(f"{what} ids are whole numbers; {quoted(value)} is not one")
    if len(text) > MAX_INTEGER_TEXT_LENGTH or int(text) > MAX_KEY:
        raise IdOutOfRangeError(
            f"{what} ids are whole numbers from 0 to {MAX_KEY}; {quoted(value)} is out of range"
        )
    return int(text)


def parse_workflow_id(geneva: Any, value: Any) -> int | uuid.UUID:
    """A workflow id from a URL or the command line, in the primary key's type."""
    return parse_id(value, uuid_keys=geneva.uuid_primary_keys, what="workflow")


def parse_execution_id(geneva: Any, value: Any) -> int | uuid.UUID:
    """The execution id a step message carries (an int, or a UUID as text).

    A message is JSON, so only an ``int`` (not a ``bool``), the id's text, or a UUID
    (with UUID keys) is an id; anything else raises :class:`InvalidInputError` saying
    what the message carried.
    """
    try:
        if not geneva.uuid_primary_keys and not isinstance(value, int | str):
            raise InvalidInputError("not an id")
        return parse_id(value, uuid_keys=geneva.uuid_primary_keys, what="execution")
    except InvalidInputError:
        kind = "a UUID as text" if geneva.uuid_primary_keys else "an integer id"
        raise InvalidInputError(f"a step message must carry {kind}, got {quoted(value)}") from None


def parse_hero_key(python_type: type, text: str) -> Any:
    """A hero id stored as text, back in its primary key's Python type.

    Integer keys go through :func:`parse_integer` (any BIGINT, negative ones included:
    an application may have them); UUID keys through :class:`uuid.UUID`; other types are
    built from the text.
    """
    if python_type is str:
        return text
    if python_type is uuid.UUID:
        return parse_id(text, uuid_keys=True, what="hero")
    if python_type is int:
        negative = text.strip().startswith("-")
        digits = text.strip()[1:] if negative else text
        number = parse_integer(digits, name="a hero id", maximum=MAX_KEY + negative)
        return -number if negative else number
    return python_type(text)
