"""``Geneva(db=db, uuid_primary_keys=True)``: workflows and executions keyed by UUIDs, on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import step
from flask_geneva.executor import execute_step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.uuid_models import Customer, Shop, uuid_db, uuid_geneva


class LoyaltyWorkflow(uuid_geneva.Workflow):
    @step
    def welcome(self):
        self.data["welcomed"] = str(self.hero.id)

    @step(wait=3600)
    def reward(self):
        self.data["rewarded"] = True




@pytest.fixture
def customer(uuid_app: Flask) -> Customer:
    hero = Customer(name="Ada")
    uuid_db.session.add(hero)
    uuid_db.session.commit()
    return hero


def _scheduled(wf):
    model = uuid_geneva.StepExecution
    return uuid_db.session.scalars(
        sa.select(model).where(model.workflow_id == wf.id, model.state == "scheduled")
    ).one()


def test_workflows_and_executions_have_uuid_keys(uuid_app, customer):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()
    assert isinstance(wf.id, uuid.UUID)
    execution = _scheduled(wf)
    assert isinstance(execution.id, uuid.UUID)
    assert execution.workflow_id == wf.id
    column_types = {
        table: sa.inspect(uuid_db.engine).get_columns(table)[0]["type"]
        for table in ("geneva_workflows", "geneva_step_executions")
    }
    for column_type in column_types.values():
        assert not isinstance(column_type, sa.Integer)


def test_a_workflow_runs_to_the_end(uuid_app, customer):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert wf.data == {"welcomed": str(customer.id), "rewarded": True}
    assert [e.step_name for e in wf.execution_history] == ["welcome", "reward"]
    assert all(isinstance(e.id, uuid.UUID) for e in wf.execution_history)


def test_an_integer_keyed_hero_in_a_uuid_setup(uuid_app):
    shop = Shop()
    uuid_db.session.add(shop)
    uuid_db.session.commit()

    class ShopWorkflow(uuid_geneva.Workflow):
        @step
        def visit(self):
            self.hero.visits += 1

    wf = ShopWorkflow.create(hero=shop)
    uuid_db.session.commit()
    assert (wf.hero_type, wf.hero_id) == ("Shop", str(shop.id))
    speedrun_workflow(wf)
    uuid_db.session.expire_all()
    assert uuid_db.session.get(Shop, shop.id).visits == 1


def test_the_step_message_carries_the_uuid_as_text(uuid_app, customer):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()  # publishes the due first step
    execution = _scheduled(wf)
    broker = uuid_app.extensions["geneva"].broker
    queued = [dramatiq.Message.decode(data) for data in list(broker.queues["geneva"].queue)]
    assert [m.args for m in queued if m.args == (str(execution.id),)] == [(str(execution.id),)]
    assert execute_step(uuid_geneva, str(execution.id)) is not None
    uuid_db.session.expire_all()
    assert wf.data == {"welcomed": str(customer.id)}


@pytest.mark.parametrize("bad", ["not-a-uuid", 42, None, "", str(uuid.uuid4())[:-2]])
def test_malformed_and_unknown_uuids_run_nothing(uuid_app, customer, bad):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()
    assert execute_step(uuid_geneva, bad) is None
    assert execute_step(uuid_geneva, str(uuid.uuid4())) is None
    assert _scheduled(wf).step_name == "welcome"


def test_operator_actions_with_uuid_keys(uuid_app, customer):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()
    perform_next_step(wf)
    wf.pause()
    uuid_db.session.commit()
    wf.skip()
    uuid_db.session.commit()
    assert wf.state == "finished"
    assert [(e.step_name, e.outcome) for e in wf.execution_history] == [
        ("welcome", "success"),
        ("reward", "skipped"),
    ]


def test_a_deleted_uuid_hero_cancels(uuid_app, customer):
    wf = LoyaltyWorkflow.create(hero=customer)
    uuid_db.session.commit()
    uuid_db.session.delete(customer)
    uuid_db.session.commit()
    perform_next_step(wf)
    assert wf.state == "canceled"


class ChainedVisits(uuid_geneva.Workflow):
    """Steps due at once: a worker's inline run claims each in the finalize before."""

    @step
    def first(self):
        self.hero.visits += 1

    @step
    def second(self):
        self.data["second"] = str(self.current_execution.id)
        self.hero.visits += 1


def test_an_inline_run_claims_uuid_keyed_executions(uuid_app):
    from flask_geneva.executor import run_claimed

    shop = Shop()
    uuid_db.session.add(shop)
    uuid_db.session.commit()
    wf = ChainedVisits.create(hero=shop)
    uuid_db.session.commit()
    with uuid_app.app_context():
        result = execute_step(uuid_geneva, _scheduled(wf).id, inline_next=True)
    assert result is not None and result.claimed_next is not None
    claimed_id = result.claimed_next.subject.execution_id
    assert isinstance(claimed_id, uuid.UUID)
    with uuid_app.app_context():
        last = run_claimed(uuid_geneva, result.claimed_next, inline_next=True)
    assert last is not None and last.exception is None and last.execution_id == claimed_id
    uuid_db.session.expire_all()
    assert wf.state == "finished"
    assert wf.data == {"second": str(claimed_id)}
    assert [e.id for e in wf.execution_history][1] == claimed_id
    assert uuid_db.session.get(Shop, shop.id).visits == 2
