"""Exceptions that flask_geneva raises for its users."""

from __future__ import annotations


class GenevaError(Exception):
    """Base class of every error flask_geneva raises on purpose."""


class StepConfigurationError(GenevaError):
    """A workflow class is defined wrongly.

    Raised while the class body is evaluated (or when the class is created), so a broken
    workflow never reaches the database. The message names the class and the step.
    """


class InvalidStateError(GenevaError):
    """An operator action is not allowed in the workflow's current state."""


class WorkflowAlreadyOngoing(GenevaError):
    """A second ongoing workflow of one class for one hero (without ``allow_multiple``)."""


class StepNotDefinedError(GenevaError):
    """A step execution names a step that the workflow class no longer has."""


class WorkflowClassNotFoundError(GenevaError):
    """A workflow row names a class that is no longer defined in the application."""


class ConfigurationError(GenevaError, ValueError):
    """A ``GENEVA_*`` key (or the database URL) has a value geneva cannot use.

    Raised by ``init_app``, before anything is registered; the message names the key,
    the value and what it may be.
    """


class SetupError(GenevaError, RuntimeError):
    """The extension is used before it is set up on the app, or set up twice.

    The message says which call is missing (``geneva.init_app(app)``,
    ``db.init_app(app)``) or repeated.
    """
