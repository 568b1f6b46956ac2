"""Inline runs: a worker that finishes a step runs the workflow's next step itself.

When the next step is due at once and needs no precondition evaluated besides the hero
check, the finalize's transaction claims it too (it is inserted ``in_progress``) and the
worker runs it from what it already knows: one transaction and one commit per step. The
other inline runs withhold the next step's message and claim it the usual way
(``tests/test_relay.py``). Each step runs in an app context of its own, as a worker runs
it; both databases.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import signals, step
from flask_geneva.executor import StepResult, execute_step, run_claimed
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.store import MessageOptions, store_for
from flask_geneva.timeutil import utcnow
from tests.helpers import executions, history, note_texts, outbox_rows
from tests.models import Note, User, db, geneva

#: What the steps below saw: (step, the workflow object, data, hero email).
SEEN: list[tuple[str, Any, dict[str, Any], str | None]] = []


class CarryOn(geneva.Workflow):
    """Three steps due at once; each leaves something for the next."""

    allow_multiple = True

    @step
    def first(self) -> None:
        SEEN.append(("first", self, dict(self.data), self.hero.email))
        self.data["from_first"] = 1
        self.hero.email = "changed-by-first@example.com"
        db.session.add(Note(text="first"))

    @step
    def second(self) -> None:
        SEEN.append(("second", self, dict(self.data), self.hero.email))
        self.data.setdefault("seen", []).append(self.current_execution.step_name)
        self.data["in_place"] = self.data["from_first"] + 1
        db.session.add(Note(text="second"))

    @step
    def third(self) -> None:
        SEEN.append(("third", self, dict(self.data), self.hero.email))
        db.session.add(Note(text="third"))


class LosesItsHero(geneva.Workflow):
    """The first step deletes the hero: the second is canceled by its precondition."""

    @step
    def first(self) -> None:
        db.session.delete(self.hero)

    @step
    def second(self) -> None:
        db.session.add(Note(text="must not run"))


class Conditional(geneva.Workflow):
    """The second step has a condition: it is claimed the usual way."""

    may_proceed_without_hero = True

    @step
    def first(self) -> None:
        pass

    @step(skip_if=lambda wf: wf.data.get("skip", False))
    def second(self) -> None:
        db.session.add(Note(text="second"))


class TakesItsTime(geneva.Workflow):
    """The first step ends after the inline run's deadline (``UNTIL`` below)."""

    may_proceed_without_hero = True

    @step
    def slow(self) -> None:
        BODY_STARTED[0] = time.monotonic()
        while time.monotonic() <= UNTIL[0]:  # until the deadline is behind us
            time.sleep(0.005)

    @step
    def next_one(self) -> None:
        pass


#: The inline deadline TakesItsTime's first step outlasts, and when its body started.
UNTIL: list[float] = [0.0]
BODY_STARTED: list[float] = [0.0]


class Watched(geneva.Workflow):
    """Meanwhile, something else writes to the workflow's row."""

    may_proceed_without_hero = True

    @step
    def first(self) -> None:
        with db.engine.begin() as other:  # another connection: a webhook, an admin
            other.execute(
                sa.update(geneva.Workflow.__table__)
                .where(geneva.Workflow.__table__.c.id == self.id)
                .values(data={"written_elsewhere": True})
            )

    @step
    def second(self) -> None:
        SEEN.append(("second", self, dict(self.data), None))
        self.data["second"] = True


@pytest.fixture(autouse=True)
def _forget_what_was_seen() -> None:
    SEEN.clear()


def run_like_a_worker(app: Flask, execution_id: Any, message_id: str = "message-1") -> list[Any]:
    """Run a message and every step it continues with, each in a new app context, as
    the worker does; return each step's result."""
    results: list[StepResult] = []
    with app.app_context():
        result = execute_step(geneva, execution_id, message_id=message_id, inline_next=True)
    while result is not None:
        results.append(result)
        with app.app_context():
            if result.claimed_next is not None:
                result = run_claimed(geneva, result.claimed_next, inline_next=True)
            elif result.continue_with is not None:
                result = execute_step(
                    geneva, result.continue_with, message_id=message_id, inline_next=True
                )
            else:
                result = None
    return results


def first_execution_id(workflow: Any) -> Any:
    return workflow.current_execution.id


