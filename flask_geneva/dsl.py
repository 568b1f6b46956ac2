"""The step DSL: ``step``, ``cancel_if`` and ``on_exception`` in a workflow class body.

The class-body statements record what they were given in the namespace of the class being
defined; when the class is created, :func:`build_definition` turns those records, in the
order they were written, into a :class:`WorkflowDefinition` that extends the parent's.
Every mistake raises :class:`~flask_geneva.StepConfigurationError` at that moment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Final, overload

from flask_geneva.errors import StepConfigurationError
from flask_geneva.policies import (
    UNSET,
    ClassPolicy,
    ExceptionPolicy,
    _Unset,
    make_policy,
    to_timedelta,
)
from flask_geneva.waiting import SIGNAL_OPTIONS, SignalWait, signal_wait_from_options

#: Where the class-body statements leave their records in the class namespace.
PENDING_ATTRIBUTE: Final = "__geneva_pending__"

#: The keys ``step_job_options`` may hold, with the types their values must have.
JOB_OPTION_TYPES: Final[Mapping[str, type]] = {
    "queue_name": str,
    "priority": int,
    "time_limit": int,
}

#: A condition: a callable(workflow), the name of a workflow method, or a constant bool.
Condition = Callable[[Any], Any] | str | bool


@dataclass(frozen=True)
class StepDefinition:
    """One step of a workflow class, as the DSL defined it."""

    name: str
    function: Callable[[Any], Any]
    wait: timedelta = timedelta(0)
    skip_if: Condition | None = None
    only_if: Condition | None = None
    on_exception: ExceptionPolicy | None = None
    anonymous: bool = False
    #: The class attribute holding the step's method (``None`` for a step given as a
    #: callable): a subclass that overrides the method changes what the step runs.
    attribute: str | None = None
    #: What the step waits for (``wait_for``, ``timeout``, ``on_timeout``), if anything.
    signal: SignalWait | None = None

    def perform(self, workflow: Any) -> Any:
        """Run the step's code for ``workflow``; an override in its class wins."""
        if self.attribute is not None:
            method = getattr(type(workflow), self.attribute, None)
            if callable(method):
                return method(workflow)
        return self.function(workflow)

    def describe_source(self) -> str:
        """Where the step's code lives, for the UI and error messages."""
        code = getattr(self.function, "__code__", None)
        if code is None:
            return repr(self.function)
        return f"{code.co_filename}:{code.co_firstlineno}"


@dataclass
class WorkflowDefinition:
    """Everything the DSL collected for one workflow class (inherited parts included)."""

    steps: list[StepDefinition] = field(default_factory=list)
    cancel_conditions: list[Condition] = field(default_factory=list)
    class_policies: list[ClassPolicy] = field(default_factory=list)
    job_options: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> WorkflowDefinition:
        return WorkflowDefinition(
            steps=list(self.steps),
            cancel_conditions=list(self.cancel_conditions),
            class_policies=list(self.class_policies),
            job_options=dict(self.job_options),
        )

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def get_step(self, name: str) -> StepDefinition | None:
        for candidate in self.steps:
            if candidate.name == name:
                return candidate
        return None

    @cached_property
    def signal_waits(self) -> dict[str, SignalWait]:
        """The steps that wait for a signal, by name (asked once the class is built)."""
        return {s.name: s.signal for s in self.steps if s.signal is not None}

    def step_after(self, name: str) -> StepDefinition | None:
        """The step that follows ``name``, or ``None`` when ``name`` is the last one."""
        names = self.step_names
        index = names.index(name)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None


# --------------------------------------------------------------------------------------
# Records left in the class namespace by the class-body statements.


