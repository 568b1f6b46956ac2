"""The mapped models: the ``Workflow`` base class, ``StepExecution`` and ``OutboxMessage``.

They are built once per :class:`~flask_geneva.Geneva` instance on the application's
``db.Model``, like models a user writes, so ``db.create_all()`` and Flask-Migrate see
them. Every workflow class is a single-table subclass of ``Workflow``; its stored identity
(the ``workflow_class`` column) is ``workflow_name`` or the class's ``__name__``. A row
whose class no longer exists still loads, as the base ``Workflow``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship

from flask_geneva import dsl
from flask_geneva.errors import StepConfigurationError
from flask_geneva.states import (
    ACTIVE_STEP_STATES,
    ONGOING_STATES,
    StepOutcome,
    StepState,
    WorkflowState,
)
from flask_geneva.timeutil import as_utc

if TYPE_CHECKING:
    from flask_geneva.extension import Geneva

#: The table names, fixed by the public contract.
WORKFLOWS_TABLE = "geneva_workflows"
EXECUTIONS_TABLE = "geneva_step_executions"
OUTBOX_TABLE = "geneva_outbox"

_NAME_LENGTH = 255


def _enum_type(enum_class: type[Any], name: str) -> sa.Enum:
    """A portable VARCHAR column that loads as the str enum (no CHECK, no native type)."""
    return sa.Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class _FallbackPolymorphicMap(dict[Any, Mapper[Any]]):
    """A polymorphic map that loads rows of unknown workflow classes as the base class."""

    def __init__(self, base: Mapper[Any], existing: dict[Any, Mapper[Any]]) -> None:
        super().__init__(existing)
        self.base = base

    def __missing__(self, key: Any) -> Mapper[Any]:
        return self.base


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
            _prepare_workflow_class(cls)
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


def _require_setup() -> None:
    """A clear error, not ``KeyError: 'geneva'``, when ``init_app`` was forgotten."""
    from flask_geneva.extension import require_state

    require_state()


def _prepare_workflow_class(cls: type) -> None:
    """Collect the DSL records of a new workflow class and give it its identity."""
    from sqlalchemy import inspect as sa_inspect

    parent = next(
        (base for base in cls.__mro__[1:] if hasattr(base, "_geneva_definition")), None
    )
    if parent is None:  # pragma: no cover - only the base itself has no parent
        return
    identity = cls.__dict__.get("workflow_name") or cls.__name__
    if not isinstance(identity, str) or len(identity) > _NAME_LENGTH:
        raise StepConfigurationError(
            f"{cls.__qualname__}: workflow_name must be a string of at most "
            f"{_NAME_LENGTH} characters, got {identity!r}"
        )
    for attribute in ("__tablename__", "__table__"):
        if attribute in cls.__dict__:
            raise StepConfigurationError(
                f"{cls.__qualname__}: workflow classes share the geneva_workflows table; "
                f"remove {attribute}"
            )
    for flag in ("may_proceed_without_hero", "allow_multiple"):
        if not isinstance(getattr(cls, flag), bool):
            raise StepConfigurationError(f"{cls.__qualname__}: {flag} must be True or False")
    previous = cls._geneva.workflow_classes.get(identity)  # type: ignore[attr-defined]
    if previous is not None and not _redefines(previous, cls):
        raise StepConfigurationError(
            f"{cls.__module__}.{cls.__qualname__}: the workflow name {identity!r} is already "
            f"taken by {previous.__module__}.{previous.__qualname__}, and rows of one would "
            f"load as the other; set workflow_name = '...' on one of them"
        )
    cls._geneva_definition = dsl.build_definition(cls, parent._geneva_definition)  # type: ignore[attr-defined]
    cls._geneva_identity = identity  # type: ignore[attr-defined]
    mapper_args = dict(cls.__dict__.get("__mapper_args__", {}))
    mapper_args["polymorphic_identity"] = identity
    cls.__mapper_args__ = mapper_args  # type: ignore[attr-defined]
    # A class defined again under the same identity (a reloaded module, a test) replaces
    # the old one instead of making SQLAlchemy warn about a duplicate identity.
    base_mapper = sa_inspect(cls._geneva.Workflow)  # type: ignore[attr-defined]
    base_mapper.polymorphic_map.pop(identity, None)
    if previous is not None and previous.__name__ == cls.__name__:
        _forget_class(base_mapper.registry, previous)
    cls._geneva.register_workflow_class(cls)  # type: ignore[attr-defined]


def _redefines(previous: type, cls: type) -> bool:
    """Whether ``cls`` may take ``previous``'s name: it is the same class defined again (a
    reloaded module), or one of them is defined inside a function (as tests and factories
    do, knowingly). Two module-level classes in different places may not."""
    same_place = (previous.__module__, previous.__qualname__) == (cls.__module__, cls.__qualname__)
    local = "<locals>" in previous.__qualname__ or "<locals>" in cls.__qualname__
    return same_place or local


def _forget_class(registry: Any, previous: type) -> None:
    """Drop a replaced workflow class from SQLAlchemy's string lookup of class names."""
    try:
        from sqlalchemy.orm import clsregistry

        clsregistry._remove_class(previous.__name__, previous, registry._class_registry)
    except Exception:  # pragma: no cover - a private API; only a warning is at stake
        logging.getLogger("flask_geneva").debug("could not forget %r", previous)


