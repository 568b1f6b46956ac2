"""The signal parts of ``flask geneva``: reading ``--payload``, the line ``signal``
prints, and what ``show`` says a workflow waits for and which signals it has.

Pure functions over loaded rows (the commands in :mod:`flask_geneva.cli` do the I/O);
every value from the database is escaped with :func:`~flask_geneva.text.printable` and
bounded, as everywhere in the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from flask_geneva.errors import InvalidInputError
from flask_geneva.queries.signals import (
    KEPT,
    SignalList,
    Waiting,
    payload_excerpt,
    signal_status,
)
from flask_geneva.text import printable, quoted
from flask_geneva.timeutil import as_utc, utcnow
from flask_geneva.ui.present import format_duration

#: The most characters of a payload ``show`` prints per signal.
CLI_PAYLOAD_EXCERPT_LENGTH: Final = 60
#: The most signals ``show`` lists (the newest).
CLI_SIGNAL_LIMIT: Final = 50
#: How many characters of a signal name or key a line quotes.
CLI_NAME_LENGTH: Final = 60


def parse_payload(text: str | None) -> Any:
    """``--payload``: JSON text, read with the standard library. None when not given.

    :raises InvalidInputError: the text is not JSON (the message says where it stops
        making sense), or it nests too deeply to read.
    """
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"--payload is not JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno} (character {error.pos + 1}) of {quoted(text)}"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            "--payload is not JSON this reader can take: it nests too deeply"
        ) from None
    except ValueError as error:  # for example an integer of more digits than int() reads
        raise InvalidInputError(f"--payload is not JSON this reader can take: {error}") from None


def sent_line(
    workflow: Any, signal: Any, woke: str | None, waits: Mapping[str, Any] | None = None
) -> str:
    """What ``flask geneva signal`` prints: one line.

    ``woke``: the step that waits for this signal and was made due now, if any.
    ``waits``: the workflow class's signal waits by step name (each with ``.name`` and
    ``.matcher``), None when the class is not defined here.
    """
    name = quoted(signal.name, CLI_NAME_LENGTH)
    target = f"{printable(workflow.workflow_class)} #{workflow.id}"
    if signal.duplicate:
        key = quoted(signal.idempotency_key, CLI_NAME_LENGTH)
        return (
            f"signal {name} for {target} was stored before (idempotency key {key}, "
            f"signal #{signal.id}, {status_text(signal_status(signal, workflow.state))}); "
            f"nothing new stored"
        )
    line = f"signal {name} stored for {target} (signal #{signal.id})"
    wait = None if waits is None or woke is None else waits.get(woke)
    if waits is not None and signal.name not in {w.name for w in waits.values()}:
        line = (
            f"signal {name} stored for {target} (signal #{signal.id}), but no step of "
            f"{printable(workflow.workflow_class)} waits for {name}"
        )
        names = list(dict.fromkeys(w.name for w in waits.values()))
        if names:
            listed = ", ".join(quoted(n, CLI_NAME_LENGTH) for n in names)
            line += f" (its steps wait for: {listed})"
        else:
            line += " (none of its steps waits for a signal)"
    elif woke is not None and wait is not None and wait.matcher.predicate is not None:
        line += f"; step {printable(woke)} is woken to check it"
    elif woke is not None:
        line += f"; step {printable(woke)} waits for it and is due now"
    elif str(workflow.state) == "paused":
        line += "; the workflow is paused: pending until it is resumed and a step takes it"
    else:
        line += "; pending until a step waits for it"
    return line


def waiting_line(
    waiting: Waiting,
    paused: bool,
    when: Callable[[datetime | None], str],
    *,
    pending: int = 0,
    checks: bool = False,
) -> str:
    """``show``'s line saying what the workflow waits for. ``pending``: free pending
    signals of that name (a paused workflow's step takes one at once after resume);
    ``checks``: its matcher has a predicate (it checks them rather than takes one)."""
    step = printable(waiting.execution.step_name)
    name = quoted(waiting.signal, CLI_NAME_LENGTH)
    if paused and pending:
        return f"{step} {_at_once(pending, name, checks)} after resume"
    until = f"until {when(waiting.until)}" if waiting.until is not None else "no timeout"
    line = f"{step} waits for {name} since {when(waiting.since)}, {until}"
    deadline = as_utc(waiting.until)
    if paused and deadline is not None and deadline <= utcnow():
        return line + " (passed: it times out when resumed)"
    return line + (" (after resume)" if paused else "")


def resume_line(step_name: str, wait: Any, pending: int, checks: bool) -> str:
    """``show``'s line for a paused workflow without a kept execution whose step waits
    for a signal (``wait``, a :class:`~flask_geneva.waiting.SignalWait`)."""
    step = printable(step_name)
    name = quoted(wait.name, CLI_NAME_LENGTH)
    if pending:
        return f"{step} {_at_once(pending, name, checks)} after resume"
    timeout = (
        "no timeout"
        if wait.timeout is None
        else f"a fresh timeout of {format_duration(wait.timeout)}"
    )
    return f"{step} waits again for {name} after resume ({timeout})"


def _at_once(pending: int, name: str, checks: bool) -> str:
    signals = f"{pending} pending {name} signal" + ("s" if pending > 1 else "")
    return f"is woken at once to check {signals}" if checks else f"runs at once ({signals})"


def status_text(status: str) -> str:
    """A signal's status as ``show`` and ``signal`` print it."""
    return "kept (workflow ended)" if status == KEPT else status


def signal_rows(
    signals: SignalList, when: Callable[[datetime | None], str], workflow_state: Any = None
) -> list[list[str]]:
    """``show``'s signal table: a header, then one row per signal, newest first."""
    rows = [["ID", "NAME", "STATE", "CREATED", "CONSUMED", "KEY", "EXECUTION", "PAYLOAD"]]
    for signal in signals.signals:
        key = signal.idempotency_key
        rows.append(
            [
                f"#{signal.id}",
                quoted(signal.name, CLI_NAME_LENGTH),
                status_text(signal_status(signal, workflow_state)),
                when(signal.created_at),
                when(signal.consumed_at),
                "-" if key is None else quoted(key, CLI_NAME_LENGTH),
                "-" if signal.execution_id is None else f"#{signal.execution_id}",
                printable(payload_excerpt(signal.payload, CLI_PAYLOAD_EXCERPT_LENGTH)),
            ]
        )
    return rows
