"""Steps that wait for a signal: ``wait_for``, ``timeout`` and ``on_timeout``.

A step defined with ``wait_for`` runs only when a matching signal has arrived (or its
timeout has ended). :class:`SignalMatcher` matches by name and a predicate; a plain name
matches every signal of that name. :func:`signal_wait_from_options` reads the three step
options; the DSL calls it while it builds a class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from flask_geneva.errors import StepConfigurationError
from flask_geneva.policies import to_timedelta

#: What ``on_timeout`` may say happens when the timeout ends without a matching signal.
ON_TIMEOUT_ACTIONS: Final = ("run", "skip", "cancel", "pause")

#: The longest signal name (the ``name`` column of ``geneva_signals``).
NAME_LENGTH: Final = 255

#: The step options this module reads.
SIGNAL_OPTIONS: Final = frozenset({"wait_for", "timeout", "on_timeout"})


@dataclass(frozen=True)
class SignalMatcher:
    """Match signals by ``name`` and ``predicate(workflow, signal) -> bool``.

    ``@step(wait_for=SignalMatcher("paid", lambda wf, sig: sig.payload["order"] == wf.id))``
    waits for the oldest pending ``paid`` signal the predicate accepts. The predicate
    runs in the worker, under the workflow's lock, before the step is claimed; one that
    raises for a signal does not match that signal (a warning is logged).
    """

    name: str
    predicate: Callable[[Any, Any], Any] | None = None

    def __post_init__(self) -> None:
        try:
            check_signal_name(self.name, "SignalMatcher")
        except ValueError as error:
            raise StepConfigurationError(str(error)) from None
        if self.predicate is not None and not callable(self.predicate):
            raise StepConfigurationError(
                f"SignalMatcher({self.name!r}): the predicate must be a callable(workflow, "
                f"signal), got {self.predicate!r}"
            )

    def matches(self, workflow: Any, signal: Any) -> bool:
        """Whether ``signal`` (of this name) is one the step takes."""
        if signal.name != self.name:
            return False
        return self.predicate is None or bool(self.predicate(workflow, signal))


@dataclass(frozen=True)
class SignalWait:
    """How a step waits: for which signals, for how long, and what a timeout does."""

    matcher: SignalMatcher
    #: How long the step waits once it is scheduled; None waits for ever.
    timeout: timedelta | None = None
    on_timeout: str = "run"

    @property
    def name(self) -> str:
        return self.matcher.name


def check_signal_name(name: Any, where: str) -> str:
    """A signal name: a non-empty string that fits the ``name`` column."""
    if not isinstance(name, str) or not name or len(name) > NAME_LENGTH or "\x00" in name:
        from flask_geneva.text import quoted  # a long name is shortened, as a long key is

        raise ValueError(
            f"{where}: a signal name must be a non-empty string of at most {NAME_LENGTH} "
            f"characters, without NUL, got {quoted(name)}"
        )
    return name


def signal_wait_from_options(
    options: dict[str, Any], here: str, *, wait_given: bool
) -> SignalWait | None:
    """Pop ``wait_for``, ``timeout`` and ``on_timeout`` from a step's ``options``."""
    wait_for = options.pop("wait_for", None)
    timeout = options.pop("timeout", None)
    on_timeout = options.pop("on_timeout", None)
    if wait_for is None:
        for option, value in (("timeout", timeout), ("on_timeout", on_timeout)):
            if value is not None:
                raise StepConfigurationError(
                    f"{here}: {option} only applies with wait_for (the signal to wait for)"
                )
        return None
    if wait_given:
        raise StepConfigurationError(
            f"{here}: give wait or wait_for, not both (a step that waits for a signal "
            f"waits up to its timeout instead)"
        )
    if isinstance(wait_for, str):
        try:
            matcher = SignalMatcher(check_signal_name(wait_for, f"{here}: wait_for"))
        except (ValueError, StepConfigurationError) as error:
            raise StepConfigurationError(str(error)) from None
    elif isinstance(wait_for, SignalMatcher):
        matcher = wait_for
    else:
        raise StepConfigurationError(
            f"{here}: wait_for takes a signal name or a flask_geneva.SignalMatcher, "
            f"got {wait_for!r}"
        )
    limit = None
    if timeout is not None:
        limit = to_timedelta(timeout, f"{here}: timeout")
        if limit <= timedelta(0):
            raise StepConfigurationError(f"{here}: timeout must be > 0, got {timeout!r}")
    action = "run" if on_timeout is None else on_timeout
    if action not in ON_TIMEOUT_ACTIONS:
        raise StepConfigurationError(
            f"{here}: on_timeout must be one of {', '.join(map(repr, ON_TIMEOUT_ACTIONS))}, "
            f"got {on_timeout!r}"
        )
    return SignalWait(matcher, limit, action)
