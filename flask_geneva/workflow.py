"""The behaviour every workflow class inherits: ``geneva.Workflow``'s instance API.

:class:`WorkflowMixin` holds what a workflow does (its definition, ``create()``, what it
reads, the flow-control methods); :mod:`flask_geneva.models` maps it onto the
``geneva_workflows`` table, and :mod:`flask_geneva.registration` turns each subclass
into a workflow class when it is defined.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from flask_geneva import dsl
from flask_geneva.registration import prepare_workflow_class
from flask_geneva.states import ONGOING_STATES, StepState, WorkflowState

if TYPE_CHECKING:
    from flask_geneva.extension import Geneva


class WorkflowMixin:
    """Behaviour of every workflow; the columns are added by :func:`build_models`.

    Subclasses are defined with the DSL (:func:`~flask_geneva.step` and friends). Class
    attributes users may set: ``may_proceed_without_hero``, ``allow_multiple``,
    ``step_job_options`` and ``workflow_name``.
    """

    #: Whether the workflow runs (and may be created) without a hero.
    may_proceed_without_hero: ClassVar[bool] = False
    #: Dramatiq options for this class's step messages: ``queue_name``, ``priority``,
    #: ``time_limit`` (milliseconds).
    step_job_options: ClassVar[dict[str, Any]] = {}
    #: When False, at most one ongoing workflow per class and hero (a unique index).
    allow_multiple: ClassVar[bool] = False
    #: The stored identity of the class; defaults to ``__name__``.
    workflow_name: ClassVar[str | None] = None

    _geneva: ClassVar[Geneva]
    _geneva_definition: ClassVar[dsl.WorkflowDefinition]
    _geneva_identity: ClassVar[str | None] = None

    # Mapped attributes, declared here for type checkers (see build_models).
    if TYPE_CHECKING:
        id: Mapped[Any]
        workflow_class: Mapped[str]
        state: Mapped[WorkflowState]
        hero_type: Mapped[str | None]
        hero_id: Mapped[str | None]
        data: Mapped[dict[str, Any]]
        next_step_name: Mapped[str | None]
        current_step_name: Mapped[str | None]
        previous_step_name: Mapped[str | None]
        execution_count: Mapped[int]
        created_at: Mapped[datetime]
        updated_at: Mapped[datetime]
        transitioned_at: Mapped[datetime | None]
        execution_history: Mapped[list[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "_geneva_base" not in cls.__dict__:
            prepare_workflow_class(cls)
        super().__init_subclass__(**kwargs)

    # ---------------------------------------------------------------- definition

    @classmethod
    def steps(cls) -> list[dsl.StepDefinition]:
        """The steps of this class, in the order they run."""
        return list(cls._geneva_definition.steps)

    @classmethod
    def step_names(cls) -> list[str]:
        """The names of this class's steps, in the order they run."""
        return cls._geneva_definition.step_names

    @classmethod
    def is_defined(cls) -> bool:
        """False for rows whose workflow class is no longer defined (loaded as the base)."""
        return cls._geneva_identity is not None

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(cls, hero: Any = None, data: dict[str, Any] | None = None) -> Any:
        """Add a workflow to ``db.session``, flush, and schedule its first step.

        Does not commit: the first step is published after the caller commits, and
        nothing is published if the transaction rolls back. A workflow with no steps
        finishes at once.

        :raises ValueError: without a hero, unless ``may_proceed_without_hero``; or when
            ``data`` is not a JSON-serialisable dict.
        :raises WorkflowAlreadyOngoing: a second ongoing workflow of this class for this
            hero, unless ``allow_multiple``.
        """
        from flask_geneva.extension import require_state
        from flask_geneva.lifecycle import create_workflow

        require_state()
        return create_workflow(cls, hero=hero, data=data)

    # ---------------------------------------------------------------- reading

    @property
    def hero(self) -> Any:
        """The hero record, loaded fresh from the database; ``None`` if it was deleted."""
        cached = self.__dict__.get("_geneva_hero_cache", _MISSING)
        if cached is not _MISSING:
            return cached
        hero = self._geneva.load_hero(self.hero_type, self.hero_id)
        self.__dict__["_geneva_hero_cache"] = hero
        return hero

    @property
    def received_signal(self) -> Any:
        """Inside a step that waits for a signal: the
        :class:`~flask_geneva.Geneva.WorkflowSignal` it runs with, or None after a
        timeout (and outside such a step)."""
        return self.__dict__.get(RECEIVED_SIGNAL)

    def signal(self, name: str, payload: Any = None, idempotency_key: str | None = None) -> Any:
        """Send the signal ``name`` to this workflow, with the caller's transaction.

        Locks the workflow's row and stores a pending ``WorkflowSignal``; a step that
        waits for ``name`` becomes due once the caller commits. Returns the stored row,
        with ``duplicate`` True (and nothing new stored) when ``idempotency_key`` was
        stored before for this name. Does not commit.

        :raises InvalidStateError: the workflow is finished or canceled (and the key is
            new).
        :raises InvalidSignalError: (a ``ValueError``) the name, key or payload cannot be
            stored: not JSON, or larger than ``GENEVA_MAX_SIGNAL_PAYLOAD``.
        """
        from flask_geneva.signalling import send_signal

        _require_setup()
        return send_signal(self, name, payload, idempotency_key)

    @property
    def current_execution(self) -> Any:
        """Inside a step, the execution being run; outside, the scheduled one (or None)."""
        running = self.__dict__.get("_geneva_running")
        if running is not None:
            return running
        model = self._geneva.StepExecution
        session = sa.orm.object_session(self)
        if session is None or self.id is None:
            return None
        return session.scalars(
            sa.select(model)
            .where(model.workflow_id == self.id, model.state == StepState.SCHEDULED)
            .limit(1)
        ).first()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger carrying the workflow's class, id, hero and (inside a step) step."""
        from flask_geneva.logs import workflow_logger

        return workflow_logger(self)

    @property
    def is_ongoing(self) -> bool:
        """True while the workflow is ready, performing or paused."""
        return self.state in ONGOING_STATES

    # ---------------------------------------------------------------- flow control
    # Inside a step these end the step at once (by raising a BaseException signal);
    # outside, resume/cancel/pause/skip are operator actions.

    def cancel(self) -> None:
        """Inside a step: cancel the workflow. Outside: cancel a ready or paused workflow."""
        from flask_geneva import flow, operations

        if self._in_step():
            raise flow.CancelSignal()
        _require_setup()
        operations.cancel_workflow(self)

    def pause(self) -> None:
        """Inside a step: pause; resume() runs this step again. Outside: pause a ready one."""
        from flask_geneva import flow, operations

        if self._in_step():
            raise flow.PauseSignal()
        _require_setup()
        operations.pause_workflow(self)

    def skip(self) -> None:
        """Inside a step: skip it. Outside: skip the pending step of a ready or paused one."""
        from flask_geneva import flow, operations

        if self._in_step():
            raise flow.SkipSignal()
        _require_setup()
        operations.skip_step(self)

    def resume(self) -> None:
        """Resume a paused workflow (an operator action; not for use inside a step)."""
        from flask_geneva import operations

        _require_setup()
        operations.resume_workflow(self)

    def reattempt(self, wait: Any = None) -> None:
        """Inside a step: run this step again after ``wait`` (timedelta or seconds)."""
        from flask_geneva import flow

        self._require_step("reattempt()")
        raise flow.ReattemptSignal(wait)

    def finish(self) -> None:
        """Inside a step: finish the workflow now, skipping the remaining steps."""
        from flask_geneva import flow

        self._require_step("finish()")
        raise flow.FinishSignal()

    def _in_step(self) -> bool:
        return self.__dict__.get("_geneva_running") is not None

    def _require_step(self, method: str) -> None:
        from flask_geneva.errors import InvalidStateError

        if not self._in_step():
            raise InvalidStateError(
                f"{method} ends the running step, so it can only be called inside a step of "
                f"{type(self).__name__} #{self.id}"
            )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} #{self.id} {self.state} "
            f"next={self.next_step_name!r} hero={self.hero_type}:{self.hero_id}>"
        )



_MISSING = object()

#: Where a running step's workflow keeps the signal it runs with.
RECEIVED_SIGNAL = "_geneva_received_signal"


def _require_setup() -> None:
    """A clear error, not ``KeyError: 'geneva'``, when ``init_app`` was forgotten."""
    from flask_geneva.extension import require_state

    require_state()
