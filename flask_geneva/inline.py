"""Inline runs: a worker goes on with a workflow's next step itself, in one place.

When a step's outcome schedules the workflow's next step due at once, the worker that
ran it runs that step too, without a broker round trip: the finalize hands it over
either already claimed (:attr:`~flask_geneva.runs.StepResult.claimed_next`, run with
:func:`~flask_geneva.executor.run_claimed`) or named, to be claimed with its
preconditions (:attr:`~flask_geneva.runs.StepResult.continue_with`). This loop is the
only place that follows those hand-overs; it stops after ``GENEVA_INLINE_STEPS`` steps
or :data:`INLINE_STEPS_MAX_SECONDS`, and then the next step is published as usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from flask import Flask

from flask_geneva.executor import execute_step, give_back, run_claimed
from flask_geneva.runs import ClaimedStep, StepResult

#: A worker runs a workflow's due-at-once steps one after the other in one message for at
#: most this long; then it publishes the next one and lets the broker hand it out.
INLINE_STEPS_MAX_SECONDS: Final = 5.0


def run_message(
    app: Flask,
    geneva: Any,
    execution_id: Any,
    *,
    message_id: str | None,
    budget: int,
    before_next: Callable[[], None] = lambda: None,
) -> None:
    """Run the step of one message, then up to ``budget`` next steps inline; each step
    in an app context of its own. ``before_next`` runs before each inline step (the
    worker restarts the message's time limit there).

    A next step claimed in the finalize of the one before is given back (scheduled
    again and published) if anything interrupts the run before it starts.
    """
    deadline = time.monotonic() + INLINE_STEPS_MAX_SECONDS
    claimed: ClaimedStep | None = None  # claimed for this thread, not yet being run
    try:
        with app.app_context():
            result = execute_step(
                geneva, execution_id, message_id=message_id,
                inline_next=budget > 0, inline_deadline=deadline,
            )  # fmt: skip
            claimed = result.claimed_next if result is not None else None
        while result is not None and budget > 0:
            budget -= 1
            if claimed is None and result.continue_with is None:
                return
            before_next()
            with app.app_context():
                result, claimed = _next(geneva, result, claimed, message_id, budget, deadline)
    except BaseException:
        if claimed is not None:
            with app.app_context():
                give_back(geneva, claimed)
        raise


def _next(
    geneva: Any,
    result: StepResult,
    claimed: ClaimedStep | None,
    message_id: str | None,
    budget: int,
    deadline: float,
) -> tuple[StepResult | None, ClaimedStep | None]:
    """Run what the step before handed over; the result and what it hands over next."""
    if claimed is not None:
        # From here run_claimed answers for the claim (it gives it back itself).
        next_result = run_claimed(
            geneva, claimed, inline_next=budget > 0, inline_deadline=deadline
        )
    else:
        next_result = execute_step(
            geneva, result.continue_with, message_id=message_id,
            inline_next=budget > 0, inline_deadline=deadline,
        )  # fmt: skip
    return next_result, (next_result.claimed_next if next_result is not None else None)