def first_step_run_inline(app: Flask, user: Any) -> tuple[Any, Any]:
    """A CarryOn workflow whose first step ran and claimed the second: the workflow, and
    the claimed step (not run)."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    with app.app_context():
        result = execute_step(geneva, first_execution_id(workflow), inline_next=True)
    assert result is not None and result.claimed_next is not None
    return workflow, result.claimed_next


def assert_given_back(app: Flask, workflow: Any) -> Any:
    """The claimed second step was given back: scheduled again, its body not started,
    the workflow ready, an outbox row and a message for it. Returns the execution."""
    db.session.expire_all()
    second = workflow.current_execution
    assert (second.step_name, second.state, second.started_at) == ("second", "scheduled", None)
    assert workflow.state == "ready"
    assert [row.execution_id for row in outbox_rows(workflow)] == [second.id]
    assert published(app)[-1] == second.id
    return second


def published(app: Flask) -> list[Any]:
    state = app.extensions["geneva"]
    queue = state.broker.queues[state.config.default_queue]
    return [dramatiq.Message.decode(data).args[0] for data in list(queue.queue)]


def test_the_finalize_claims_the_next_step_in_its_own_transaction(app: Flask, user: Any) -> None:
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    before = published(app)
    with app.app_context():
        result = execute_step(
            geneva, first_execution_id(workflow), message_id="message-1", inline_next=True
        )
    assert result is not None and result.exception is None
    assert result.claimed_next is not None and result.continue_with is None
    db.session.expire_all()
    first, second = executions(workflow)
    assert (first.state, first.outcome) == ("completed", "success")
    assert (second.step_name, second.state, second.outcome) == ("second", "in_progress", None)
    assert second.started_at is not None and second.message_id == "message-1"
    assert second.sequence == 2 and second.scheduled_for <= utcnow()
    assert (workflow.state, workflow.current_step_name) == ("performing", "second")
    assert (workflow.previous_step_name, workflow.next_step_name) == ("first", "second")
    assert workflow.execution_count == 2
    # Claimed: no outbox row, no message; the first step's writes committed with it.
    assert outbox_rows(workflow) == []
    assert published(app) == before
    assert note_texts() == ["first"]
    assert result.claimed_next.subject.execution_id == second.id


def test_a_claimed_step_sees_what_the_step_before_it_wrote_and_saves_its_own(
    app: Flask, user: Any
) -> None:
    workflow = CarryOn.create(hero=user, data={"start": True})
    db.session.commit()

    results = run_like_a_worker(app, first_execution_id(workflow))

    assert [r.step_name for r in results] == ["first", "second", "third"]
    assert [r.claimed_next is not None for r in results] == [True, True, False]
    assert [(step, data, email) for step, _, data, email in SEEN] == [
        ("first", {"start": True}, "hero@example.com"),
        ("second", {"start": True, "from_first": 1}, "changed-by-first@example.com"),
        (
            "third",
            {"start": True, "from_first": 1, "seen": ["second"], "in_place": 2},
            "changed-by-first@example.com",
        ),
    ]
    # Every step gets a workflow object of its own, as if loaded for it.
    first, second, third = (seen[1] for seen in SEEN)
    assert first is not second and second is not third
    db.session.expire_all()
    assert workflow.state == "finished"
    assert workflow.data == {"start": True, "from_first": 1, "seen": ["second"], "in_place": 2}
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "completed", "success"),
        ("third", "completed", "success"),
    ]
    assert {e.message_id for e in executions(workflow)} == {"message-1"}
    assert note_texts() == ["first", "second", "third"]
    assert db.session.get(User, user.id).email == "changed-by-first@example.com"
    assert outbox_rows(workflow) == []


def test_a_claimed_step_sends_its_signals_like_any_other(app: Flask, user: Any) -> None:
    sent: list[tuple[str, str, str, str | None]] = []

    def receiver(name: str) -> Any:
        def receive(sender: Any, **payload: Any) -> None:
            sent.append(
                (name, payload["step_name"], payload["outcome"], payload.get("workflow_state"))
            )

        return receive

    receivers = {name: receiver(name) for name in ("checked", "performed", "finalized")}
    signals.precondition_checked.connect(receivers["checked"])
    signals.step_performed.connect(receivers["performed"])
    signals.step_finalized.connect(receivers["finalized"])
    try:
        workflow = CarryOn.create(hero=user)
        db.session.commit()
        run_like_a_worker(app, first_execution_id(workflow))
    finally:
        signals.precondition_checked.disconnect(receivers["checked"])
        signals.step_performed.disconnect(receivers["performed"])
        signals.step_finalized.disconnect(receivers["finalized"])
    assert sent == [
        ("checked", "first", "passed", None),
        ("performed", "first", "completed", None),
        ("finalized", "first", "completed", "ready"),
        ("checked", "second", "passed", None),
        ("performed", "second", "completed", None),
        ("finalized", "second", "completed", "ready"),
        ("checked", "third", "passed", None),
        ("performed", "third", "completed", None),
        ("finalized", "third", "completed", "finished"),
    ]


def test_a_step_whose_hero_is_gone_is_not_claimed_and_its_precondition_cancels_it(
    app: Flask, user: Any
) -> None:
    workflow = LosesItsHero.create(hero=user)
    db.session.commit()

    results = run_like_a_worker(app, first_execution_id(workflow))

    assert [(r.step_name, r.outcome) for r in results] == [
        ("first", "completed"),
        ("second", "canceled"),
    ]
    assert results[0].claimed_next is None and results[0].continue_with is not None
    db.session.expire_all()
    assert workflow.state == "canceled"
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "canceled", "canceled"),
    ]
    assert note_texts() == []


@pytest.mark.parametrize("skip", [False, True], ids=["runs", "skipped"])
def test_a_step_with_a_condition_is_claimed_after_the_commit_as_usual(
    app: Flask, skip: bool
) -> None:
    workflow = Conditional.create(data={"skip": skip})
    db.session.commit()

    results = run_like_a_worker(app, first_execution_id(workflow))

    assert results[0].claimed_next is None and results[0].continue_with is not None
    assert results[1].outcome == ("skipped" if skip else "completed")
    db.session.expire_all()
    assert workflow.state == "finished"
    assert note_texts() == ([] if skip else ["second"])


def test_a_step_claimed_by_a_worker_that_died_is_recovered_by_housekeeping(
    app: Flask, user: Any
) -> None:
    """The claim committed with the step before it: if the worker dies before the body
    runs, the execution is stuck in progress like any whose worker died mid-step."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    with app.app_context():
        result = execute_step(geneva, first_execution_id(workflow), inline_next=True)
    assert result is not None and result.claimed_next is not None
    # The worker dies here: the claimed step never runs.
    recovered = run_housekeeping(now=utcnow() + timedelta(hours=2))
    assert recovered.recovered_in_progress == 1
    db.session.expire_all()
    again = workflow.current_execution
    assert (again.step_name, again.state) == ("second", "scheduled")
    assert [row.execution_id for row in outbox_rows(workflow)] == [again.id]

    run_like_a_worker(app, again.id)

    db.session.expire_all()
    assert workflow.state == "finished"
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "completed", "recovered"),
        ("second", "completed", "success"),
        ("third", "completed", "success"),
    ]
    assert [step for step, *_ in SEEN] == ["first", "second", "third"]


