"""The finalize: decide the outcome, then write it together with the body's writes.

The decision is :mod:`flask_geneva.machine`'s (a transition and its plan); the store
locks again, checks that the execution is still ``in_progress`` (housekeeping may have
recovered it), and writes the plan. In a worker's inline run, a next step that is due at
once and needs no precondition but the hero check is claimed in this same transaction
(:class:`~flask_geneva.runs.ClaimedStep`); one that needs preconditions is kept from the
broker and named for the worker to run (``continue_with``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_geneva import machine
from flask_geneva.flow import FlowControlSignal
from flask_geneva.loading import covers, mapped_columns, values_from
from flask_geneva.machine import Transition
from flask_geneva.policies import ExceptionPolicy
from flask_geneva.publishing import take_for_inline_run
from flask_geneva.runs import Claim, ClaimedStep, Subject, following, message_options, store_of
from flask_geneva.states import StepOutcome, StepState
from flask_geneva.store import Applied, Store, Target
from flask_geneva.timeutil import utcnow


@dataclass(frozen=True)
class Finalized:
    """What the finalize wrote: the states for ``step_finalized``, and what an inline run
    goes on with (an execution id to claim, or one already claimed)."""

    workflow_state: str
    step_state: str
    continue_with: Any = None
    claimed_next: ClaimedStep | None = None


def decide(
    session: Session,
    claim: Claim,
    call: FlowControlSignal | None,
    error: BaseException | None,
    policy: ExceptionPolicy | None,
    handler_call: FlowControlSignal | None,
) -> Transition:
    """The transition for what the body (or its handler) did."""
    if error is None:
        return machine.after_body(call)
    assert policy is not None
    prior = 0
    if policy.handler is None and policy.action == "reattempt":
        prior = prior_reattempts(session, claim.workflow, claim.execution, claim.step.name)
    return machine.after_failure(policy, prior_reattempts=prior, handler_call=handler_call)


def finalize(
    session: Session,
    claim: Claim,
    transition: Transition,
    error: BaseException | None,
    *,
    inline_next: bool,
    message_id: str | None,
) -> Finalized | None:
    """Write ``transition`` for the claimed execution; None, having written nothing, when
    the execution is no longer in progress."""
    workflow, subject, step = claim.workflow, claim.subject, claim.step
    model = type(workflow)
    store = store_of(model, session)
    now = utcnow()
    plan = machine.plan(transition, step.name, following(claim.definition, step.name))
    target = Target(subject.workflow_id, subject.execution_id, step.name, 0)
    claim_next = False
    hero: tuple[type, dict[str, Any]] | None = None
    applied: Applied | None = None
    options = message_options(model)
    hero_class = None
    if inline_next and error is None and _may_claim_at_once(model, store, claim, plan):
        if not model.may_proceed_without_hero:
            hero_class = store.joinable_hero(workflow.hero_type)
        if hero_class is not None:
            # One lock reads the hero's row too: the next step's hero check.
            with_hero = store.finalize_with_hero(
                session, target, plan, now, options=options, message_id=message_id,
                hero_class=hero_class,
            )  # fmt: skip
            if with_hero is None:
                return None
            applied, values = with_hero
            if values is not None:
                claim_next, hero = True, (hero_class, values)
        else:
            checked = _lock_and_check_hero(session, store, workflow, subject.execution_id)
            if checked is None:
                return None
            # No hero (or its check raised): the next step is claimed the usual way.
            claim_next, hero = checked
    if applied is None:
        applied = store.finalize(
            session, target, plan, now, options=options,
            error=error if transition.records_error else None,
            claim_next=claim_next, message_id=message_id,
        )  # fmt: skip
    if applied is None:
        return None
    workflow_state = plan.workflow_state.value
    step_state = str(transition.step_state)
    if claim_next and applied.workflow_row is not None:
        claimed = _claimed_step(claim, applied, plan.schedule or "", now, message_id, hero)
        return Finalized(workflow_state, step_state, claimed_next=claimed)
    continue_with = None
    if inline_next and plan.schedule is not None:
        continue_with = take_for_inline_run(session, subject.workflow_id)
    return Finalized(workflow_state, step_state, continue_with)


def _may_claim_at_once(model: Any, store: Store, claim: Claim, plan: machine.Plan) -> bool:
    """Whether the next step can be claimed in the finalize's transaction: it is due at
    once and its only precondition is the hero check (done in that transaction, under
    the lock, as the claim would do it)."""
    if plan.schedule is None or plan.schedule_in or plan.schedule == claim.step.name:
        return False
    if claim.definition.cancel_conditions:
        return False
    following_step = claim.definition.get_step(plan.schedule)
    if following_step is None:
        return False
    if following_step.skip_if is not None or following_step.only_if is not None:
        return False
    if following_step.signal is not None:  # it waits, or takes its signal at its claim
        return False
    return covers(model, store.sql.workflow_columns)


def _lock_and_check_hero(
    session: Session, store: Store, workflow: Any, execution_id: Any
) -> tuple[bool, None] | None:
    """The claim's hero check, for a next step claimed in the finalize, when no lock can
    read the hero's row (:meth:`Store.finalize_with_hero` does when one can): under the
    lock of the workflow and the execution, taken first. ``(True, None)`` when the hero
    is there or the class needs none, ``(False, None)`` when it is not or its check
    raised, None when the execution is no longer in progress."""
    model = type(workflow)
    if model.may_proceed_without_hero:
        return True, None
    locked = store.lock_states(session, execution_id)
    if locked is None or locked.execution_state != StepState.IN_PROGRESS:
        return None
    workflow.__dict__.pop("_geneva_hero_cache", None)
    try:
        with store.contained(session):
            return workflow.hero is not None, None
    except Exception:
        return False, None  # the usual claim loads it again and records what it raises


def _claimed_step(
    claim: Claim,
    applied: Applied,
    next_step: str,
    now: datetime,
    message_id: str | None,
    hero: tuple[type, dict[str, Any]] | None,
) -> ClaimedStep:
    """The next execution, claimed by the finalize, as the inline run builds it."""
    model = type(claim.workflow)
    subject = claim.subject
    workflow_values = values_from(model, applied.workflow_row)
    execution_model = model._geneva.StepExecution
    execution_values: dict[str, Any] = {key: None for key, _ in mapped_columns(execution_model)}
    execution_values.update(
        id=applied.new_execution_id,
        workflow_id=subject.workflow_id,
        sequence=workflow_values["execution_count"],
        step_name=next_step,
        state=StepState.IN_PROGRESS,
        scheduled_for=now,
        started_at=now,
        message_id=message_id,
        created_at=now,
    )
    next_subject = Subject(
        subject.sender, subject.workflow_id, subject.workflow_class,
        applied.new_execution_id, next_step,
    )  # fmt: skip
    step = claim.definition.get_step(next_step)
    assert step is not None
    return ClaimedStep(
        model, workflow_values, execution_values, step, claim.definition, next_subject,
        message_id, hero,
    )  # fmt: skip


def prior_reattempts(session: Session, workflow: Any, execution: Any, step_name: str) -> int:
    """How many failed/reattempted executions of this step directly precede this one:
    those after the newest earlier execution that ended any other way."""
    model = type(execution)
    earlier = (model.workflow_id == workflow.id, model.sequence < execution.sequence)
    # An attempt the database ended (recovered, with its error kept: flask_geneva.conflicts)
    # neither counts nor ends the count.
    conflict = sa.and_(
        model.outcome.is_not(None),
        model.outcome == StepOutcome.RECOVERED,
        model.error_class_name.is_not(None),
    )
    last_other_outcome = (
        sa.select(sa.func.coalesce(sa.func.max(model.sequence), 0))
        .where(
            *earlier,
            ~conflict,
            sa.or_(
                model.step_name != step_name,
                model.state != StepState.FAILED,
                model.outcome.is_(None),
                model.outcome != StepOutcome.REATTEMPTED,
            ),
        )
        .scalar_subquery()
    )
    count = session.scalar(
        sa.select(sa.func.count())
        .select_from(model)
        .where(*earlier, ~conflict, model.sequence > last_other_outcome)
    )
    return int(count or 0)
