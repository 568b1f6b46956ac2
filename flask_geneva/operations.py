"""Operator actions: ``resume()``, ``cancel()``, ``pause()`` and ``skip()`` from outside a step.

Each one locks the workflow row (then its scheduled execution's), asks the state
machine (:func:`flask_geneva.machine.operator_transition`) what the action does in the
workflow's state, has the store write it, and leaves the commit to the caller. A call
the state does not allow raises :class:`~flask_geneva.InvalidStateError` and changes
nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from flask_geneva import machine
from flask_geneva.errors import InvalidStateError
from flask_geneva.machine import Move, OperatorAction
from flask_geneva.runs import following, message_options
from flask_geneva.store import Store, Target, store_for
from flask_geneva.timeutil import utcnow


def _describe(workflow: Any) -> str:
    return f"{workflow.workflow_class} #{workflow.id}"


def act(workflow: Any, action: OperatorAction) -> None:
    """Take ``action`` on ``workflow`` (see the module's docstring)."""
    geneva = workflow._geneva
    session: Session = sa.orm.object_session(workflow) or geneva.db.session()
    if workflow.id is None:
        session.flush()
    store = store_for(geneva, session)
    locked = store.lock_workflow(session, workflow.id)
    if locked is None:
        raise InvalidStateError(f"{_describe(workflow)} no longer exists")
    kept = store.scheduled_execution(session, locked.id)
    transition = machine.operator_transition(
        action, str(locked.state), kept_execution=kept is not None, describe=_describe(locked)
    )
    step_name = kept.step_name if kept is not None else locked.next_step_name
    if transition.move in (Move.ADVANCE, Move.REPEAT):
        if step_name is None:
            raise InvalidStateError(
                f"cannot {action.value} {_describe(locked)}: it has no "
                f"{'pending' if action == OperatorAction.SKIP else 'next'} step"
            )
        _require_step(locked, step_name, action.value)
    after = None
    if transition.move == Move.ADVANCE:
        after = following(type(locked)._geneva_definition, step_name)
    now = utcnow()
    ends_new = transition.step_state is not None and kept is None
    if ends_new and step_name is None:
        # A paused workflow with nothing to record the action on: the workflow alone.
        transition = machine.Transition(transition.move, reason=transition.reason)
    plan = machine.plan(transition, step_name, after)
    session.flush()  # the caller's pending writes go first, in their order
    applied = _apply(store, session, locked, kept, step_name, plan, now)
    _sync(workflow, locked, applied.workflow_values)


def _apply(store: Store, session: Session, locked: Any, kept: Any, step_name: str | None,
           plan: machine.Plan, now: Any) -> Any:
    release_at, release = None, True
    if kept is not None and plan.transition.move == Move.RELEASE:
        # A kept execution that waits for a signal runs at once if one came while the
        # workflow was paused; it needs no message while it waits without a timeout.
        release_at = store.release_time(session, locked.id, kept, now)
        release = release_at is not None or kept.waiting_for is None
    return store.apply(
        session,
        Target(locked.id, kept.id if kept is not None else None, step_name,
               locked.execution_count or 0),
        plan,
        now,
        options=message_options(type(locked)),
        release_at=release_at,
        release=release,
    )  # fmt: skip


def _sync(workflow: Any, locked: Any, values: dict[str, Any]) -> None:
    """Tell the caller's objects what the store wrote, as committed state."""
    for target in {id(workflow): workflow, id(locked): locked}.values():
        for key, value in values.items():
            set_committed_value(target, key, value)
    if locked is not workflow:
        for attribute in sa.inspect(type(locked)).column_attrs:
            if attribute.key not in values:
                set_committed_value(workflow, attribute.key, getattr(locked, attribute.key))


def cancel_workflow(workflow: Any) -> None:
    """Cancel a ready or paused workflow; its scheduled execution is canceled.

    A paused workflow with nothing scheduled (its step failed or paused itself) gets a
    canceled / canceled execution of the step ``resume()`` would have run, so the
    operator's action is in the history like ``skip()``'s.
    """
    act(workflow, OperatorAction.CANCEL)


def pause_workflow(workflow: Any) -> None:
    """Pause a ready workflow; its scheduled execution is kept and runs after resume()."""
    act(workflow, OperatorAction.PAUSE)


def resume_workflow(workflow: Any) -> None:
    """Resume a paused workflow.

    A kept scheduled execution runs at its original time (at once if overdue); otherwise
    a new execution of ``next_step_name`` is scheduled now, which retries a failed step.
    """
    act(workflow, OperatorAction.RESUME)


def skip_step(workflow: Any) -> None:
    """Skip the pending step of a ready or paused workflow and schedule the next one."""
    act(workflow, OperatorAction.SKIP)


def _require_step(workflow: Any, step_name: str, action: str) -> None:
    cls = type(workflow)
    if not cls.is_defined():
        raise InvalidStateError(
            f"cannot {action} {_describe(workflow)}: its workflow class "
            f"{workflow.workflow_class!r} is no longer defined; cancel it instead"
        )
    if cls._geneva_definition.get_step(step_name) is None:
        raise InvalidStateError(
            f"cannot {action} {_describe(workflow)}: step {step_name!r} no longer exists in "
            f"{cls.__name__} (steps: {', '.join(cls.step_names())}); cancel it instead"
        )