def test_a_claimed_step_recovered_while_it_ran_records_nothing(app: Flask, user: Any) -> None:
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    with app.app_context():
        result = execute_step(geneva, first_execution_id(workflow), inline_next=True)
    assert result is not None and result.claimed_next is not None
    # Its worker stalls for hours after the claim, and housekeeping recovers the step.
    run_housekeeping(now=utcnow() + timedelta(hours=2))
    db.session.commit()

    with app.app_context():
        assert run_claimed(geneva, result.claimed_next, inline_next=True) is None

    db.session.expire_all()
    assert [step for step, *_ in SEEN] == ["first", "second"]
    assert note_texts() == ["first"]  # the second body's note was rolled back
    assert workflow.state == "ready" and workflow.next_step_name == "second"
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "completed", "recovered"),
        ("second", "scheduled", None),
    ]


def test_a_step_that_ends_past_the_deadline_publishes_the_next(app: Flask) -> None:
    """The deadline is checked when the step finalizes, not when it starts."""
    workflow = TakesItsTime.create()
    db.session.commit()
    UNTIL[0] = time.monotonic() + 0.5
    with app.app_context():
        result = execute_step(
            geneva, first_execution_id(workflow), inline_next=True, inline_deadline=UNTIL[0]
        )
    assert BODY_STARTED[0] < UNTIL[0]  # the step started before the deadline ...
    assert result is not None and result.exception is None
    assert result.claimed_next is None and result.continue_with is None  # ... ended after
    db.session.expire_all()
    following = workflow.current_execution
    assert (following.step_name, following.state) == ("next_one", "scheduled")
    assert published(app)[-1] == following.id


def test_a_claimed_step_sees_what_others_wrote_to_the_workflow_meanwhile(app: Flask) -> None:
    """The next step's workflow is built from the row as the finalize left it (read
    under its lock), not from the object the step before had."""
    workflow = Watched.create(data={"mine": 1})
    db.session.commit()

    results = run_like_a_worker(app, first_execution_id(workflow))

    assert [r.claimed_next is not None for r in results] == [True, False]
    assert SEEN[0][2] == {"written_elsewhere": True}
    db.session.expire_all()
    assert workflow.data == {"written_elsewhere": True, "second": True}


