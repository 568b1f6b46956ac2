"""The mapped models: the ``Workflow`` base class, ``StepExecution``, ``OutboxMessage``
and ``WorkflowSignal``.

They are built once per :class:`~flask_geneva.Geneva` instance on the application's
``db.Model``, like models a user writes, so ``db.create_all()`` and Flask-Migrate see
them. This module holds their tables (columns and indexes); what a workflow does is
:class:`~flask_geneva.workflow.WorkflowMixin`, and how a subclass becomes a workflow
class is :mod:`flask_geneva.registration`. Every workflow class is a single-table
subclass of ``Workflow``; its stored identity (the ``workflow_class`` column) is
``workflow_name`` or the class's ``__name__``. A row whose class no longer exists still
loads, as the base ``Workflow``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, MappedColumn, mapped_column, relationship

from flask_geneva import dsl
from flask_geneva.errors import SetupError
from flask_geneva.registration import (
    FALLBACK_IDENTITY,
    NAME_LENGTH,
    stored_class_discriminator,
)
from flask_geneva.states import (
    ACTIVE_STEP_STATES,
    ONGOING_STATES,
    SignalState,
    StepOutcome,
    StepState,
    WorkflowState,
)
from flask_geneva.timeutil import as_utc, timestamp_type
from flask_geneva.workflow import WorkflowMixin

if TYPE_CHECKING:
    from flask_geneva.extension import Geneva

#: The table names, fixed by the public contract.
WORKFLOWS_TABLE = "geneva_workflows"
EXECUTIONS_TABLE = "geneva_step_executions"
OUTBOX_TABLE = "geneva_outbox"
SIGNALS_TABLE = "geneva_signals"
#: The longest idempotency key a signal may carry.
IDEMPOTENCY_KEY_LENGTH = 255

_NAME_LENGTH = NAME_LENGTH

__all__ = ["WorkflowMixin", "build_models", "iter_workflow_classes", "json_snapshot"]


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


def build_models(
    geneva: Geneva, db: Any, uuid_primary_keys: bool
) -> tuple[Any, Any, Any, Any]:
    """Define ``Workflow``, ``StepExecution``, ``OutboxMessage`` and ``WorkflowSignal`` on
    ``db.Model``."""
    if WORKFLOWS_TABLE in db.metadata.tables:
        raise SetupError(
            f"the table {WORKFLOWS_TABLE} is already defined on this db.metadata: "
            f"create one Geneva per SQLAlchemy instance and share it (geneva.init_app(app) "
            f"for each app)"
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
        return mapped_column(timestamp_type(), nullable=nullable, **kwargs)

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
        #: When the step is due; for a step waiting for a signal, the end of its timeout
        #: (``NULL``: it waits without one).
        scheduled_for = timestamp()
        #: The name of the signal a scheduled execution waits for (``NULL``: none).
        waiting_for = mapped_column(sa.String(_NAME_LENGTH), nullable=True)
        started_at = timestamp()
        finished_at = timestamp()
        error_class_name = mapped_column(sa.String(_NAME_LENGTH), nullable=True)
        error_message = mapped_column(_long_text(), nullable=True)
        error_backtrace = mapped_column(_long_text(), nullable=True)
        message_id = mapped_column(sa.String(64), nullable=True)
        created_at = timestamp(nullable=False)

        __table_args__ = (
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

        # Rows of a class that is gone load as this base class (see registration).
        __mapper_args__: ClassVar[dict[str, Any]] = {
            "polymorphic_on": stored_class_discriminator(
                cast("MappedColumn[str]", workflow_class).column, geneva.workflow_classes
            ),
            "polymorphic_identity": FALLBACK_IDENTITY,
        }
        __table_args__ = (
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

    class WorkflowSignal(db.Model):
        """A signal sent to a workflow: pending until a step that waits for it consumes
        it (SPEC section 11). ``duplicate`` is True on what ``signal()`` returns when the
        same idempotency key was stored before."""

        __tablename__ = SIGNALS_TABLE

        id = key_column()
        workflow_id = mapped_column(
            key_type(),
            sa.ForeignKey(f"{WORKFLOWS_TABLE}.id", ondelete="CASCADE"),
            nullable=False,
        )
        name = mapped_column(sa.String(_NAME_LENGTH), nullable=False)
        payload = mapped_column(sa.JSON(), nullable=True)
        idempotency_key = mapped_column(sa.String(IDEMPOTENCY_KEY_LENGTH), nullable=True)
        state = mapped_column(
            _enum_type(SignalState, "geneva_signal_state"),
            nullable=False,
            default=SignalState.PENDING,
        )
        created_at = timestamp(nullable=False)
        consumed_at = timestamp()
        #: The execution that took it (the latest attempt of the step), then consumed it.
        execution_id = mapped_column(key_type(), nullable=True)

        #: Not stored: set on the row ``signal()`` returns for a repeated idempotency key.
        duplicate = False

        __table_args__ = (
            # NULL keys are distinct in a unique index: a signal without a key never
            # deduplicates.
            sa.Index(
                "geneva_signals_idempotency", "workflow_id", "name", "idempotency_key",
                unique=True,
            ),
            sa.Index("geneva_signals_pending", "workflow_id", "state", "name", "created_at"),
        )

        def __repr__(self) -> str:
            return f"<WorkflowSignal #{self.id} {self.name} {self.state}>"

    # Invariants 1 and "one ongoing workflow per class and hero" (SPEC section 10).
    _one_row_index(
        StepExecution.__table__, "geneva_step_executions_one_active", ["workflow_id"],
        key="one_active_key", counts=f"state IN ({_sql_list(active)})",
    )
    _one_row_index(
        Workflow.__table__, "geneva_workflows_one_ongoing",
        ["workflow_class", "hero_type", "hero_id"], key="one_ongoing_key",
        counts=f"NOT allow_multiple AND state IN ({_sql_list(ongoing)})",
        sqlite_counts=f"allow_multiple = 0 AND state IN ({_sql_list(ongoing)})",
        postgresql_counts=f"allow_multiple = false AND state IN ({_sql_list(ongoing)})",
    )
    Workflow._geneva = geneva
    Workflow._geneva_definition = dsl.WorkflowDefinition()
    _aware_timestamps(Workflow, ("created_at", "updated_at", "transitioned_at"))
    event.listen(Workflow, "expire", _forget_hero_on_expire, propagate=True)
    event.listen(Workflow, "refresh", _forget_hero_on_expire, propagate=True)
    _aware_timestamps(
        StepExecution, ("scheduled_for", "started_at", "finished_at", "created_at")
    )
    _aware_timestamps(OutboxMessage, ("available_at", "published_at", "created_at"))
    _aware_timestamps(WorkflowSignal, ("created_at", "consumed_at"))
    return Workflow, StepExecution, OutboxMessage, WorkflowSignal


def _long_text() -> sa.types.TypeEngine[str]:
    """Text of any length geneva keeps (MariaDB's and MySQL's ``TEXT`` ends at 64 KiB;
    a backtrace may hold 50,000 characters of four bytes each)."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _one_row_index(table: sa.Table, name: str, columns: list[str], *, key: str, counts: str,
                   sqlite_counts: str | None = None,
                   postgresql_counts: str | None = None) -> sa.Index:
    """A unique index that allows one row per value of ``columns`` among the rows for
    which ``counts`` holds.

    PostgreSQL and SQLite index only those rows (a partial index). MariaDB and MySQL have
    no partial indexes: the index also holds ``key``, a generated column that is 1 when
    the row counts and NULL when it does not, and a unique index never compares rows
    with a NULL. The column exists on every database, so that one schema (and one
    migration) serves all; it is not mapped: nothing reads it.

    ``key`` comes first: InnoDB keeps the rows that no longer count (NULL sorts first)
    apart from those that do. Were it last, a row that stops counting would move into
    the gap just before its own entry, which the duplicate check of a neighbour's insert
    (another workflow's next step) locks, and two finalizes would deadlock.
    """
    column = sa.Column(
        key, sa.SmallInteger, sa.Computed(f"CASE WHEN {counts} THEN 1 END", persisted=True),
        nullable=True,
    )
    table.append_column(column)
    return sa.Index(
        name, column, *(table.c[c] for c in columns), unique=True,
        postgresql_where=sa.text(postgresql_counts or counts),
        sqlite_where=sa.text(sqlite_counts or counts),
    )  # fmt: skip


def _sql_list(values: list[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def json_snapshot(data: Any) -> str:
    """A stable text form of ``data``, to notice in-place changes to nested values."""
    return json.dumps(data, sort_keys=True, default=str)


def iter_workflow_classes(geneva: Geneva) -> Iterator[type]:
    """The workflow classes currently defined, newest definition per identity."""
    return iter(geneva.workflow_classes.values())