class _StepMarker:
    """What ``@step`` binds to a method name until the class is built."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


@dataclass
class _StepRecord:
    function: Callable[..., Any]
    marker: _StepMarker
    options: dict[str, Any]


@dataclass
class _CancelIfRecord:
    conditions: tuple[Condition, ...]


@dataclass
class _PolicyRecord:
    exception_classes: tuple[type[BaseException], ...]
    policy: ExceptionPolicy | None  # None until the handler decorator is applied
    decorator_applied: bool = False


def _class_namespace(statement: str) -> dict[str, Any]:
    """The namespace of the class body that called ``statement`` (two frames up)."""
    frame = sys._getframe(2)
    namespace = frame.f_locals
    if "__qualname__" not in namespace or "__module__" not in namespace:
        raise StepConfigurationError(
            f"{statement} must be used in the body of a workflow class "
            f"(called from {frame.f_code.co_name!r} in {frame.f_code.co_filename})"
        )
    return namespace


def _record(namespace: dict[str, Any], record: object) -> None:
    namespace.setdefault(PENDING_ATTRIBUTE, []).append(record)


# --------------------------------------------------------------------------------------
# The public statements.

_STEP_OPTIONS: Final = SIGNAL_OPTIONS | frozenset(
    {"wait", "skip_if", "only_if", "on_exception", "max_reattempts", "terminal_action",
     "before_step", "after_step", "name"}
)  # fmt: skip


@overload
def step(function: Callable[..., Any], /, **options: Any) -> Any: ...


@overload
def step(function: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Any]: ...


def step(function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Define a step.

    As a decorator (``@step`` or ``@step(**options)``) on a method, the step takes the
    method's name. As a class-body statement, ``step(callable, **options)`` adds an
    anonymous step named ``step_N`` (N being the number of steps the class has at that
    point, inherited ones included, plus one) unless ``name=`` is given. The callable
    receives the workflow instance.

    Options: ``wait`` (timedelta or seconds, ≥ 0), ``wait_for`` (a signal name or a
    :class:`~flask_geneva.SignalMatcher`) with ``timeout`` and ``on_timeout``,
    ``skip_if`` / ``only_if`` (callable(workflow), method name, or bool; not both),
    ``on_exception``
    (``"pause"``, ``"cancel"``, ``"reattempt"``, ``"skip"``, an
    :class:`~flask_geneva.ExceptionPolicy` or callable(workflow, exception)),
    ``max_reattempts`` and ``terminal_action`` (with ``"reattempt"`` only),
    ``before_step`` / ``after_step`` (the name of a step already defined; not both) and
    ``name``.
    """
    if function is None:

        def decorator(function: Callable[..., Any]) -> Any:
            return _add_step(_class_namespace("@step"), function, options, "@step")

        return decorator
    return _add_step(_class_namespace("step()"), function, options, "step()")


def _add_step(
    namespace: dict[str, Any],
    function: Callable[..., Any],
    options: dict[str, Any],
    statement: str,
) -> _StepMarker:
    # Unknown options are reported when the class is built, with the step's name.
    if not callable(function):
        raise StepConfigurationError(
            f"{namespace['__qualname__']}: {statement} takes a method or a callable(workflow), "
            f"got {function!r}"
        )
    _refuse_redefined_method(namespace, function, options)
    marker = _StepMarker(function)
    _record(namespace, _StepRecord(function=function, marker=marker, options=options))
    return marker


def _refuse_redefined_method(
    namespace: dict[str, Any], function: Callable[..., Any], options: dict[str, Any]
) -> None:
    """Two ``@step`` methods of one name in one class body: the second would replace the
    first, whose step would lose its name."""
    method = getattr(function, "__name__", None)
    earlier = namespace.get(method) if method is not None else None
    if not isinstance(earlier, _StepMarker):
        return
    for record in namespace.get(PENDING_ATTRIBUTE, []):
        if (
            isinstance(record, _StepRecord)
            and record.marker is earlier
            and "name" in record.options
            and "name" in options
        ):
            return  # both name their steps: only the method name repeats
    raise StepConfigurationError(
        f"{namespace['__qualname__']}.{method}: a step named {method!r} is already defined "
        f"in this class (two @step methods named {method!r}); rename one of the methods"
    )


def cancel_if(*conditions: Condition) -> None:
    """Cancel the workflow, before any step, when one of ``conditions`` is true.

    Each condition is a callable(workflow), the name of a workflow method, or a bool. The
    statement can be repeated; every condition is checked before every step.
    """
    namespace = _class_namespace("cancel_if()")
    where = namespace["__qualname__"]
    if not conditions:
        raise StepConfigurationError(f"{where}: cancel_if() needs at least one condition")
    for condition in conditions:
        _check_condition_shape(condition, f"{where}: cancel_if")
    _record(namespace, _CancelIfRecord(conditions=conditions))