def test_a_claim_that_cannot_be_set_up_is_given_back(app: Flask, user: Any) -> None:
    """Anything failing before the body starts (here a load listener of the app) hands
    the execution back: scheduled again, with its outbox row and message."""
    workflow, claimed = first_step_run_inline(app, user)
    claimed_id = claimed.subject.execution_id

    def refuse(target: Any, context: Any) -> None:
        raise RuntimeError("a load listener that fails")

    sa.event.listen(CarryOn, "load", refuse)
    try:
        with app.app_context():
            assert run_claimed(geneva, claimed) is None
    finally:
        sa.event.remove(CarryOn, "load", refuse)

    db.session.expire_all()
    second = workflow.current_execution
    assert (second.id, second.state, second.started_at) == (claimed_id, "scheduled", None)
    assert workflow.state == "ready" and workflow.current_step_name is None
    assert [row.execution_id for row in outbox_rows(workflow)] == [claimed_id]
    assert published(app)[-1] == claimed_id
    assert [step for step, *_ in SEEN] == ["first"]  # the second body never ran

    run_like_a_worker(app, claimed_id)

    db.session.expire_all()
    assert workflow.state == "finished"
    assert [step for step, *_ in SEEN] == ["first", "second", "third"]
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "completed", "success"),
        ("third", "completed", "success"),
    ]


def test_past_the_deadline_the_next_step_is_published_instead(app: Flask, user: Any) -> None:
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    with app.app_context():
        result = execute_step(
            geneva,
            first_execution_id(workflow),
            inline_next=True,
            inline_deadline=time.monotonic() - 1,
        )
    assert result is not None
    assert result.claimed_next is None and result.continue_with is None
    db.session.expire_all()
    second = workflow.current_execution
    assert (second.step_name, second.state) == ("second", "scheduled")
    assert published(app)[-1] == second.id
    assert [row.execution_id for row in outbox_rows(workflow)] == [second.id]


