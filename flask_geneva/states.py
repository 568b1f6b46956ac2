"""The states of workflows and step executions, and the outcomes of executions."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class WorkflowState(StrEnum):
    """Where a workflow is in its life. Compares equal to its plain string value."""

    READY = "ready"
    PERFORMING = "performing"
    FINISHED = "finished"
    CANCELED = "canceled"
    PAUSED = "paused"


class StepState(StrEnum):
    """Where one step execution is in its life."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


class StepOutcome(StrEnum):
    """How a finished step execution ended."""

    SUCCESS = "success"
    REATTEMPTED = "reattempted"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    FAILED = "failed"
    RECOVERED = "recovered"


#: States in which a workflow still has work ahead (it counts against ``allow_multiple``).
ONGOING_STATES: Final = (WorkflowState.READY, WorkflowState.PERFORMING, WorkflowState.PAUSED)
#: States a workflow never leaves.
FINAL_STATES: Final = (WorkflowState.FINISHED, WorkflowState.CANCELED)
#: Execution states that occupy the workflow's single "active execution" slot.
ACTIVE_STEP_STATES: Final = (StepState.SCHEDULED, StepState.IN_PROGRESS)


class SignalState(StrEnum):
    """Where a stored signal is: waiting to be taken, or consumed by a step."""

    PENDING = "pending"
    CONSUMED = "consumed"
