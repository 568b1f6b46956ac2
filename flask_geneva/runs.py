"""What one run of a step carries from its claim to its finalize, and the signals it sends.

Shared by :mod:`flask_geneva.claiming`, :mod:`flask_geneva.body`,
:mod:`flask_geneva.finalizing` and :mod:`flask_geneva.executor`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask_geneva.dsl import StepDefinition, WorkflowDefinition
from flask_geneva.logs import logger
from flask_geneva.store import MessageOptions, Store, store_for

try:  # Dramatiq's time limit interrupts a step with a BaseException; it is a step failure.
    from dramatiq.middleware.time_limit import TimeLimitExceeded as _TimeLimitExceeded

    STEP_FAILURES: tuple[type[BaseException], ...] = (Exception, _TimeLimitExceeded)
except ImportError:  # pragma: no cover
    STEP_FAILURES = (Exception,)


@dataclass(frozen=True)
class Subject:
    """What a step's signals and result name, read once while the rows are loaded (after
    a commit, reading them again would cost a query)."""

    sender: type
    workflow_id: Any
    workflow_class: str
    execution_id: Any
    step_name: str


@dataclass
class Claim:
    """A claimed execution, ready for its body: the loaded objects and the step."""

    workflow: Any
    execution: Any
    step: StepDefinition
    definition: WorkflowDefinition
    subject: Subject
    #: Set when a precondition raised and an imperative handler must decide: the body
    #: does not run, the handler runs outside the lock like the body would.
    precondition_error: BaseException | None = None
    #: The signal the step runs with (``received_signal``), if it waits for one.
    signal: Any = None
    #: The step's signal timeout ended first: ``on_timeout`` decides what runs.
    timed_out: bool = False


@dataclass(frozen=True)
class ClaimedStep:
    """A workflow's next execution, claimed in the transaction that finished the step
    before it (an inline run): what its rows hold, to run it without loading them."""

    workflow_class: type
    workflow_values: dict[str, Any]
    execution_values: dict[str, Any]
    step: StepDefinition
    definition: WorkflowDefinition
    subject: Subject
    message_id: str | None
    #: The hero as the finalize's lock read it (its class and column values), so that
    #: the next step's body does not load it again; None when it was not read.
    hero: tuple[type, dict[str, Any]] | None = None


@dataclass
class StepResult:
    """What happened to one execution (for the testing helpers, the logs and the inline
    loop)."""

    execution_id: Any
    step_name: str
    #: ``precondition_checked`` outcome when a precondition ended it, else the
    #: ``step_performed`` outcome.
    outcome: str
    exception: BaseException | None = None
    #: In an inline run: the workflow's next execution, due at once, that the caller
    #: runs now itself (its message was not published); its preconditions come first.
    continue_with: Any = None
    #: In an inline run, instead of ``continue_with`` when the next step needs no
    #: precondition evaluated: that execution, already claimed in this step's
    #: transaction. Run it with :func:`flask_geneva.executor.run_claimed`.
    claimed_next: ClaimedStep | None = None


def store_of(workflow_class: Any, session: Any) -> Store:
    """The store that writes ``workflow_class``'s rows through ``session``."""
    return store_for(workflow_class._geneva, session)


def message_options(workflow_class: type | None) -> MessageOptions:
    """How the step messages of ``workflow_class`` are sent (its ``step_job_options``);
    the defaults for a class the code no longer defines."""
    from flask_geneva.extension import require_state

    state = require_state()
    if workflow_class is not None and not workflow_class.is_defined():  # type: ignore[attr-defined]
        workflow_class = None
    queue_name, priority, time_limit_ms = state.message_options_for(workflow_class)
    waits = {} if workflow_class is None else workflow_class._geneva_definition.signal_waits  # type: ignore[attr-defined]
    return MessageOptions(queue_name, priority, time_limit_ms, waits)


def following(definition: WorkflowDefinition, step_name: str) -> tuple[str, timedelta] | None:
    """The step after ``step_name`` (its name and wait), or None after the last."""
    step = definition.step_after(step_name)
    return None if step is None else (step.name, step.wait)


def send(signal: Any, subject: Subject, outcome: str, exception: BaseException | None,
         since: float, **extra: Any) -> None:
    """Send a signal; a receiver that raises is logged and never affects the step."""
    if not signal.receivers:
        return
    payload = {
        "workflow_id": subject.workflow_id,
        "workflow_class": subject.workflow_class,
        "execution_id": subject.execution_id,
        "step_name": subject.step_name,
        "outcome": outcome,
        "exception": exception,
        "duration": time.perf_counter() - since,
        **extra,
    }
    for receiver in signal.receivers_for(subject.sender):
        try:
            receiver(subject.sender, **payload)
        except Exception:
            logger.exception(
                "a receiver of %s failed (%s #%s, step %s); the step is not affected",
                signal.name, subject.workflow_class, subject.workflow_id, subject.step_name,
            )
