"""How the status UI writes times, durations, counts and step options for people.

Pure functions, with no Flask in them; the blueprint hands them to its templates.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask_geneva.queries.counts import Count
from flask_geneva.timeutil import as_utc

_UNITS = (
    (365 * 86400, "y"),
    (30 * 86400, "mo"),
    (86400, "d"),
    (3600, "h"),
    (60, "min"),
    (1, "s"),
)


def absolute_time(value: datetime | None) -> str:
    """``2026-11-25 23:07:15 UTC`` (empty for None)."""
    value = as_utc(value)
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with microseconds, or None."""
    value = as_utc(value)
    return None if value is None else value.isoformat()


def short_span(seconds: float) -> str:
    """A span in its largest unit: ``4 s``, ``3 min``, ``2 h``, ``5 d``, ``2 mo``, ``1 y``."""
    seconds = abs(seconds)
    for size, unit in _UNITS:
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "0 s"


def relative_time(value: datetime | None, now: datetime) -> str:
    """``3 min ago``, ``in 2 h`` or ``just now`` (empty for None)."""
    value = as_utc(value)
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    span = short_span(seconds)
    return f"{span} ago" if seconds > 0 else f"in {span}"


def format_duration(value: float | timedelta | None) -> str:
    """``120 ms``, ``4.2 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h`` (empty for None)."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = int(seconds)
    for size, unit, smaller, smaller_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ):
        if whole >= size:
            rest = (whole % size) // smaller
            return f"{whole // size} {unit}" + (f" {rest} {smaller_unit}" if rest else "")
    return f"{whole} s"  # pragma: no cover - unreachable


def format_number(value: int) -> str:
    """``1,234,567``."""
    return f"{value:,}"


def compact_number(value: int) -> str:
    """``812k``, ``1.2M``: for estimates, where more digits would pretend precision."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return format_number(value)


def count_text(count: Count) -> str:
    """``42``, or ``10,000+`` for a capped count."""
    if count.capped:
        return f"{format_number(count.value)}+"
    return format_number(count.value)


def count_title(count: Count) -> str:
    """A tooltip that explains a capped count; empty for an exact one."""
    if not count.capped:
        return "exact count"
    text = f"more than {format_number(count.value)}: counting stops there to stay fast"
    if count.estimate is not None:
        text += f"; PostgreSQL estimates {format_number(count.estimate)}"
    return text


def describe_condition(condition: Any) -> str:
    """A condition (``skip_if`` / ``only_if`` / ``cancel_if``) as the code wrote it."""
    if condition is None:
        return ""
    if isinstance(condition, bool | str):
        return repr(condition) if isinstance(condition, bool) else f"{condition}()"
    name = getattr(condition, "__qualname__", None) or getattr(condition, "__name__", None)
    return str(name) if name else repr(condition)


def describe_policy(policy: Any) -> str:
    """A step's ``on_exception`` policy in a few words (empty when it has none)."""
    if policy is None:
        return ""
    if getattr(policy, "action", None) == "reattempt":
        limit = "unlimited" if policy.max_reattempts is None else f"max {policy.max_reattempts}"
        wait = f", wait {format_duration(policy.wait)}" if policy.wait else ""
        return f"reattempt ({limit}{wait}, then {policy.terminal_action})"
    describe = getattr(policy, "describe", None)
    return str(describe()).strip("'") if callable(describe) else str(policy)


def short_source(location: str) -> str:
    """``/long/path/to/workflows.py:42`` → ``workflows.py:42``."""
    return location.replace("\\", "/").rsplit("/", 1)[-1]


def group_repeats(failures: list[tuple[Any, Any]]) -> list[tuple[Any, Any, int]]:
    """Fold consecutive failures of one step of one workflow with one error class.

    ``[(execution, workflow), ...]`` newest first → ``[(newest execution, workflow,
    how many), ...]``, so three reattempts of the same error take one line, not three.
    """
    grouped: list[tuple[Any, Any, int]] = []
    for execution, workflow in failures:
        if grouped:
            previous, previous_workflow, repeats = grouped[-1]
            if (
                previous_workflow.id == workflow.id
                and previous.step_name == execution.step_name
                and previous.error_class_name == execution.error_class_name
            ):
                grouped[-1] = (previous, previous_workflow, repeats + 1)
                continue
        grouped.append((execution, workflow, 1))
    return grouped


def safe_url(url: Any) -> str | None:
    """``url`` when it is an http(s) URL or a path on this site, else None.

    A host's hero-URL builder should never be able to put a ``javascript:`` link, or a
    link that a browser reads as another site, on an operator's page, whatever ends up
    in a hero id. Browsers drop tabs and newlines from URLs and read ``\\`` as ``/``, so
    ``/\\evil.example`` and ``/\\t/evil.example`` are ``//evil.example``: a URL with a
    control character, or a path whose second character is a slash or backslash, is
    refused.
    """
    if not isinstance(url, str) or not url:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    lowered = url.strip().lower()
    if lowered.startswith(("http://", "https://")):
        return url
    if url.startswith("/") and url[1:2] not in ("/", "\\"):
        return url
    return None


def is_path_safe_hero(hero_type: str, hero_id: str) -> bool:
    """Whether ``/heroes/<hero_type>/<hero_id>`` stays that path in a browser.

    A ``.`` or ``..`` segment would be resolved away (``%2e`` too, by the URL standard),
    a ``/`` in the type would shift the id, and an empty segment would be merged.
    """
    if "/" in hero_type or hero_type in (".", ".."):
        return False
    segments = hero_id.split("/")
    return all(segment not in ("", ".", "..") for segment in segments)