def on_exception(
    *exception_classes: type[BaseException],
    action: Any = None,
    wait: Any = None,
    max_reattempts: int | _Unset | None = UNSET,
    terminal_action: str | _Unset = UNSET,
) -> Any:
    """A class-level exception policy, or (without ``action``) a handler decorator.

    ``on_exception(SomeError, action="reattempt", wait=...)`` applies to every step of
    the class whose own ``on_exception`` is not set; with no exception classes it is a
    blanket policy. ``@on_exception(SomeError)`` on a method ``(self, exc)`` makes that
    method the handler: it calls a flow-control method, and if it calls none the workflow
    pauses.
    """
    namespace = _class_namespace("on_exception()")
    where = namespace["__qualname__"]
    for exception_class in exception_classes:
        if not (isinstance(exception_class, type) and issubclass(exception_class, BaseException)):
            raise StepConfigurationError(
                f"{where}: on_exception() takes exception classes, got {exception_class!r}"
            )
    if action is not None:
        try:
            policy = make_policy(
                action, wait=wait, max_reattempts=max_reattempts, terminal_action=terminal_action
            )
        except StepConfigurationError as error:
            raise StepConfigurationError(f"{where}: on_exception(): {error}") from None
        _record(namespace, _PolicyRecord(exception_classes, policy, decorator_applied=True))
        return None
    if wait is not None or max_reattempts is not UNSET or terminal_action is not UNSET:
        raise StepConfigurationError(
            f"{where}: on_exception() used as a handler decorator takes no wait, "
            f"max_reattempts or terminal_action: the handler decides by calling a "
            f"flow-control method (or give action= to make it a class-level policy)"
        )
    record = _PolicyRecord(exception_classes, None)
    _record(namespace, record)

    def decorator(handler: Callable[[Any, BaseException], Any]) -> Callable[..., Any]:
        if not callable(handler):
            raise StepConfigurationError(
                f"{where}: @on_exception must decorate a method (self, exc), got {handler!r}"
            )
        record.policy = ExceptionPolicy(handler)
        record.decorator_applied = True
        return handler

    return decorator


# --------------------------------------------------------------------------------------
# Building the definition when the class is created.


def _check_condition_shape(condition: Any, option: str) -> None:
    if not (isinstance(condition, bool | str) or callable(condition)):
        raise StepConfigurationError(
            f"{option} takes a callable(workflow), a method name or a bool, got {condition!r}"
        )


def evaluate_condition(condition: Condition, workflow: Any) -> bool:
    """Evaluate a condition against a workflow instance."""
    if isinstance(condition, bool):
        return condition
    if isinstance(condition, str):
        attribute = getattr(workflow, condition)
        return bool(attribute() if callable(attribute) else attribute)
    return bool(condition(workflow))


def build_definition(cls: type, parent: WorkflowDefinition | None) -> WorkflowDefinition:
    """Turn the records of ``cls``'s body into its definition, extending ``parent``."""
    definition = parent.copy() if parent is not None else WorkflowDefinition()
    records = cls.__dict__.get(PENDING_ATTRIBUTE, [])
    if PENDING_ATTRIBUTE in cls.__dict__:
        delattr(cls, PENDING_ATTRIBUTE)
    where = cls.__qualname__
    for record in records:
        if isinstance(record, _StepRecord):
            _build_step(cls, definition, record, where)
        elif isinstance(record, _CancelIfRecord):
            for condition in record.conditions:
                _check_condition_target(cls, condition, where, "cancel_if")
            definition.cancel_conditions.extend(record.conditions)
        elif isinstance(record, _PolicyRecord):
            if not record.decorator_applied or record.policy is None:
                raise StepConfigurationError(
                    f"{where}: on_exception() without action= must decorate a handler "
                    f"method (self, exc); give action= to make it a class-level policy"
                )
            definition.class_policies.append(ClassPolicy(record.exception_classes, record.policy))
    definition.job_options = _build_job_options(cls, definition.job_options, where)
    return definition


