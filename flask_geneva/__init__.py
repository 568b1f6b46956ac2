"""flask_geneva: durable, multi-step workflows for Flask applications.

A workflow is a database row (its state) plus a Python class (its graph of steps). Steps
run one at a time, each as a Dramatiq message, possibly months apart, on any worker.
"""

from __future__ import annotations

from flask_geneva.dsl import cancel_if, on_exception, step
from flask_geneva.errors import (
    ConfigurationError,
    GenevaError,
    InvalidHeroError,
    InvalidInputError,
    InvalidSignalError,
    InvalidStateError,
    InvalidWorkflowDataError,
    NotAWorkflowClassError,
    SetupError,
    StepConfigurationError,
    StepLimitReachedError,
    StepNotDefinedError,
    UnknownStepError,
    WaitingForSignalError,
    WorkflowAlreadyOngoing,
    WorkflowClassNotFoundError,
)
from flask_geneva.extension import Geneva
from flask_geneva.policies import ExceptionPolicy
from flask_geneva.states import SignalState, StepOutcome, StepState, WorkflowState
from flask_geneva.waiting import SignalMatcher

__version__ = "0.1.0.dev0"

__all__ = [
    "ConfigurationError",
    "ExceptionPolicy",
    "Geneva",
    "GenevaError",
    "InvalidHeroError",
    "InvalidInputError",
    "InvalidSignalError",
    "InvalidStateError",
    "InvalidWorkflowDataError",
    "NotAWorkflowClassError",
    "SetupError",
    "SignalMatcher",
    "SignalState",
    "StepConfigurationError",
    "StepLimitReachedError",
    "StepNotDefinedError",
    "StepOutcome",
    "StepState",
    "UnknownStepError",
    "WaitingForSignalError",
    "WorkflowAlreadyOngoing",
    "WorkflowClassNotFoundError",
    "WorkflowState",
    "cancel_if",
    "on_exception",
    "step",
]
