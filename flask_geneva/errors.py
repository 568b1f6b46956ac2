"""Exceptions that flask_geneva raises for its users.

Every error flask_geneva raises on purpose derives from :class:`GenevaError`, so
``except GenevaError`` catches them all; each message says what went wrong and what to do.
Where a caller would expect a built-in exception (a bad value is a ``ValueError``, a
setup made in the wrong order a ``RuntimeError``), the error derives from it too, so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class GenevaError(Exception):
    """Base class of every error flask_geneva raises on purpose."""


class ConfigurationError(GenevaError, ValueError):
    """A ``GENEVA_*`` configuration value (or the database URL) is invalid.

    Raised by ``init_app`` (and by whatever reads the value first), before anything is
    registered; the message names the key, the value and what it may be.
    """


class SetupError(GenevaError, RuntimeError):
    """The extension is set up in a way that cannot work, or used before it is set up
    on the app: a forgotten ``geneva.init_app(app)``, a second ``Geneva`` for one
    ``SQLAlchemy`` instance, a broker whose client library is not installed, and the
    like. The message says which call or install to make instead.
    """


class StepConfigurationError(GenevaError):
    """A workflow class is defined wrongly.

    Raised while the class body is evaluated (or when the class is created), so a broken
    workflow never reaches the database. The message names the class and the step.
    """


class InvalidStateError(GenevaError):
    """An operator action is not allowed in the workflow's current state."""


class WorkflowAlreadyOngoing(GenevaError):
    """A second ongoing workflow of one class for one hero (without ``allow_multiple``)."""


class InvalidHeroError(GenevaError, ValueError):
    """What was given as a workflow's hero cannot be one: it is not a mapped instance,
    or its primary key has several columns.
    """


class StepNotDefinedError(GenevaError):
    """A step execution names a step that the workflow class no longer has."""


class WorkflowClassNotFoundError(GenevaError):
    """A workflow row names a class that is no longer defined in the application."""


class InvalidInputError(GenevaError, ValueError):
    """A value that came from outside is malformed: a workflow or execution id, a page
    cursor, a number or a filter given in a URL, on the command line or in a step message.

    The message names the value (shortened when it is long) and what is accepted.
    """


#: The name the status UI's and the CLI's query functions used for it.
QueryError = InvalidInputError


class NotAWorkflowClassError(GenevaError, TypeError):
    """A workflow method was called on ``geneva.Workflow`` itself, not on a workflow
    class (a subclass of it)."""


class InvalidWorkflowDataError(GenevaError, ValueError):
    """``create(data=...)`` was given something that is not a JSON object of finite
    values; the message names the value and what to store instead."""


class UnknownStepError(GenevaError, ValueError):
    """A step name given by the caller is not a step of the workflow's class; the message
    lists its steps."""


class StepLimitReachedError(GenevaError, RuntimeError):
    """``speedrun_workflow()`` ran ``max_iterations`` steps and the workflow is still
    going."""


class WaitingForSignalError(GenevaError, ValueError):
    """A testing helper was asked to run a step that waits for a signal that has not
    arrived; the message names the signal (send it, or pass ``timeout_elapsed=True``)."""


class InvalidSignalError(GenevaError, ValueError):
    """A signal's name, payload or idempotency key cannot be stored; the message says
    which and why."""
