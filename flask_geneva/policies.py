"""Exception policies: what happens to a workflow when a step raises.

A policy is chosen for each exception in this order: the step's own ``on_exception``,
then the class-level policies whose exception classes match (newest first), then the
newest class-level blanket policy, then the default: pause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from flask_geneva.errors import StepConfigurationError

#: The action names an exception policy may take.
ACTIONS: Final = ("pause", "cancel", "reattempt", "skip")
#: What happens when a ``"reattempt"`` policy runs out of reattempts.
TERMINAL_ACTIONS: Final = ("pause", "cancel")
#: How many consecutive policy reattempts a step gets unless told otherwise.
DEFAULT_MAX_REATTEMPTS: Final = 100

#: ``handler(workflow, exception)``: calls a flow-control method, or pauses by returning.
ExceptionHandler = Callable[[Any, BaseException], Any]


class _Unset:
    """Marks an option that was not passed, so explicit values can be told apart."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = _Unset()


#: The longest wait or timeout: a step due later could not be given a date.
LONGEST_WAIT = timedelta(days=365_250)


def to_timedelta(value: Any, what: str) -> timedelta:
    """Turn a wait given as a timedelta or a number of seconds into a timedelta (≥ 0)."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise StepConfigurationError(
            f"{what} must be a timedelta or a number of seconds, got {value!r}"
        )
    try:
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except (ValueError, OverflowError):  # NaN, an infinity, beyond timedelta's range
        delta = None
    if delta is None or delta > LONGEST_WAIT:  # later than any date can hold
        raise StepConfigurationError(
            f"{what} must be a finite number of seconds or a timedelta of at most "
            f"{LONGEST_WAIT.days} days (1,000 years), got {value!r}"
        )
    if delta < timedelta(0):
        raise StepConfigurationError(f"{what} must not be negative, got {value!r}")
    return delta


class ExceptionPolicy:
    """A reusable answer to "what now?" when a step raises.

    ``action`` is ``"pause"``, ``"cancel"``, ``"reattempt"``, ``"skip"`` or a handler
    ``callable(workflow, exception)`` that calls a flow-control method. ``wait`` is the
    delay before a reattempt. ``max_reattempts`` (``None`` = unlimited) and
    ``terminal_action`` (``"pause"`` or ``"cancel"``, applied when reattempts run out)
    belong to ``"reattempt"``; passing either with another action is a
    :class:`~flask_geneva.StepConfigurationError`.
    """

    __slots__ = ("action", "handler", "max_reattempts", "terminal_action", "wait")

    action: str
    handler: ExceptionHandler | None
    wait: timedelta
    max_reattempts: int | None
    terminal_action: str

    def __init__(
        self,
        action: str | ExceptionHandler,
        wait: timedelta | float | None = None,
        max_reattempts: int | _Unset | None = UNSET,
        terminal_action: str | _Unset = UNSET,
    ) -> None:
        if callable(action):
            self.action, self.handler = "handler", action
        elif isinstance(action, str) and action in ACTIONS:
            self.action, self.handler = action, None
        else:
            raise StepConfigurationError(
                f"exception action must be one of {', '.join(ACTIONS)} or a callable"
                f"(workflow, exception), got {action!r}"
            )
        if self.action != "reattempt":
            explicit = [
                name
                for name, value in (
                    ("max_reattempts", max_reattempts),
                    ("terminal_action", terminal_action),
                )
                if value is not UNSET
            ]
            if explicit:
                raise StepConfigurationError(
                    f"{' and '.join(explicit)} only apply to the 'reattempt' action, "
                    f"not to {self.describe()}"
                )
        if isinstance(max_reattempts, _Unset):
            max_reattempts = DEFAULT_MAX_REATTEMPTS
        if max_reattempts is not None and (
            isinstance(max_reattempts, bool)
            or not isinstance(max_reattempts, int)
            or max_reattempts < 0
        ):
            raise StepConfigurationError(
                f"max_reattempts must be a whole number ≥ 0 or None, got {max_reattempts!r}"
            )
        if isinstance(terminal_action, _Unset):
            terminal_action = "pause"
        if terminal_action not in TERMINAL_ACTIONS:
            raise StepConfigurationError(
                f"terminal_action must be 'pause' or 'cancel', got {terminal_action!r}"
            )
        self.wait = timedelta(0) if wait is None else to_timedelta(wait, "exception policy wait")
        self.max_reattempts = max_reattempts
        self.terminal_action = terminal_action

    def describe(self) -> str:
        """A short human description, for error messages and the UI."""
        if self.handler is not None:
            return f"handler {getattr(self.handler, '__qualname__', repr(self.handler))}"
        return repr(self.action)

    def __repr__(self) -> str:
        if self.action == "reattempt":
            return (
                f"ExceptionPolicy('reattempt', wait={self.wait!r}, "
                f"max_reattempts={self.max_reattempts!r}, "
                f"terminal_action={self.terminal_action!r})"
            )
        return f"ExceptionPolicy({self.describe()})"


def make_policy(
    value: Any,
    *,
    wait: Any = None,
    max_reattempts: int | _Unset | None = UNSET,
    terminal_action: str | _Unset = UNSET,
) -> ExceptionPolicy:
    """Build a policy from what a user wrote for ``on_exception``."""
    if isinstance(value, ExceptionPolicy):
        if max_reattempts is not UNSET or terminal_action is not UNSET or wait is not None:
            raise StepConfigurationError(
                "give wait, max_reattempts and terminal_action to the ExceptionPolicy itself, "
                "not beside it"
            )
        return value
    return ExceptionPolicy(
        value, wait=wait, max_reattempts=max_reattempts, terminal_action=terminal_action
    )


@dataclass(frozen=True)
class ClassPolicy:
    """A class-level ``on_exception``: for some exception classes, or blanket when empty."""

    exception_classes: tuple[type[BaseException], ...]
    policy: ExceptionPolicy

    @property
    def is_blanket(self) -> bool:
        return not self.exception_classes

    def matches(self, exc: BaseException) -> bool:
        return isinstance(exc, self.exception_classes)


DEFAULT_POLICY: Final = ExceptionPolicy("pause")


def resolve_policy(
    step_policy: ExceptionPolicy | None,
    class_policies: Sequence[ClassPolicy],
    exc: BaseException,
) -> ExceptionPolicy:
    """Choose the policy for ``exc``; ``class_policies`` are given oldest first."""
    if step_policy is not None:
        return step_policy
    for class_policy in reversed(class_policies):
        if not class_policy.is_blanket and class_policy.matches(exc):
            return class_policy.policy
    for class_policy in reversed(class_policies):
        if class_policy.is_blanket:
            return class_policy.policy
    return DEFAULT_POLICY
