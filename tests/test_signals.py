"""Blinker signals: precondition_checked, step_performed, step_finalized, in that
order, with the workflow class as sender; only precondition_checked when a
precondition ends the execution."""

from __future__ import annotations

from contextlib import contextmanager, suppress

import pytest

from flask_geneva import cancel_if, signals, step
from flask_geneva.testing import perform_next_step, speedrun_workflow
from tests.helpers import executions
from tests.models import db, geneva

BASE_KEYS = {
    "workflow_id", "workflow_class", "execution_id", "step_name", "outcome", "exception",
    "duration",
}


@contextmanager
def recorded():
    """Collect ``(signal name, sender, payload)`` of every geneva signal sent meanwhile."""
    sent = []
    receivers = []
    for name in ("precondition_checked", "step_performed", "step_finalized"):

        def receiver(sender, name=name, **payload):
            sent.append((name, sender, payload))

        receivers.append(receiver)
        getattr(signals, name).connect(receiver)
    try:
        yield sent
    finally:
        for name, receiver in zip(
            ("precondition_checked", "step_performed", "step_finalized"), receivers, strict=True
        ):
            getattr(signals, name).disconnect(receiver)


class SignaledError(Exception):
    pass


class SignaledWorkflow(geneva.Workflow):
    allow_multiple = True

    @step
    def act(self):
        action = self.data.get("action")
        if action == "raise":
            raise SignaledError("boom")
        if action == "reattempt":
            self.reattempt(60)
        if action in ("cancel", "pause", "skip", "finish"):
            getattr(self, action)()

    @step
    def after(self):
        pass


def _run(user, **data):
    wf = SignaledWorkflow.create(hero=user, data=data)
    db.session.commit()
    with recorded() as sent, suppress(SignaledError):
        perform_next_step(wf)
    return wf, sent


def test_a_step_sends_three_signals_in_order_with_their_payload(app, user):
    wf, sent = _run(user)
    assert [name for name, _, _ in sent] == [
        "precondition_checked", "step_performed", "step_finalized",
    ]
    execution = executions(wf)[0]
    for name, sender, payload in sent:
        assert sender is SignaledWorkflow
        expected_keys = BASE_KEYS | (
            {"workflow_state", "step_state"} if name == "step_finalized" else set()
        )
        assert set(payload) == expected_keys
        assert payload["workflow_id"] == wf.id
        assert payload["workflow_class"] == "SignaledWorkflow"
        assert payload["execution_id"] == execution.id
        assert payload["step_name"] == "act"
        assert payload["exception"] is None
        assert isinstance(payload["duration"], float)
        assert payload["duration"] >= 0
    outcomes = [payload["outcome"] for _, _, payload in sent]
    assert outcomes == ["passed", "completed", "completed"]
    finalized = sent[2][2]
    assert (finalized["workflow_state"], finalized["step_state"]) == ("ready", "completed")


@pytest.mark.parametrize(
    ("action", "workflow_state", "step_state"),
    [
        ("cancel", "canceled", "canceled"),
        ("pause", "paused", "canceled"),
        ("reattempt", "ready", "completed"),
        ("skip", "ready", "skipped"),
        ("finish", "finished", "completed"),
    ],
)
def test_flow_control_outcomes(app, user, action, workflow_state, step_state):
    _, sent = _run(user, action=action)
    assert [(name, payload["outcome"]) for name, _, payload in sent] == [
        ("precondition_checked", "passed"),
        ("step_performed", action),
        ("step_finalized", action),
    ]
    assert sent[2][2]["workflow_state"] == workflow_state
    assert sent[2][2]["step_state"] == step_state


def test_an_exception_is_in_the_payload(app, user):
    _, sent = _run(user, action="raise")
    assert [(name, payload["outcome"]) for name, _, payload in sent] == [
        ("precondition_checked", "passed"),
        ("step_performed", "exception"),
        ("step_finalized", "exception"),
    ]
    for _, _, payload in sent[1:]:
        assert isinstance(payload["exception"], SignaledError)
    assert sent[2][2]["workflow_state"] == "paused"
    assert sent[2][2]["step_state"] == "failed"


class PreconditionError(Exception):
    pass


def _explode(wf):
    raise PreconditionError("check failed")


@pytest.mark.parametrize(
    ("options", "outcome"),
    [
        ({"skip_if": True}, "skipped"),
        ({"only_if": False}, "skipped"),
        ({"cancel": True}, "canceled"),
        ({"skip_if": _explode}, "exception"),
        ({"skip_if": _explode, "on_exception": lambda wf, exc: wf.skip()}, "exception"),
    ],
    ids=["skip_if", "only_if", "cancel_if", "exception", "exception with a handler"],
)
def test_only_precondition_checked_when_a_precondition_ends_the_execution(
    app, user, options, outcome
):
    options = dict(options)
    cancels = options.pop("cancel", False)

    class PreconditionSignalWorkflow(geneva.Workflow):
        cancel_if(cancels)
        step(lambda wf: None, name="guarded", **options)

    wf = PreconditionSignalWorkflow.create(hero=user)
    db.session.commit()
    with recorded() as sent, suppress(PreconditionError):
        perform_next_step(wf)
    assert [(name, payload["outcome"]) for name, _, payload in sent] == [
        ("precondition_checked", outcome)
    ]
    _, sender, payload = sent[0]
    assert sender is PreconditionSignalWorkflow
    assert payload["step_name"] == "guarded"
    assert payload["execution_id"] == executions(wf)[0].id
    if outcome == "exception":
        assert isinstance(payload["exception"], PreconditionError)


def test_a_deleted_hero_sends_precondition_checked_canceled(app, user):
    wf = SignaledWorkflow.create(hero=user)
    db.session.commit()
    db.session.delete(user)
    db.session.commit()
    with recorded() as sent:
        perform_next_step(wf)
    assert [(name, payload["outcome"]) for name, _, payload in sent] == [
        ("precondition_checked", "canceled")
    ]


def test_signals_are_sent_after_the_outcome_is_committed(app, user):
    seen = []

    def look(sender, **payload):
        # A separate connection sees what was committed.
        table = geneva.StepExecution.__table__
        with db.engine.connect() as other:
            state = other.scalar(
                table.select().with_only_columns(table.c.state).where(
                    table.c.id == payload["execution_id"]
                )
            )
        seen.append(state)

    signals.step_finalized.connect(look)
    try:
        _run(user)
    finally:
        signals.step_finalized.disconnect(look)
    assert seen == ["completed"]


def test_a_receiver_that_raises_does_not_affect_the_step(app, caplog) -> None:
    geneva_signals = signals

    class SturdyWorkflow(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def only(self) -> None:
            self.data["ran"] = True

    heard: list[str] = []

    def broken(sender, **payload):
        raise RuntimeError("a broken metrics receiver")

    def listening(sender, **payload):
        heard.append(payload["outcome"])

    receivers = [
        (geneva_signals.precondition_checked, broken),
        (geneva_signals.step_performed, broken),
        (geneva_signals.step_finalized, broken),
        (geneva_signals.step_finalized, listening),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver)
    try:
        workflow = SturdyWorkflow.create()
        db.session.commit()
        speedrun_workflow(workflow)
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    assert workflow.state == "finished"
    assert workflow.data == {"ran": True}
    assert heard == ["completed"]
    failures = [r for r in caplog.records if "a receiver of" in r.getMessage()]
    assert len(failures) == 3
    assert all(str(r.exc_info[1]) == "a broken metrics receiver" for r in failures)
