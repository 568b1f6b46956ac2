"""The one parser of ids and numbers from outside (flask_geneva.ids), and the text
bounds beside it (flask_geneva.text)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from flask_geneva.errors import GenevaError, InvalidInputError
from flask_geneva.ids import (
    MAX_KEY,
    parse_execution_id,
    parse_hero_key,
    parse_integer,
    parse_workflow_id,
)
from flask_geneva.jsonvalues import json_safe, non_finite_path
from flask_geneva.text import cut, excerpt, printable, quoted, storable

INTEGER_KEYS = SimpleNamespace(uuid_primary_keys=False)
UUID_KEYS = SimpleNamespace(uuid_primary_keys=True)


def test_the_error_is_a_geneva_error_and_a_value_error() -> None:
    assert issubclass(InvalidInputError, GenevaError)
    assert issubclass(InvalidInputError, ValueError)


@pytest.mark.parametrize(
    ("text", "key"), [("1", 1), (" 42 ", 42), ("0", 0), (str(MAX_KEY), MAX_KEY), ("007", 7)]
)
def test_workflow_ids_are_ascii_whole_numbers_in_the_bigint_range(text: str, key: int) -> None:
    assert parse_workflow_id(INTEGER_KEYS, text) == key


@pytest.mark.parametrize(
    "text", ["", "-1", "+1", "1.5", "1e3", "0x10", "²", "\u0661", "1 2", "\x1b[2J", "9" * 5000]
)
def test_anything_else_is_refused_with_a_short_message(text: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_workflow_id(INTEGER_KEYS, text)
    message = str(raised.value)
    assert message.startswith("workflow ids are whole numbers")
    assert len(message) < 200
    assert message.isprintable()


def test_uuid_ids() -> None:
    key = uuid.uuid4()
    assert parse_workflow_id(UUID_KEYS, str(key).upper()) == key
    assert parse_workflow_id(UUID_KEYS, key) == key
    for bad in ("1", "x" * 5000, 1):
        with pytest.raises(InvalidInputError, match="workflow ids are UUIDs"):
            parse_workflow_id(UUID_KEYS, bad)


@pytest.mark.parametrize(
    "bad",
    [None, "", "twelve", "12abc", "1.5", 3.5, True, {"id": 1}, [1], 2**70, -1, "9" * 10**6],
)
def test_step_messages_carry_an_int_or_its_text(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="a step message must carry an integer id") as e:
        parse_execution_id(INTEGER_KEYS, bad)
    assert len(str(e.value)) < 200
    assert parse_execution_id(INTEGER_KEYS, 5) == 5
    assert parse_execution_id(INTEGER_KEYS, " 5 ") == 5


def test_step_messages_with_uuid_keys() -> None:
    key = uuid.uuid4()
    assert parse_execution_id(UUID_KEYS, str(key)) == key
    with pytest.raises(InvalidInputError, match="a step message must carry a UUID as text"):
        parse_execution_id(UUID_KEYS, 5)


def test_bounded_numbers() -> None:
    assert parse_integer("50", name="limit", minimum=1, maximum=100) == 50
    for bad, why in [("0", "out of range"), ("101", "out of range"), ("²", "is not one")]:
        with pytest.raises(InvalidInputError, match=why):
            parse_integer(bad, name="limit", minimum=1, maximum=100)
    with pytest.raises(InvalidInputError, match="out of range"):
        parse_integer("9" * 5000, name="limit", minimum=1, maximum=100)


def test_hero_keys() -> None:
    assert parse_hero_key(int, "42") == 42
    assert parse_hero_key(int, "-42") == -42
    assert parse_hero_key(str, "../x") == "../x"
    key = uuid.uuid4()
    assert parse_hero_key(uuid.UUID, str(key)) == key
    for bad in ("\u0661", "9" * 5000, "1.0", ""):
        with pytest.raises(ValueError):
            parse_hero_key(int, bad)


def test_text_helpers() -> None:
    assert printable("a\x1b[2J\nb\u202e") == "a\\x1b[2J\\nb\\u202e"
    assert quoted("x" * 100).startswith("'xxxx") and "(100 characters)" in quoted("x" * 100)
    assert len(cut("y" * 10**6, 1000)) <= 1000
    assert cut("short", 1000) == "short"
    assert excerpt("z" * 1000, 300) == "z" * 299 + "…"
    assert storable("a\x00b", 100) == "a\\x00b"


def test_non_finite_numbers_are_found_and_made_safe() -> None:
    data = {"a": [1.0, {"b": float("nan")}], "c": float("-inf")}
    assert non_finite_path(data) == "data['a'][1]['b']"
    assert non_finite_path({"ok": [1.5, "NaN"]}) is None
    assert json_safe(data) == {"a": [1.0, {"b": "NaN"}], "c": "-Infinity"}