def _aware_timestamps(mapper_class: type, columns: tuple[str, ...]) -> None:
    """Make every timestamp loaded from the database timezone-aware UTC."""

    def convert(target: Any, *_args: Any) -> None:
        values = target.__dict__
        for column in columns:
            value = values.get(column)
            if value is not None and (value.tzinfo is None or value.utcoffset()):
                values[column] = as_utc(value)

    event.listen(mapper_class, "load", convert, propagate=True)
    event.listen(mapper_class, "refresh", convert, propagate=True)
    event.listen(mapper_class, "refresh_flush", convert, propagate=True)


def _forget_hero_on_expire(target: Any, *_args: Any) -> None:
    """A workflow whose attributes are expired loads its hero again when asked."""
    target.__dict__.pop("_geneva_hero_cache", None)


def build_models(geneva: Geneva, db: Any, uuid_primary_keys: bool) -> tuple[Any, Any, Any]:
    """Define ``Workflow``, ``StepExecution`` and ``OutboxMessage`` on ``db.Model``."""
    if WORKFLOWS_TABLE in db.metadata.tables:
        raise RuntimeError(
            f"the table {WORKFLOWS_TABLE} is already defined on this db.metadata: "
            f"create one Geneva per SQLAlchemy instance"
        )

    def key_type() -> sa.types.TypeEngine[Any]:
        if uuid_primary_keys:
            return sa.Uuid()
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    def key_column(**kwargs: Any) -> Any:
        if uuid_primary_keys:
            return mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4, **kwargs)
        return mapped_column(key_type(), primary_key=True, autoincrement=True, **kwargs)

    def timestamp(nullable: bool = True, **kwargs: Any) -> Any:
        return mapped_column(sa.DateTime(timezone=True), nullable=nullable, **kwargs)

    ongoing = [state.value for state in ONGOING_STATES]
    active = [state.value for state in ACTIVE_STEP_STATES]

    class StepExecution(db.Model):
        """One attempt to run one step: the idempotency record and the audit trail."""

        __tablename__ = EXECUTIONS_TABLE

        id = key_column()
        workflow_id = mapped_column(
            key_type(),
            sa.ForeignKey(f"{WORKFLOWS_TABLE}.id", ondelete="CASCADE"),
            nullable=False,
        )
        #: Position of the execution in its workflow's history (1, 2, ...).
        sequence = mapped_column(sa.Integer, nullable=False)
        step_name = mapped_column(sa.String(_NAME_LENGTH), nullable=False)
        state = mapped_column(
            _enum_type(StepState, "geneva_step_state"),
            nullable=False,
            default=StepState.SCHEDULED,
        )
        outcome = mapped_column(_enum_type(StepOutcome, "geneva_step_outcome"), nullable=True)
        scheduled_for = timestamp(nullable=False)
        started_at = timestamp()
        finished_at = timestamp()
        error_class_name = mapped_column(sa.String(_NAME_LENGTH), nullable=True)
        error_message = mapped_column(sa.Text, nullable=True)
        error_backtrace = mapped_column(sa.Text, nullable=True)
        message_id = mapped_column(sa.String(64), nullable=True)
        created_at = timestamp(nullable=False)

        __table_args__ = (
            sa.Index(
                "geneva_step_executions_one_active",
                "workflow_id",
                unique=True,
                postgresql_where=sa.text(f"state IN ({_sql_list(active)})"),
                sqlite_where=sa.text(f"state IN ({_sql_list(active)})"),
            ),
            sa.Index("geneva_step_executions_history", "workflow_id", "sequence"),
            sa.Index(
                "geneva_step_executions_scheduled",
                "scheduled_for",
                postgresql_where=sa.text("state = 'scheduled'"),
                sqlite_where=sa.text("state = 'scheduled'"),
            ),
            sa.Index(
                "geneva_step_executions_in_progress",
                "started_at",
                postgresql_where=sa.text("state = 'in_progress'"),
                sqlite_where=sa.text("state = 'in_progress'"),
            ),
            sa.Index(
                "geneva_step_executions_failures",
                "finished_at",
                postgresql_where=sa.text("error_class_name IS NOT NULL"),
                sqlite_where=sa.text("error_class_name IS NOT NULL"),
            ),
        )

        @property
        def workflow(self) -> Any:
            """The workflow this execution belongs to."""
            session = sa.orm.object_session(self)
            if session is None:
                return None
            return session.get(geneva.Workflow, self.workflow_id)

        @property
        def duration(self) -> float | None:
            """Seconds from start to finish, when both are known."""
            if self.started_at is None or self.finished_at is None:
                return None
            return (self.finished_at - self.started_at).total_seconds()

        def __repr__(self) -> str:
            return (
                f"<StepExecution #{self.id} {self.step_name} {self.state}"
                f"{'/' + str(self.outcome) if self.outcome else ''}>"
            )

    class Workflow(WorkflowMixin, db.Model):
        """The base of every workflow class (single-table inheritance)."""

        __tablename__ = WORKFLOWS_TABLE
        _geneva_base = True

        id = key_column()
        workflow_class: Mapped[str] = mapped_column(sa.String(_NAME_LENGTH), nullable=False)
        state: Mapped[WorkflowState] = mapped_column(
            _enum_type(WorkflowState, "geneva_workflow_state"),
            nullable=False,
            default=WorkflowState.READY,
        )
        hero_type: Mapped[str | None] = mapped_column(sa.String(_NAME_LENGTH), nullable=True)
        hero_id: Mapped[str | None] = mapped_column(sa.String(_NAME_LENGTH), nullable=True)
        data: Mapped[dict[str, Any]] = mapped_column(
            MutableDict.as_mutable(sa.JSON()), nullable=False, default=dict
        )
        next_step_name: Mapped[str | None] = mapped_column(
            sa.String(_NAME_LENGTH), nullable=True
        )
        current_step_name: Mapped[str | None] = mapped_column(
            sa.String(_NAME_LENGTH), nullable=True
        )
        previous_step_name: Mapped[str | None] = mapped_column(
            sa.String(_NAME_LENGTH), nullable=True
        )
        #: Copied from the class at creation: the unique index only covers rows without it.
        allow_multiple_flag = mapped_column(
            "allow_multiple", sa.Boolean, nullable=False, default=False
        )
        #: How many executions the workflow has had; numbers the next one.
        execution_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
        created_at = timestamp(nullable=False)
        updated_at = timestamp(nullable=False)
        transitioned_at = timestamp()

        execution_history = relationship(
            StepExecution,
            primaryjoin=lambda: Workflow.id == sa.orm.foreign(StepExecution.workflow_id),
            order_by=lambda: StepExecution.sequence,
            viewonly=True,
            lazy="select",
        )

        __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_on": "workflow_class"}
        __table_args__ = (
            sa.Index(
                "geneva_workflows_one_ongoing",
                "workflow_class",
                "hero_type",
                "hero_id",
                unique=True,
                postgresql_where=sa.text(
                    f"allow_multiple = false AND state IN ({_sql_list(ongoing)})"
                ),
                sqlite_where=sa.text(f"allow_multiple = 0 AND state IN ({_sql_list(ongoing)})"),
            ),
            sa.Index("geneva_workflows_hero", "hero_type", "hero_id", "created_at"),
            sa.Index("geneva_workflows_state", "state", "created_at", "id"),
            sa.Index("geneva_workflows_class", "workflow_class", "state", "created_at", "id"),
            sa.Index("geneva_workflows_created", "created_at", "id"),
            sa.Index("geneva_workflows_transitioned", "state", "transitioned_at"),
        )

    class OutboxMessage(db.Model):
        """A step message waiting to be published to the broker.

        Written in the transaction that schedules the step; removed in the transaction
        that claims (or cancels, skips, pauses) the execution.
        """

        __tablename__ = OUTBOX_TABLE

        id = mapped_column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        )
        execution_id = mapped_column(
            key_type(),
            sa.ForeignKey(f"{EXECUTIONS_TABLE}.id", ondelete="CASCADE"),
            nullable=False,
        )
        workflow_id = mapped_column(key_type(), nullable=False)
        queue_name = mapped_column(sa.String(_NAME_LENGTH), nullable=False)
        #: Dramatiq options of the message: the actor priority and the time limit (ms).
        priority = mapped_column(sa.Integer, nullable=False, default=0)
        time_limit_ms = mapped_column(sa.Integer, nullable=True)
        available_at = timestamp(nullable=False)
        published_at = timestamp()
        publish_count = mapped_column(sa.Integer, nullable=False, default=0)
        created_at = timestamp(nullable=False)

        __table_args__ = (
            sa.Index("geneva_outbox_due", "available_at"),
            sa.Index("geneva_outbox_execution", "execution_id"),
            sa.Index("geneva_outbox_workflow", "workflow_id"),
        )

    Workflow._geneva = geneva
    Workflow._geneva_definition = dsl.WorkflowDefinition()
    base_mapper = sa.inspect(Workflow)
    base_mapper.polymorphic_map = _FallbackPolymorphicMap(
        base_mapper, dict(base_mapper.polymorphic_map)
    )
    # A row of a class that is gone loads as the base and keeps its stored identity; saving
    # it (cancel, housekeeping, a failed claim) must not warn about that identity.
    validate_identity = base_mapper._validate_polymorphic_identity

    def _validate_known_identity(mapper: Any, state: Any, dict_: Any) -> None:
        if mapper is not base_mapper and validate_identity is not None:
            validate_identity(mapper, state, dict_)

    base_mapper._validate_polymorphic_identity = _validate_known_identity
    _aware_timestamps(Workflow, ("created_at", "updated_at", "transitioned_at"))
    event.listen(Workflow, "expire", _forget_hero_on_expire, propagate=True)
    event.listen(Workflow, "refresh", _forget_hero_on_expire, propagate=True)
    _aware_timestamps(
        StepExecution, ("scheduled_for", "started_at", "finished_at", "created_at")
    )
    _aware_timestamps(OutboxMessage, ("available_at", "published_at", "created_at"))
    return Workflow, StepExecution, OutboxMessage


def _sql_list(values: list[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def json_snapshot(data: Any) -> str:
    """A stable text form of ``data``, to notice in-place changes to nested values."""
    return json.dumps(data, sort_keys=True, default=str)


def iter_workflow_classes(geneva: Geneva) -> Iterator[type]:
    """The workflow classes currently defined, newest definition per identity."""
    return iter(geneva.workflow_classes.values())
