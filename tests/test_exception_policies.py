"""What happens when a step raises: the step's own on_exception, then class-level
policies matching the exception (newest first), then the newest blanket policy, then
pause; reattempt limits; imperative @on_exception handlers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_geneva import ExceptionPolicy, on_exception, step
from flask_geneva.testing import perform_next_step
from tests.helpers import executions, history, note_texts
from tests.models import Note, db, geneva


class NetworkError(Exception):
    pass


class Timeout(NetworkError):
    pass


class BadInput(Exception):
    pass


def _raiser(exception):
    def body(wf):
        raise exception

    return body


def _run_failing(workflow_class, user, exception_type=Exception):
    wf = workflow_class.create(hero=user)
    db.session.commit()
    with pytest.raises(exception_type):
        perform_next_step(wf)
    return wf


def _outcome(wf):
    return history(wf)[0][2], wf.state


def test_a_step_level_exception_policy_object(app, user):
    policy = ExceptionPolicy("reattempt", wait=timedelta(minutes=3), max_reattempts=1)

    class PolicyObjectWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call", on_exception=policy)

    wf = _run_failing(PolicyObjectWorkflow, user)
    failed, retry = executions(wf)
    assert (failed.state, failed.outcome) == ("failed", "reattempted")
    assert retry.scheduled_for == failed.finished_at + timedelta(minutes=3)
    with pytest.raises(NetworkError):
        perform_next_step(wf)
    assert wf.state == "paused"  # max_reattempts=1 from the policy object


def test_a_step_level_callable_is_a_handler(app, user):
    class CallableHandlerWorkflow(geneva.Workflow):
        step(
            _raiser(BadInput("bad")),
            name="call",
            on_exception=lambda wf, exc: wf.cancel() if isinstance(exc, BadInput) else None,
        )

    wf = _run_failing(CallableHandlerWorkflow, user)
    assert _outcome(wf) == ("canceled", "canceled")


def test_the_steps_own_policy_wins_over_class_policies(app, user):
    class StepFirstWorkflow(geneva.Workflow):
        on_exception(NetworkError, action="cancel")
        on_exception(action="cancel")
        step(_raiser(NetworkError("down")), name="call", on_exception="skip")

    assert _outcome(_run_failing(StepFirstWorkflow, user)) == ("skipped", "finished")


def test_class_policies_match_newest_first(app, user):
    class NewestFirstWorkflow(geneva.Workflow):
        on_exception(NetworkError, action="skip")
        on_exception(Timeout, action="cancel")  # newer and matches a Timeout
        step(_raiser(Timeout("slow")), name="call")

    assert _outcome(_run_failing(NewestFirstWorkflow, user)) == ("canceled", "canceled")


def test_an_older_matching_policy_applies_when_the_newer_does_not_match(app, user):
    class OlderMatchWorkflow(geneva.Workflow):
        on_exception(NetworkError, action="skip")
        on_exception(BadInput, action="cancel")
        step(_raiser(Timeout("slow")), name="call")  # a NetworkError, not a BadInput

    assert _outcome(_run_failing(OlderMatchWorkflow, user)) == ("skipped", "finished")


def test_a_policy_for_several_exception_classes(app, user):
    class SeveralClassesWorkflow(geneva.Workflow):
        on_exception(BadInput, KeyError, action="cancel")
        step(_raiser(KeyError("missing")), name="call")

    assert _outcome(_run_failing(SeveralClassesWorkflow, user)) == ("canceled", "canceled")


def test_a_matching_policy_wins_over_a_newer_blanket_policy(app, user):
    class MatchBeforeBlanketWorkflow(geneva.Workflow):
        on_exception(NetworkError, action="skip")
        on_exception(action="cancel")
        step(_raiser(NetworkError("down")), name="call")

    assert _outcome(_run_failing(MatchBeforeBlanketWorkflow, user)) == ("skipped", "finished")


def test_the_newest_blanket_policy_applies_when_nothing_matches(app, user):
    class BlanketWorkflow(geneva.Workflow):
        on_exception(action="skip")
        on_exception(BadInput, action="reattempt")
        on_exception(action="cancel")
        step(_raiser(NetworkError("down")), name="call")

    assert _outcome(_run_failing(BlanketWorkflow, user)) == ("canceled", "canceled")


def test_without_any_policy_the_workflow_pauses(app, user):
    class NoPolicyWorkflow(geneva.Workflow):
        on_exception(BadInput, action="cancel")
        step(_raiser(NetworkError("down")), name="call")

    assert _outcome(_run_failing(NoPolicyWorkflow, user)) == ("failed", "paused")


def test_a_class_level_reattempt_policy_with_its_limit_and_terminal_action(app, user):
    class ClassReattemptWorkflow(geneva.Workflow):
        on_exception(
            NetworkError,
            action="reattempt",
            wait=timedelta(seconds=30),
            max_reattempts=1,
            terminal_action="cancel",
        )
        step(_raiser(NetworkError("down")), name="call")

    wf = _run_failing(ClassReattemptWorkflow, user)
    failed, retry = executions(wf)
    assert retry.scheduled_for == failed.finished_at + timedelta(seconds=30)
    with pytest.raises(NetworkError):
        perform_next_step(wf)
    assert history(wf) == [("call", "failed", "reattempted"), ("call", "failed", "canceled")]
    assert wf.state == "canceled"


def test_max_reattempts_zero_applies_the_terminal_action_at_once(app, user):
    class NoReattemptsWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call", on_exception="reattempt",
             max_reattempts=0)

    assert _outcome(_run_failing(NoReattemptsWorkflow, user)) == ("failed", "paused")


def test_max_reattempts_defaults_to_100(app, user):
    class DefaultLimitWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call", on_exception="reattempt")

    wf = DefaultLimitWorkflow.create(hero=user)
    db.session.commit()
    for _ in range(101):
        assert wf.state == "ready"
        with pytest.raises(NetworkError):
            perform_next_step(wf)
    outcomes = [outcome for _, _, outcome in history(wf)]
    assert outcomes == ["reattempted"] * 100 + ["failed"]
    assert wf.state == "paused"


def test_max_reattempts_none_is_unlimited(app, user):
    class UnlimitedWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call", on_exception="reattempt",
             max_reattempts=None)

    wf = UnlimitedWorkflow.create(hero=user)
    db.session.commit()
    for _ in range(5):
        with pytest.raises(NetworkError):
            perform_next_step(wf)
    assert wf.state == "ready"
    assert [outcome for _, _, outcome in history(wf)] == ["reattempted"] * 5 + [None]


def test_max_reattempts_counts_consecutive_policy_reattempts_only(app, user):
    """Another outcome of the step (here its own reattempt()) starts the count again."""
    script = iter(["fail", "fail", "reattempt", "fail", "fail", "fail"])

    class CountingWorkflow(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=2)
        def call(self):
            if next(script) == "fail":
                raise NetworkError("down")
            self.reattempt()

    wf = CountingWorkflow.create(hero=user)
    db.session.commit()
    for expected in ["fail", "fail", "reattempt", "fail", "fail", "fail"]:
        if expected == "fail":
            with pytest.raises(NetworkError):
                perform_next_step(wf)
        else:
            perform_next_step(wf)
    assert history(wf) == [
        ("call", "failed", "reattempted"),
        ("call", "failed", "reattempted"),
        ("call", "completed", "reattempted"),
        ("call", "failed", "reattempted"),
        ("call", "failed", "reattempted"),
        ("call", "failed", "failed"),
    ]
    assert wf.state == "paused"


def test_resuming_after_the_limit_gives_the_step_its_reattempts_again(app, user):
    class ResumedLimitWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call", on_exception="reattempt",
             max_reattempts=1)

    wf = ResumedLimitWorkflow.create(hero=user)
    db.session.commit()
    for _ in range(2):
        with pytest.raises(NetworkError):
            perform_next_step(wf)
    assert wf.state == "paused"
    wf.resume()
    db.session.commit()
    for _ in range(2):
        with pytest.raises(NetworkError):
            perform_next_step(wf)
    assert [outcome for _, _, outcome in history(wf)] == [
        "reattempted", "failed", "reattempted", "failed",
    ]


def test_reattempts_of_another_step_do_not_count(app, user):
    script = iter(["fail", "ok"])

    class TwoStepsWorkflow(geneva.Workflow):
        @step(on_exception="reattempt", max_reattempts=1)
        def first(self):
            if next(script) == "fail":
                raise NetworkError("down")

        step(_raiser(NetworkError("down")), name="second", on_exception="reattempt",
             max_reattempts=1)

    wf = TwoStepsWorkflow.create(hero=user)
    db.session.commit()
    with pytest.raises(NetworkError):
        perform_next_step(wf)
    perform_next_step(wf)
    with pytest.raises(NetworkError):
        perform_next_step(wf)
    assert history(wf)[-2:] == [("second", "failed", "reattempted"), ("second", "scheduled", None)]


HANDLER_CASES = [
    ("reattempt", "reattempted", "ready"),
    ("skip", "skipped", "ready"),
    ("cancel", "canceled", "canceled"),
    ("pause", "failed", "paused"),
    ("finish", "success", "finished"),
    ("nothing", "failed", "paused"),
]


@pytest.mark.parametrize(("call", "outcome", "state"), HANDLER_CASES)
def test_an_imperative_handler_decides_with_a_flow_control_call(app, user, call, outcome, state):
    class HandledWorkflow(geneva.Workflow):
        @step
        def call_api(self):
            db.session.add(Note(text="body write"))
            raise NetworkError("503 from the API")

        @step
        def after(self):
            pass

        @on_exception(NetworkError)
        def handle_network_error(self, exc):
            db.session.add(Note(text=f"handled {exc}"))
            self.data["handled"] = type(exc).__name__
            if call == "reattempt":
                self.reattempt(wait=timedelta(minutes=1))
            elif call != "nothing":
                getattr(self, call)()

    wf = _run_failing(HandledWorkflow, user, NetworkError)
    failed = executions(wf)[0]
    assert (failed.step_name, failed.state, failed.outcome) == ("call_api", "failed", outcome)
    assert failed.error_class_name.endswith("NetworkError")
    assert failed.error_message == "503 from the API"
    assert "call_api" in failed.error_backtrace
    assert wf.state == state
    # The body's write rolled back; the handler's commits with the outcome.
    assert note_texts() == ["handled 503 from the API"]
    assert wf.data == {"handled": "NetworkError"}
    if call == "reattempt":
        retry = executions(wf)[1]
        assert (retry.step_name, retry.state) == ("call_api", "scheduled")
        assert retry.scheduled_for == failed.finished_at + timedelta(minutes=1)
    if call == "skip":
        assert history(wf)[1] == ("after", "scheduled", None)
    if call in ("pause", "nothing"):
        assert wf.next_step_name == "call_api"


def test_a_handler_only_handles_its_exception_classes(app, user):
    class SelectiveHandlerWorkflow(geneva.Workflow):
        step(_raiser(BadInput("nope")), name="call")

        @on_exception(NetworkError)
        def handle(self, exc):
            self.skip()

    assert _outcome(_run_failing(SelectiveHandlerWorkflow, user)) == ("failed", "paused")


def test_a_blanket_handler(app, user):
    class BlanketHandlerWorkflow(geneva.Workflow):
        step(_raiser(BadInput("nope")), name="call")

        @on_exception()
        def handle_anything(self, exc):
            self.cancel()

    assert _outcome(_run_failing(BlanketHandlerWorkflow, user)) == ("canceled", "canceled")


def test_a_handler_that_raises_pauses_and_records_its_own_error(app, user):
    class BrokenHandlerWorkflow(geneva.Workflow):
        step(_raiser(NetworkError("down")), name="call")

        @on_exception(NetworkError)
        def handle(self, exc):
            db.session.add(Note(text="handler write"))
            raise RuntimeError("the handler is broken too")

    wf = _run_failing(BrokenHandlerWorkflow, user)
    [failed] = executions(wf)
    assert (failed.state, failed.outcome) == ("failed", "failed")
    assert wf.state == "paused"
    assert failed.error_message == "the handler is broken too"
    assert "NetworkError: down" in failed.error_backtrace  # the step's error, chained
    assert note_texts() == []


def test_an_inherited_handler_applies_to_a_subclass(app, user):
    class HandlerParent(geneva.Workflow):
        @on_exception(NetworkError)
        def handle(self, exc):
            self.skip()

    class HandlerChild(HandlerParent):
        step(_raiser(NetworkError("down")), name="call")

    assert _outcome(_run_failing(HandlerChild, user)) == ("skipped", "finished")
