"""The database cost of one plain step: at most three commits (we expect two: the claim
and the finalize; one for a step of an inline run). ``benchmarks/step_cost.py`` prints the
full figures."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from flask_geneva import step
from flask_geneva.executor import execute_step, run_claimed
from tests.helpers import scheduled_execution
from tests.models import db, geneva

#: The ceiling the project accepts for one plain step.
MAX_COMMITS_PER_STEP = 3


class PlainStepsWorkflow(geneva.Workflow):
    for _ in range(3):
        step(lambda wf: None)


@pytest.fixture
def engine_events(app):
    """Every statement and commit the engine sees, in order."""
    events: list[str] = []

    def on_statement(conn, cursor, statement, *args):
        events.append(statement.split(None, 1)[0].upper())

    def on_commit(conn):
        events.append("COMMIT")

    engine = db.engine
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    yield events
    event.remove(engine, "before_cursor_execute", on_statement)
    event.remove(engine, "commit", on_commit)


def test_a_plain_step_costs_at_most_three_commits(app, user, engine_events):
    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    for _ in range(3):  # middle steps schedule the next one; the last one finishes
        execution_id = scheduled_execution(db.session.get(geneva.Workflow, workflow_id)).id
        db.session.remove()
        engine_events.clear()
        with app.app_context():  # as a worker runs each message
            result = execute_step(geneva, execution_id)
        assert result is not None and result.exception is None
        assert 1 <= engine_events.count("COMMIT") <= MAX_COMMITS_PER_STEP, engine_events
        # Nothing is left running after the outcome is committed.
        assert engine_events[-1] == "COMMIT", engine_events
    assert db.session.get(geneva.Workflow, workflow_id).state == "finished"


def test_a_step_of_an_inline_run_costs_one_commit(app, user, engine_events):
    """A worker running a workflow's due steps itself claims each in the finalize of the
    one before: after the first step (claim, finalize), one commit a step."""
    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    execution_id = scheduled_execution(wf).id
    db.session.remove()
    commits = []
    statements = []
    result = None
    for _ in range(3):
        engine_events.clear()
        with app.app_context():  # each step in its own context, as the worker does
            if result is None:
                result = execute_step(geneva, execution_id, inline_next=True)
            else:
                result = run_claimed(geneva, result.claimed_next, inline_next=True)
        assert result is not None and result.exception is None
        commits.append(engine_events.count("COMMIT"))
        statements.append(len(engine_events) - commits[-1])
        assert engine_events[-1] == "COMMIT", engine_events
    assert commits == [2, 1, 1]
    assert db.session.get(geneva.Workflow, workflow_id).state == "finished"
    # The second step was claimed by the first's finalize and claims nothing itself
    # (the third finishes the workflow): fewer statements than the first, which did both.
    assert statements[1] < statements[0], statements


def test_warming_up_the_hot_path_writes_nothing(app, user):
    """A worker compiles the hot path's statements at boot by running them on ids that
    match nothing; the workflows there are untouched."""
    from flask_geneva.store import store_for

    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    tables = (geneva.Workflow, geneva.StepExecution, geneva.OutboxMessage)

    def snapshot():
        return [
            sorted(tuple(row) for row in db.session.execute(db.select(model.__table__)))
            for model in tables
        ]

    before = snapshot()
    db.session.remove()
    with app.app_context():
        store_for(geneva, db.session).warm_up(db.session)
    db.session.remove()
    assert snapshot() == before
    assert db.session.get(geneva.Workflow, workflow_id).state == "ready"


@pytest.mark.postgresql_only
def test_the_claim_loads_the_hero_with_its_lock(app, user, engine_events):
    """On PostgreSQL a step of a workflow with a hero costs three statements: the lock
    (which loads the workflow, the execution and the hero in one ``SELECT``), the claim
    and the finalize; no ``SELECT`` of the hero of its own. The first claim of a hero
    class loads it separately and teaches the store which class to join."""
    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    counts = []
    for _ in range(3):
        execution_id = scheduled_execution(db.session.get(geneva.Workflow, workflow_id)).id
        db.session.remove()
        engine_events.clear()
        with app.app_context():
            result = execute_step(geneva, execution_id)
        assert result is not None and result.exception is None
        counts.append(len(engine_events) - engine_events.count("COMMIT"))
    assert counts[1:] == [3, 3], engine_events
    assert db.session.get(geneva.Workflow, workflow_id).state == "finished"


def test_a_deleted_hero_found_by_the_claims_lock_cancels(app, user):
    """The hero the lock loads is fresh: deleted after the step before, it cancels the
    workflow at the next claim (the joined row is missing)."""
    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    workflow_id = wf.id
    execution_id = scheduled_execution(wf).id
    db.session.remove()
    with app.app_context():
        execute_step(geneva, execution_id)  # teaches the store the hero's class
    workflow = db.session.get(geneva.Workflow, workflow_id)
    next_id = scheduled_execution(workflow).id
    db.session.delete(workflow.hero)
    db.session.commit()
    db.session.remove()
    with app.app_context():
        result = execute_step(geneva, next_id)
    assert result is not None and result.outcome == "canceled"
    assert db.session.get(geneva.Workflow, workflow_id).state == "canceled"


class HeroReadingWorkflow(geneva.Workflow):
    for _ in range(3):
        step(lambda wf: wf.hero.email)


def test_an_inline_step_gets_its_hero_from_the_step_before(app, user):
    """The finalize that claims the next step reads the hero under its lock; the next
    step's body gets that hero without loading it again (no ``SELECT`` of the hero's
    table in an inline step), and the hero is the one in the database."""
    from tests.models import User

    wf = HeroReadingWorkflow.create(hero=user)
    db.session.commit()
    workflow_id, user_id = wf.id, user.id
    execution_id = scheduled_execution(wf).id
    db.session.remove()
    hero_reads: list[str] = []

    def on_statement(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT") and "FROM users" in statement:
            hero_reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", on_statement)
    try:
        with app.app_context():
            first = execute_step(geneva, execution_id, inline_next=True)  # teaches the store
            result = run_claimed(geneva, first.claimed_next, inline_next=True)
            assert result is not None and result.claimed_next is not None
            hero_reads.clear()
        with app.app_context():
            last = run_claimed(geneva, result.claimed_next, inline_next=True)
            reads_in_step = list(hero_reads)
            hero = db.session.get(User, user_id)
    finally:
        event.remove(db.engine, "before_cursor_execute", on_statement)
    assert last is not None and last.exception is None
    if db.engine.dialect.name in ("mysql", "mariadb"):
        # A locking join there would lock the hero's row too (no FOR UPDATE OF on
        # MariaDB): the hero is read on its own, unlocked, once.
        assert len(reads_in_step) == 1 and "FOR UPDATE" not in reads_in_step[0]
    else:
        assert reads_in_step == []
    assert hero.email == "hero@example.com"
    assert db.session.get(geneva.Workflow, workflow_id).state == "finished"


@pytest.mark.postgresql_only
def test_a_worker_warmed_up_claims_its_first_hero_step_with_one_lock(
    app, user, engine_events, monkeypatch
):
    """At boot a worker reads the hero classes of the newest workflows, so even its very
    first claim loads the hero with the lock (three statements, no hero ``SELECT``)."""
    from flask_geneva.store import store_for

    wf = PlainStepsWorkflow.create(hero=user)
    db.session.commit()
    execution_id = scheduled_execution(wf).id
    monkeypatch.setitem(geneva.__dict__, "_geneva_stores", {})  # a new process's stores
    db.session.remove()
    with app.app_context():
        store_for(geneva, db.session).warm_up(db.session)
    db.session.remove()
    engine_events.clear()
    with app.app_context():
        result = execute_step(geneva, execution_id)
    assert result is not None and result.exception is None
    assert len(engine_events) - engine_events.count("COMMIT") == 3, engine_events
