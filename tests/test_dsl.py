"""Defining workflows: @step, step(callable), step_N names, ordering, inheritance,
step_job_options, and every definition error (StepConfigurationError at class
definition, naming the class and the step)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import ExceptionPolicy, StepConfigurationError, cancel_if, on_exception, step
from flask_geneva.testing import speedrun_workflow
from tests.models import db, geneva


def test_step_decorator_names_the_step_after_the_method():
    class NamedStepsWorkflow(geneva.Workflow):
        @step
        def send_notice(self):
            pass

        @step(wait=timedelta(days=3))
        def charge_payment(self):
            pass

    assert NamedStepsWorkflow.step_names() == ["send_notice", "charge_payment"]
    notice, charge = NamedStepsWorkflow.steps()
    assert notice.wait == timedelta(0)
    assert charge.wait == timedelta(days=3)
    # The decorated method is still an ordinary method of the class.
    assert callable(NamedStepsWorkflow.send_notice)


def test_wait_in_seconds():
    class SecondsWaitWorkflow(geneva.Workflow):
        @step(wait=90)
        def later(self):
            pass

        @step(wait=1.5)
        def a_bit_later(self):
            pass

    assert [s.wait for s in SecondsWaitWorkflow.steps()] == [
        timedelta(seconds=90),
        timedelta(seconds=1.5),
    ]


def test_anonymous_steps_are_named_step_n_loops_included():
    class StatusPollingWorkflow(geneva.Workflow):
        step(lambda wf: wf.check_status())
        for _ in range(3):
            step(lambda wf: wf.check_status(), wait=timedelta(minutes=1))

        def check_status(self):
            pass

    assert StatusPollingWorkflow.step_names() == ["step_1", "step_2", "step_3", "step_4"]
    assert [s.wait for s in StatusPollingWorkflow.steps()] == [timedelta(0)] + [
        timedelta(minutes=1)
    ] * 3


def test_step_n_counts_the_named_and_inherited_steps_before_it():
    class CountingParent(geneva.Workflow):
        @step
        def first(self):
            pass

        step(lambda wf: None)  # step_2

    class CountingChild(CountingParent):
        step(lambda wf: None)  # two inherited steps: step_3

        @step
        def named(self):
            pass

        step(lambda wf: None)  # step_5

    assert CountingParent.step_names() == ["first", "step_2"]
    assert CountingChild.step_names() == ["first", "step_2", "step_3", "named", "step_5"]


def test_name_gives_an_anonymous_step_a_name():
    class NamedLambdaWorkflow(geneva.Workflow):
        step(lambda wf: None, name="warm_up")
        step(lambda wf: None)

    assert NamedLambdaWorkflow.step_names() == ["warm_up", "step_2"]


def test_a_function_defined_outside_the_class_makes_an_anonymous_step():
    def shared_check(wf):
        wf.data["checked"] = True

    class SharedFunctionWorkflow(geneva.Workflow):
        may_proceed_without_hero = True
        step(shared_check)

    assert SharedFunctionWorkflow.step_names() == ["step_1"]


def test_anonymous_steps_receive_the_workflow(app, user):
    class ReceivingWorkflow(geneva.Workflow):
        step(lambda wf: wf.data.update(first=wf.hero.email))
        for number in range(2):
            step(lambda wf, number=number: wf.data.update({f"loop_{number}": wf.id}))

    wf = ReceivingWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.data == {"first": "hero@example.com", "loop_0": wf.id, "loop_1": wf.id}


def test_before_step_and_after_step_place_a_step():
    class PlacedWorkflow(geneva.Workflow):
        @step
        def a(self):
            pass

        @step
        def d(self):
            pass

        @step(before_step="d")
        def c(self):
            pass

        @step(after_step="a")
        def b(self):
            pass

        step(lambda wf: None, before_step="a")  # step_5, first of all

    assert PlacedWorkflow.step_names() == ["step_5", "a", "b", "c", "d"]


def test_before_step_can_name_an_inherited_step():
    class PlacementParent(geneva.Workflow):
        @step
        def open_account(self):
            pass

        @step
        def welcome(self):
            pass

    class PlacementChild(PlacementParent):
        @step(before_step="welcome")
        def verify_email(self):
            pass

        @step(after_step="welcome")
        def follow_up(self):
            pass

    assert PlacementChild.step_names() == ["open_account", "verify_email", "welcome", "follow_up"]
    assert PlacementParent.step_names() == ["open_account", "welcome"]


def test_steps_run_in_their_defined_order(app, user):
    class OrderedWorkflow(geneva.Workflow):
        @step
        def a(self):
            self.data.setdefault("ran", []).append("a")

        @step
        def c(self):
            self.data["ran"].append("c")

        @step(before_step="c")
        def b(self):
            self.data["ran"].append("b")

    wf = OrderedWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.data["ran"] == ["a", "b", "c"]


def test_a_subclass_inherits_everything_and_leaves_its_parent_alone(app, user):
    class InheritedError(Exception):
        pass

    class ParentWorkflow(geneva.Workflow):
        step_job_options = {"queue_name": "parents", "priority": 5}
        cancel_if(lambda wf: wf.hero.deactivated)
        on_exception(InheritedError, action="skip")

        @step
        def one(self):
            self.data.setdefault("ran", []).append(f"{type(self).__name__}.one")

    class ChildWorkflow(ParentWorkflow):
        step_job_options = {"priority": 1}
        cancel_if(lambda wf: wf.data.get("stop"))
        on_exception(action="cancel")

        @step
        def two(self):
            raise InheritedError("skipped by the inherited policy")

    parent = ParentWorkflow._geneva_definition
    child = ChildWorkflow._geneva_definition
    assert ParentWorkflow.step_names() == ["one"]
    assert ChildWorkflow.step_names() == ["one", "two"]
    assert len(parent.cancel_conditions) == 1
    assert len(child.cancel_conditions) == 2
    assert len(parent.class_policies) == 1
    assert len(child.class_policies) == 2
    assert parent.job_options == {"queue_name": "parents", "priority": 5}
    assert child.job_options == {"queue_name": "parents", "priority": 1}

    wf = ChildWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(InheritedError):
        speedrun_workflow(wf)
    speedrun_workflow(wf)
    # The inherited skip policy for InheritedError wins over the child's blanket cancel.
    assert wf.state == "finished"
    assert [(e.step_name, e.outcome) for e in wf.execution_history] == [
        ("one", "success"),
        ("two", "skipped"),
    ]
    assert wf.data["ran"] == ["ChildWorkflow.one"]

    other = ParentWorkflow.create(hero=user)
    db.session.commit()
    speedrun_workflow(other)
    assert other.data["ran"] == ["ParentWorkflow.one"]


def test_a_subclass_can_override_a_step_method(app, user):
    class GreetingParent(geneva.Workflow):
        @step
        def greet(self):
            self.data["greeting"] = "hello"

    class GreetingChild(GreetingParent):
        def greet(self):
            super().greet()
            self.data["greeting"] += " from the child"

    parent = GreetingParent.create(hero=user)
    child = GreetingChild.create(hero=user)
    db.session.commit()
    speedrun_workflow(parent)
    speedrun_workflow(child)
    assert parent.data == {"greeting": "hello"}
    assert child.data == {"greeting": "hello from the child"}


def test_step_job_options_accepts_queue_name_priority_and_time_limit():
    class JobOptionsWorkflow(geneva.Workflow):
        step_job_options = {"queue_name": "slow", "priority": 10, "time_limit": 60_000}

    assert JobOptionsWorkflow._geneva_definition.job_options == {
        "queue_name": "slow",
        "priority": 10,
        "time_limit": 60_000,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": 3}, "unknown key 'max_retries'"),
        ({"queue_name": 7}, r"step_job_options\['queue_name'\] must be a str"),
        ({"priority": "high"}, r"step_job_options\['priority'\] must be a int"),
        ({"priority": True}, r"step_job_options\['priority'\] must be a int"),
        ({"time_limit": 0}, "milliseconds and must be > 0"),
        (["queue_name"], "step_job_options must be a dict"),
    ],
)
def test_step_job_options_are_checked_when_the_class_is_defined(options, message):
    with pytest.raises(StepConfigurationError, match=message) as raised:

        class BadJobOptionsWorkflow(geneva.Workflow):
            step_job_options = options

    assert "BadJobOptionsWorkflow" in str(raised.value)


def _define(body):
    """Define a workflow class named ``BrokenWorkflow`` whose body is ``body``."""
    namespace = {"geneva": geneva, "step": step, "cancel_if": cancel_if}
    namespace.update(on_exception=on_exception, ExceptionPolicy=ExceptionPolicy)
    namespace["timedelta"] = timedelta
    source = "class BrokenWorkflow(geneva.Workflow):\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()
    )
    exec(compile(source, "<workflow definition>", "exec"), namespace)


STEP_ERRORS = [
    pytest.param(
        "@step\ndef pay(self): pass\n@step(name='pay')\ndef other(self): pass",
        "pay",
        "a step named 'pay' is already defined",
        id="duplicate name",
    ),
    pytest.param(
        "step(lambda wf: None, name='pay')\nstep(lambda wf: None, name='pay')",
        "pay",
        "already defined",
        id="duplicate anonymous name",
    ),
    pytest.param(
        "@step(before_step='nowhere')\ndef pay(self): pass",
        "pay",
        "before_step='nowhere' names no step",
        id="unknown before_step",
    ),
    pytest.param(
        "@step(after_step='nowhere')\ndef pay(self): pass",
        "pay",
        "after_step='nowhere' names no step",
        id="unknown after_step",
    ),
    pytest.param(
        "@step\ndef a(self): pass\n@step(before_step='a', after_step='a')\ndef pay(self): pass",
        "pay",
        "before_step or after_step, not both",
        id="before and after",
    ),
    pytest.param(
        "@step(skip_if=True, only_if=False)\ndef pay(self): pass",
        "pay",
        "skip_if or only_if, not both",
        id="skip_if with only_if",
    ),
    pytest.param(
        "@step(wait=-1)\ndef pay(self): pass", "pay", "wait must not be negative", id="negative"
    ),
    pytest.param(
        "@step(wait=timedelta(seconds=-5))\ndef pay(self): pass",
        "pay",
        "wait must not be negative",
        id="negative timedelta",
    ),
    pytest.param(
        "@step(wait=float('nan'))\ndef pay(self): pass",
        "pay",
        "wait must be a finite number of seconds",
        id="wait NaN",
    ),
    pytest.param(
        "@step(wait=timedelta(days=400_000))\ndef pay(self): pass",
        "pay",
        "at most 365250 days",
        id="wait beyond any date",
    ),
    pytest.param(
        "@step(wait='3 days')\ndef pay(self): pass",
        "pay",
        "wait must be a timedelta or a number of seconds",
        id="wait not a duration",
    ),
    pytest.param(
        "@step(retries=3)\ndef pay(self): pass",
        "pay",
        "unknown step option",
        id="unknown option",
    ),
    pytest.param(
        "step(lambda wf: None, colour='red')",
        "step_1",
        "unknown step option",
        id="unknown option of an anonymous step",
    ),
    pytest.param(
        "@step(on_exception='retry')\ndef pay(self): pass",
        "pay",
        "exception action must be one of",
        id="bad on_exception",
    ),
    pytest.param(
        "@step(max_reattempts=3)\ndef pay(self): pass",
        "pay",
        "need on_exception='reattempt'",
        id="max_reattempts without on_exception",
    ),
    pytest.param(
        "@step(on_exception='pause', max_reattempts=3)\ndef pay(self): pass",
        "pay",
        "only apply to the 'reattempt' action",
        id="max_reattempts with pause",
    ),
    pytest.param(
        "@step(on_exception='skip', terminal_action='cancel')\ndef pay(self): pass",
        "pay",
        "only apply to the 'reattempt' action",
        id="terminal_action with skip",
    ),
    pytest.param(
        "@step(on_exception='reattempt', terminal_action='skip')\ndef pay(self): pass",
        "pay",
        "terminal_action must be 'pause' or 'cancel'",
        id="bad terminal_action",
    ),
    pytest.param(
        "@step(on_exception='reattempt', max_reattempts=-1)\ndef pay(self): pass",
        "pay",
        "max_reattempts must be a whole number",
        id="negative max_reattempts",
    ),
    pytest.param(
        "@step(on_exception=ExceptionPolicy('reattempt'), max_reattempts=2)\n"
        "def pay(self): pass",
        "pay",
        "to the ExceptionPolicy itself",
        id="max_reattempts beside a policy",
    ),
    pytest.param(
        "@step(skip_if='no_such_method')\ndef pay(self): pass",
        "pay",
        "skip_if='no_such_method' names no method",
        id="unknown skip_if method",
    ),
    pytest.param(
        "@step(only_if=42)\ndef pay(self): pass",
        "pay",
        "only_if takes a callable",
        id="only_if not a condition",
    ),
    pytest.param(
        "step(lambda wf: None, name='not a name')",
        "not a name",
        "a step name must be a valid identifier",
        id="bad name",
    ),
    pytest.param(
        "@step\ndef cancel(self): pass",
        "cancel",
        "taken by geneva.Workflow itself",
        id="method name taken by the base class",
    ),
]


@pytest.mark.parametrize(("body", "step_name", "message"), STEP_ERRORS)
def test_step_errors_raise_at_class_definition_naming_class_and_step(body, step_name, message):
    with pytest.raises(StepConfigurationError, match=message) as raised:
        _define(body)
    assert "BrokenWorkflow" in str(raised.value)
    assert step_name in str(raised.value)


CLASS_ERRORS = [
    pytest.param("step(42)", "takes a method or a callable", id="step of a non-callable"),
    pytest.param("cancel_if()", "at least one condition", id="empty cancel_if"),
    pytest.param("cancel_if(3.5)", "cancel_if takes a callable", id="cancel_if not a condition"),
    pytest.param("cancel_if('no_such_method')", "names no method", id="unknown cancel_if method"),
    pytest.param(
        "on_exception(ValueError, action='explode')",
        "exception action must be one of",
        id="bad class-level action",
    ),
    pytest.param(
        "on_exception(ValueError, action='skip', max_reattempts=2)",
        "only apply to the 'reattempt' action",
        id="class-level max_reattempts with skip",
    ),
    pytest.param(
        "on_exception(ValueError, action='reattempt', wait=-3)",
        "must not be negative",
        id="class-level negative wait",
    ),
    pytest.param("on_exception('ValueError', action='skip')", "takes exception classes", id="str"),
    pytest.param(
        "on_exception(ValueError)", "must decorate a handler", id="handler decorator not applied"
    ),
    pytest.param(
        "on_exception(ValueError, wait=3)",
        "handler decorator takes no wait",
        id="handler decorator with wait",
    ),
    pytest.param(
        "may_proceed_without_hero = 'yes'", "must be True or False", id="may_proceed not bool"
    ),
    pytest.param("allow_multiple = 1", "must be True or False", id="allow_multiple not bool"),
    pytest.param("__tablename__ = 'mine'", "share the geneva_workflows table", id="own table"),
]


@pytest.mark.parametrize(("body", "message"), CLASS_ERRORS)
def test_class_errors_raise_at_class_definition_naming_the_class(body, message):
    with pytest.raises(StepConfigurationError, match=message) as raised:
        _define(body)
    assert "BrokenWorkflow" in str(raised.value)


def test_exception_policy_refuses_reattempt_options_with_another_action():
    with pytest.raises(StepConfigurationError, match="max_reattempts only apply"):
        ExceptionPolicy("cancel", max_reattempts=3)
    with pytest.raises(StepConfigurationError, match="terminal_action only apply"):
        ExceptionPolicy("pause", terminal_action="cancel")
    with pytest.raises(StepConfigurationError, match="exception action must be one of"):
        ExceptionPolicy("retry")


def test_exception_policy_defaults():
    policy = ExceptionPolicy("reattempt")
    assert policy.wait == timedelta(0)
    assert policy.max_reattempts == 100
    assert policy.terminal_action == "pause"
    assert ExceptionPolicy("reattempt", max_reattempts=None).max_reattempts is None
    assert ExceptionPolicy("reattempt", 30).wait == timedelta(seconds=30)


def test_step_used_outside_a_class_body_is_an_error():
    with pytest.raises(StepConfigurationError, match="body of a workflow class"):
        step(lambda wf: None)


def test_a_failed_definition_leaves_nothing_behind():
    with pytest.raises(StepConfigurationError):
        _define("@step\ndef a(self): pass\n@step(wait=-1)\ndef b(self): pass")
    assert "BrokenWorkflow" not in geneva.workflow_classes


def test_workflow_name_sets_the_stored_identity(app, user):
    class RenamedWorkflow(geneva.Workflow):
        workflow_name = "billing.RenamedWorkflow"

        @step
        def only(self):
            pass

    wf = RenamedWorkflow.create(hero=user)
    db.session.commit()
    assert wf.workflow_class == "billing.RenamedWorkflow"
    db.session.expire_all()
    assert type(db.session.get(geneva.Workflow, wf.id)) is RenamedWorkflow


def test_a_workflow_with_no_steps_finishes_at_once(app, user):
    class EmptyWorkflow(geneva.Workflow):
        pass

    wf = EmptyWorkflow.create(hero=user)
    db.session.commit()
    assert wf.state == "finished"
    assert wf.transitioned_at is not None
    assert wf.execution_history == []


def _define_in_module(module, body="pass"):
    """Define ``CollidingNameWorkflow`` at the top level of a (pretend) module."""
    namespace = {"__name__": module, "geneva": geneva, "step": step}
    source = "class CollidingNameWorkflow(geneva.Workflow):\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()
    )
    exec(compile(source, f"<{module}>", "exec"), namespace)
    return namespace["CollidingNameWorkflow"]


def test_two_modules_cannot_share_a_workflow_name_without_workflow_name():
    first = _define_in_module("billing.workflows")
    with pytest.raises(StepConfigurationError, match=r"already taken by billing\.workflows") as e:
        _define_in_module("shipping.workflows")
    assert "set workflow_name" in str(e.value)
    assert geneva.workflow_classes["CollidingNameWorkflow"] is first
    # The same module defining it again (a reload) replaces it...
    again = _define_in_module("billing.workflows")
    assert geneva.workflow_classes["CollidingNameWorkflow"] is again
    # ...and workflow_name lets the other module's class live beside it.
    other = _define_in_module("shipping.workflows", "workflow_name = 'shipping.Colliding'")
    assert geneva.workflow_classes["shipping.Colliding"] is other
    assert geneva.workflow_classes["CollidingNameWorkflow"] is again
