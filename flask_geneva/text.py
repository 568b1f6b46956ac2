"""Text that came from data, made safe to show and bounded to store.

Step errors, hero ids, step and class names and step messages come from outside the
code that prints them: a hostile (or merely careless) value must not rewrite an
operator's terminal, forge log lines, or fill the database and the pages. These pure
functions escape control characters and cut text to documented bounds.
"""

from __future__ import annotations

from typing import Any, Final

#: The most characters of a step error's message stored on its execution.
MAX_ERROR_MESSAGE_LENGTH: Final = 10_000
#: The most characters of a step error's backtrace stored on its execution.
MAX_ERROR_BACKTRACE_LENGTH: Final = 50_000
#: The most characters of one value interpolated into a ``flask_geneva`` log line.
MAX_LOGGED_VALUE_LENGTH: Final = 2_000
#: The most characters of an error message the status UI's lists show (the workflow
#: page shows the whole stored message).
LIST_ERROR_EXCERPT_LENGTH: Final = 300
#: How many characters of a refused value an error message quotes.
QUOTED_VALUE_LENGTH: Final = 40


def printable(value: Any) -> str:
    """``str(value)`` with every non-printable character escaped as Python would write it.

    Newlines, ESC, BEL, NUL, bidirectional overrides and other control or format
    characters become ``\\n``, ``\\x1b``, ``\\u202e``...; the text stays on one line and
    cannot move a terminal's cursor or colour it.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def cut(text: str, limit: int) -> str:
    """``text`` when it has at most ``limit`` characters, else its start and end with a
    note of what was left out in between (the result has at most ``limit`` characters).

    The end of a backtrace (the innermost frame and the error) matters as much as its
    start, so both are kept.
    """
    if len(text) <= limit:
        return text
    note = f"\n[… {len(text) - limit:,} characters left out …]\n"
    # The note's own length is taken from the kept text, so the total stays in bounds.
    keep = max(limit - len(note) - 10, 0)
    head = keep * 2 // 3
    tail = keep - head
    left_out = len(text) - head - tail
    note = f"\n[… {left_out:,} characters left out …]\n"
    return text[:head] + note + (text[-tail:] if tail else "")


def excerpt(text: str | None, limit: int = LIST_ERROR_EXCERPT_LENGTH) -> str:
    """The first ``limit`` characters of ``text`` (``…`` marks a cut), for lists."""
    if not text:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def shorten(value: Any, limit: int = QUOTED_VALUE_LENGTH) -> str:
    """``value`` as printable text, cut after ``limit`` characters with its length noted."""
    text = str(value)
    if len(text) > limit:
        return f"{printable(text[:limit])}… ({len(text):,} characters)"
    return printable(text)


def quoted(value: Any, limit: int = QUOTED_VALUE_LENGTH) -> str:
    """``repr(value)`` for an error message, shortened to about ``limit`` characters.

    ``repr`` escapes control characters, so a hostile value cannot break the line it is
    quoted in; a long one is cut and says how long it was.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    text = printable(repr(value))
    if len(text) > limit + 2:
        return f"{text[:limit]}… ({len(text):,} characters)"
    return text


def storable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and without NUL (which PostgreSQL's text
    columns refuse), ready to store."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return cut(text, limit)


def bounded_error_message(message: str) -> str:
    """A step error's message as stored: at most :data:`MAX_ERROR_MESSAGE_LENGTH`."""
    return storable(message, MAX_ERROR_MESSAGE_LENGTH)


def bounded_backtrace(backtrace: str) -> str:
    """A step error's backtrace as stored: at most :data:`MAX_ERROR_BACKTRACE_LENGTH`."""
    return storable(backtrace, MAX_ERROR_BACKTRACE_LENGTH)
