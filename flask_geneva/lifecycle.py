"""Creating workflows: ``SomeWorkflow.create(hero=..., data=...)``."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from flask_geneva.errors import (
    InvalidHeroError,
    InvalidWorkflowDataError,
    NotAWorkflowClassError,
    WorkflowAlreadyOngoing,
)
from flask_geneva.jsonvalues import json_text
from flask_geneva.runs import message_options
from flask_geneva.states import ONGOING_STATES, WorkflowState
from flask_geneva.store import store_for
from flask_geneva.timeutil import utcnow


def create_workflow(cls: Any, hero: Any = None, data: dict[str, Any] | None = None) -> Any:
    """See :meth:`flask_geneva.models.WorkflowMixin.create`."""
    if not cls.is_defined():
        raise NotAWorkflowClassError(
            "create() is called on a workflow class (a subclass of geneva.Workflow), "
            "not on geneva.Workflow itself"
        )
    geneva = cls._geneva
    if hero is None and not cls.may_proceed_without_hero:
        raise InvalidHeroError(
            f"{cls.__name__}.create() needs a hero; set may_proceed_without_hero = True on "
            f"the class to allow workflows without one"
        )
    data = _checked_data(cls, data)
    session = geneva.db.session
    hero_type, hero_id = geneva.identify_hero(hero)
    now = utcnow()
    definition = cls._geneva_definition
    values: dict[str, Any] = {
        "workflow_class": cls._geneva_identity,
        "hero_type": hero_type,
        "hero_id": hero_id,
        "data": data,
        "state": WorkflowState.READY,
        "allow_multiple_flag": bool(cls.allow_multiple),
        # The first execution is numbered 1; the workflow row says so from its INSERT.
        "execution_count": 1,
        "next_step_name": definition.steps[0].name if definition.steps else None,
        "created_at": now,
        "updated_at": now,
    }
    if not definition.steps:
        values.update(state=WorkflowState.FINISHED, execution_count=0, transitioned_at=now)
    session.flush()  # the caller's pending writes: their errors are theirs, raised as they are
    store = store_for(geneva, session)
    if definition.steps:
        first = definition.steps[0]
        # With its first execution and outbox row (one statement on PostgreSQL).
        workflow = store.insert_workflow_scheduling(
            session, cls, values, step_name=first.name, run_at=now + first.wait, now=now,
            options=message_options(cls),
        )  # fmt: skip
    else:
        workflow = store.insert_workflow(session, cls, values)
    if workflow is None:  # the one-ongoing index kept the row out; the transaction goes on
        _refuse_second_ongoing(session, cls, hero_type, hero_id)
        raise WorkflowAlreadyOngoing(  # pragma: no cover - it ended meanwhile
            f"{cls.__name__} is already ongoing for {hero_type}:{hero_id}"
        )
    if hero is not None:
        workflow.__dict__["_geneva_hero_cache"] = hero
    return workflow


def _checked_data(cls: Any, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidWorkflowDataError(
            f"{cls.__name__}.create(data=...) takes a dict, got {type(data).__name__}"
        )
    try:
        # Round-tripped, so the dict in memory is what the database will give back
        # (tuples become lists, keys become strings).
        return dict(json.loads(json_text(data)))
    except (TypeError, ValueError) as error:
        raise InvalidWorkflowDataError(
            f"{cls.__name__}.create(data=...) must be JSON-serialisable: {error}"
        ) from None


def _refuse_second_ongoing(session: Any, cls: Any, hero_type: str, hero_id: str | None) -> None:
    base = cls._geneva.Workflow
    existing = session.scalars(
        sa.select(base.id)
        .where(
            base.workflow_class == cls._geneva_identity,
            base.hero_type == hero_type,
            base.hero_id == hero_id,
            base.allow_multiple_flag.is_(False),
            base.state.in_(ONGOING_STATES),
        )
        .limit(1)
    ).first()
    if existing is not None:
        raise WorkflowAlreadyOngoing(
            f"{cls.__name__} #{existing} is already ongoing for {hero_type}:{hero_id}; "
            f"set allow_multiple = True on the class to allow several at once"
        )