def _build_step(
    cls: type, definition: WorkflowDefinition, record: _StepRecord, where: str
) -> None:
    options = dict(record.options)
    function = record.function
    name = options.pop("name", None)
    anonymous = False
    if name is None:
        bound = getattr(function, "__name__", None)
        if bound is not None and cls.__dict__.get(bound) is record.marker:
            name = bound
        else:
            name = f"step_{len(definition.steps) + 1}"
            anonymous = True
    if not isinstance(name, str) or not name.isidentifier():
        raise StepConfigurationError(
            f"{where}: a step name must be a valid identifier, got {name!r}"
        )
    here = f"{where}.{name}"
    unknown = sorted(set(options) - _STEP_OPTIONS)
    if unknown:
        raise StepConfigurationError(
            f"{here}: unknown step option(s) {', '.join(unknown)}; "
            f"valid options are {', '.join(sorted(_STEP_OPTIONS))}"
        )
    # Put the plain function back on the class so that wf.method() keeps working.
    holders = [attribute for attribute, value in cls.__dict__.items() if value is record.marker]
    reserved = _workflow_base(cls)
    for attribute in holders:
        if reserved is not None and hasattr(reserved, attribute):
            raise StepConfigurationError(
                f"{here}: the method name {attribute!r} is taken by geneva.Workflow itself; "
                f"rename the method (or give the step name= and another method name)"
            )
        setattr(cls, attribute, function)
    if definition.get_step(name) is not None:
        raise StepConfigurationError(
            f"{here}: a step named {name!r} is already defined "
            f"(steps so far: {', '.join(definition.step_names)})"
        )
    raw_wait = options.pop("wait", None)
    wait = to_timedelta(0 if raw_wait is None else raw_wait, f"{here}: wait")
    signal = signal_wait_from_options(options, here, wait_given=raw_wait is not None)
    skip_if = options.pop("skip_if", None)
    only_if = options.pop("only_if", None)
    if skip_if is not None and only_if is not None:
        raise StepConfigurationError(f"{here}: give skip_if or only_if, not both")
    for option, condition in (("skip_if", skip_if), ("only_if", only_if)):
        if condition is not None:
            _check_condition_shape(condition, f"{here}: {option}")
            _check_condition_target(cls, condition, here, option)
    raw_policy = options.pop("on_exception", None)
    max_reattempts = options.pop("max_reattempts", UNSET)
    terminal_action = options.pop("terminal_action", UNSET)
    policy: ExceptionPolicy | None = None
    try:
        if raw_policy is not None:
            policy = make_policy(
                raw_policy, max_reattempts=max_reattempts, terminal_action=terminal_action
            )
        elif max_reattempts is not UNSET or terminal_action is not UNSET:
            raise StepConfigurationError(
                "max_reattempts and terminal_action need on_exception='reattempt'"
            )
    except StepConfigurationError as error:
        raise StepConfigurationError(f"{here}: {error}") from None
    before, after = options.pop("before_step", None), options.pop("after_step", None)
    if before is not None and after is not None:
        raise StepConfigurationError(f"{here}: give before_step or after_step, not both")
    definition_step = StepDefinition(
        name=name,
        function=function,
        wait=wait,
        skip_if=skip_if,
        only_if=only_if,
        on_exception=policy,
        anonymous=anonymous,
        attribute=holders[0] if holders else None,
        signal=signal,
    )
    anchor = before if before is not None else after
    if anchor is None:
        definition.steps.append(definition_step)
        return
    if definition.get_step(anchor) is None:
        option = "before_step" if before is not None else "after_step"
        raise StepConfigurationError(
            f"{here}: {option}={anchor!r} names no step defined so far "
            f"(steps so far: {', '.join(definition.step_names) or 'none'})"
        )
    index = definition.step_names.index(anchor) + (0 if before is not None else 1)
    definition.steps.insert(index, definition_step)


def _workflow_base(cls: type) -> type | None:
    """``geneva.Workflow`` for a workflow class: the names its step methods must not take."""
    return next((base for base in cls.__mro__ if "_geneva_base" in base.__dict__), None)


def _check_condition_target(cls: type, condition: Any, where: str, option: str) -> None:
    if isinstance(condition, str) and not hasattr(cls, condition):
        raise StepConfigurationError(
            f"{where}: {option}={condition!r} names no method of {cls.__qualname__}"
        )


def _build_job_options(cls: type, inherited: dict[str, Any], where: str) -> dict[str, Any]:
    own = cls.__dict__.get("step_job_options")
    if own is None:
        return dict(inherited)
    if not isinstance(own, Mapping):
        raise StepConfigurationError(f"{where}: step_job_options must be a dict, got {own!r}")
    for key, value in own.items():
        expected = JOB_OPTION_TYPES.get(key)
        if expected is None:
            raise StepConfigurationError(
                f"{where}: step_job_options has the unknown key {key!r}; "
                f"allowed keys are {', '.join(JOB_OPTION_TYPES)}"
            )
        if isinstance(value, bool) or not isinstance(value, expected):
            raise StepConfigurationError(
                f"{where}: step_job_options[{key!r}] must be a {expected.__name__}, got {value!r}"
            )
        if key == "time_limit" and isinstance(value, int) and value <= 0:
            raise StepConfigurationError(
                f"{where}: step_job_options['time_limit'] is in milliseconds and must be > 0"
            )
    return {**inherited, **own}