def test_a_worker_runs_a_workflow_to_the_end_in_one_message(app: Flask, user: Any) -> None:
    """Through the real actor and a Dramatiq worker thread on the memory broker."""
    state = app.extensions["geneva"]
    worker = dramatiq.Worker(state.broker, worker_threads=1)
    worker.start()
    try:
        workflow = CarryOn.create(hero=user)
        db.session.commit()
        state.broker.join(state.config.default_queue, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    db.session.expire_all()
    assert workflow.state == "finished"
    messages = {e.message_id for e in executions(workflow)}
    assert len(messages) == 1 and None not in messages
    assert note_texts() == ["first", "second", "third"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 3


class Interrupted(BaseException):
    """What a time limit or a signal would raise in the worker's thread."""


def test_a_claimed_step_interrupted_before_it_runs_is_given_back(app: Flask, user: Any) -> None:
    """An interruption after the finalize's commit (here a step_finalized receiver that
    raises a BaseException) hands the claimed next step back: scheduled, published."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()

    def interrupt(sender: Any, **payload: Any) -> None:
        raise Interrupted()

    signals.step_finalized.connect(interrupt)
    try:
        with app.app_context(), pytest.raises(Interrupted):
            execute_step(geneva, first_execution_id(workflow), inline_next=True)
    finally:
        signals.step_finalized.disconnect(interrupt)

    assert_given_back(app, workflow)
    assert history(workflow)[0] == ("first", "completed", "success")


def test_a_hero_check_that_fails_keeps_the_step_before_and_the_claim_decides(
    app: Flask, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error while the finalize loads the next step's hero (a real one: a
    query that fails, which aborts a PostgreSQL transaction) does not cost the step
    before its outcome: the next step is claimed the usual way, and what its hero check
    raises there is a precondition's exception (the default policy pauses).

    This is the path of a hero the lock does not load itself (a key it cannot join on,
    such as a UUID, or a hero class no claim has met yet): the store is kept from
    joining it here."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    store = store_for(geneva, db.session)
    monkeypatch.setattr(store, "_hero_guess", None)
    monkeypatch.setattr(store, "_guess_hero", lambda hero_type: None)
    monkeypatch.setattr(store, "joinable_hero", lambda hero_type: None)
    real_load_hero = geneva.load_hero
    loads: list[str] = []

    def load_hero(hero_type: Any, hero_id: Any) -> Any:
        loads.append(hero_type)
        if len(loads) == 1:  # the first step's own claim
            return real_load_hero(hero_type, hero_id)
        if len(loads) == 2:  # the finalize's check for the second step
            db.session.execute(sa.text("SELECT * FROM no_such_hero_table"))
        raise RuntimeError("the hero service is down")  # the second step's claim

    first_id = first_execution_id(workflow)
    monkeypatch.setattr(geneva, "load_hero", load_hero)
    results = run_like_a_worker(app, first_id)

    assert len(loads) == 3
    assert [(r.step_name, r.outcome) for r in results] == [
        ("first", "completed"),
        ("second", "exception"),
    ]
    assert results[0].claimed_next is None and results[0].continue_with is not None
    db.session.expire_all()
    assert workflow.state == "paused"
    assert history(workflow) == [
        ("first", "completed", "success"),
        ("second", "failed", "failed"),
    ]
    assert note_texts() == ["first"]


def test_a_worker_interrupted_between_two_steps_gives_the_claimed_one_back(
    app: Flask, user: Any
) -> None:
    """The worker's own loop: an interruption after the first step's app context ended
    (here its teardown) hands back the step that step's finalize had claimed."""
    state = app.extensions["geneva"]
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    first_id = first_execution_id(workflow)
    teardowns: list[int] = []

    def interrupt_once(_error: Any) -> None:
        teardowns.append(1)
        if len(teardowns) == 1:
            raise Interrupted()

    app.teardown_appcontext_funcs.insert(0, interrupt_once)
    try:
        with pytest.raises(Interrupted):
            state._perform_step(first_id)
    finally:
        app.teardown_appcontext_funcs.remove(interrupt_once)

    assert_given_back(app, workflow)
    assert [step for step, *_ in SEEN] == ["first"]


def test_a_listener_failing_after_the_commit_gives_the_claimed_step_back(
    app: Flask, user: Any
) -> None:
    """An ``after_commit`` listener of the app that raises (the commit itself went
    through): the step before keeps its outcome and the step its finalize claimed is
    handed back, not left in progress for housekeeping."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    commits: list[int] = []

    def fail_once(session: Any) -> None:
        if session.in_nested_transaction():
            return  # a savepoint (the hero check's, on PostgreSQL)
        commits.append(1)
        if len(commits) == 2:  # the first step's finalize (the first is its claim)
            raise RuntimeError("an after_commit listener that fails")

    sa.event.listen(sa.orm.Session, "after_commit", fail_once)
    try:
        with app.app_context(), pytest.raises(RuntimeError, match="after_commit listener"):
            execute_step(geneva, first_execution_id(workflow), inline_next=True)
    finally:
        sa.event.remove(sa.orm.Session, "after_commit", fail_once)

    second = assert_given_back(app, workflow)
    assert history(workflow)[0] == ("first", "completed", "success")

    run_like_a_worker(app, second.id)
    db.session.expire_all()
    assert workflow.state == "finished"
    assert [step for step, *_ in SEEN] == ["first", "second", "third"]


def test_objects_kept_after_commit_show_the_finalized_rows(app: Flask, user: Any) -> None:
    """A session that does not expire its objects at commit (``expire_on_commit=False``)
    still shows the workflow and the execution as the finalize's statements left them."""
    workflow = CarryOn.create(hero=user)
    db.session.commit()
    session = db.session()
    session.expire_on_commit = False
    try:
        first = workflow.current_execution
        result = execute_step(geneva, first.id)
        assert result is not None and result.outcome == "completed"
        assert (first.state, first.outcome) == ("completed", "success")
        assert workflow.state == "ready"
        assert workflow.previous_step_name == "first"
        assert workflow.next_step_name == "second"
    finally:
        session.expire_on_commit = True


def test_a_claim_is_given_back_only_for_its_own_workflow(app: Flask, user: Any) -> None:
    """Giving back checks whose execution it is: after a commit that failed, SQLite may
    have given the claimed execution's id to another workflow's execution."""
    workflow, claimed = first_step_run_inline(app, user)
    claimed_id = claimed.subject.execution_id
    other = Conditional.create()
    db.session.commit()
    statements = store_for(geneva, db.session)
    options: dict[str, Any] = {"now": utcnow(), "options": MessageOptions("geneva")}

    assert not statements.give_back(db.session, claimed_id, other.id, **options)
    db.session.commit()
    db.session.expire_all()
    claimed = db.session.get(geneva.StepExecution, claimed_id)
    assert claimed.state == "in_progress"
    assert outbox_rows(workflow) == []

    assert statements.give_back(db.session, claimed_id, workflow.id, **options)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(geneva.StepExecution, claimed_id).state == "scheduled"
    assert [row.execution_id for row in outbox_rows(workflow)] == [claimed_id]
