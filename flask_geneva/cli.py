"""``flask geneva ...``: operate workflows from the command line.

Every command exits 0 on success, and non-zero with a one-line message on stderr for an
unknown id, a malformed argument, or a state that does not allow the action; nothing
changes on error. Values read from the database are printed with control characters
escaped, so a hostile step error or hero id cannot rewrite the operator's terminal.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from flask_geneva.cli_signals import (
    CLI_NAME_LENGTH,
    CLI_SIGNAL_LIMIT,
    parse_payload,
    resume_line,
    sent_line,
    signal_rows,
    waiting_line,
)
from flask_geneva.errors import InvalidInputError, InvalidStateError
from flask_geneva.ids import parse_integer
from flask_geneva.queries.health_panel import OVERDUE_GRACE
from flask_geneva.queries.lookups import (
    WorkflowFilters,
    execution_history,
    find_workflow,
    parse_hero,
)
from flask_geneva.queries.pages import list_workflows
from flask_geneva.queries.signals import (
    held_signal,
    pending_signals,
    signal_runs,
    signals_taken,
    timed_out,
    waiting_of,
    waits_now,
    workflow_signals,
)
from flask_geneva.signalling import unwaited_names_reported_by_caller
from flask_geneva.states import StepState, WorkflowState
from flask_geneva.text import printable, quoted, shorten
from flask_geneva.timeutil import as_utc, utcnow

# ------------------------------------------------------------------------- errors


def _fail(message: str) -> NoReturn:
    """Stop the command: exit 1 with ``Error: message`` as the one line on stderr."""
    raise click.ClickException(printable(message))


class _OneLineUsageError(click.UsageError):
    """A usage error shown as one line (Click's default adds the usage and a hint)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {printable(self.format_message())}", err=True, file=file)


def _one_line_usage_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (_OneLineUsageError, click.exceptions.NoArgsIsHelpError):
        raise
    except click.UsageError as error:
        raise _OneLineUsageError(error.format_message(), error.ctx) from None


class GenevaCommand(click.Command):
    """A ``flask geneva`` command: usage and database errors are one line on stderr."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return _one_line_usage_errors(
            lambda: super(GenevaCommand, self).make_context(info_name, args, parent=parent, **extra)
        )

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sa.exc.SQLAlchemyError as error:
            # Roll back what the command did; the transaction never committed.
            with contextlib.suppress(Exception):
                _state().geneva.db.session.rollback()
            cause = getattr(error, "orig", None) or error
            first_line = (str(cause).strip().splitlines() or [""])[0]
            _fail(f"database error ({type(cause).__name__}): {first_line}")


class GenevaGroup(AppGroup):
    """The ``flask geneva`` group: an unknown command is a one-line error too."""

    command_class = GenevaCommand

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        return _one_line_usage_errors(lambda: super(GenevaGroup, self).resolve_command(ctx, args))


geneva_cli = GenevaGroup("geneva", help="Operate flask_geneva workflows.")

#: Commands taking a workflow id read ``-1`` as an id (and reject it), not as an option.
_ID_COMMAND_SETTINGS: Final = {"ignore_unknown_options": True}


# ------------------------------------------------------------------------- helpers


def _state() -> Any:
    return current_app.extensions["geneva"]


def _load(workflow_id: str) -> Any:
    geneva = _state().geneva
    try:
        workflow = find_workflow(geneva, workflow_id)
    except InvalidInputError as error:
        _fail(str(error))
    if workflow is None:
        _fail(f"no workflow with id {shorten(workflow_id.strip())}")
    return workflow


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(delta: timedelta) -> str:
    """A duration rounded to seconds: ``2:05:00``, ``3 days, 0:00:10``."""
    return str(timedelta(seconds=round(delta.total_seconds())))


# ------------------------------------------------------------------------- actions


def _operator_command(name: str, past: str, act: Callable[[Any], None], help_text: str) -> None:
    @geneva_cli.command(name, help=help_text, context_settings=_ID_COMMAND_SETTINGS)
    @click.argument("workflow_id")
    def command(workflow_id: str) -> None:
        workflow = _load(workflow_id)
        session = _state().geneva.db.session
        try:
            act(workflow)
            session.commit()
        except InvalidStateError as error:
            session.rollback()
            _fail(str(error))
        except Exception:
            session.rollback()
            raise
        next_step = workflow.next_step_name
        click.echo(
            f"{past} {printable(workflow.workflow_class)} #{workflow.id}: now {workflow.state}"
            + (f", next step {printable(next_step)}" if next_step else "")
        )


_operator_command(
    "resume",
    "resumed",
    lambda wf: wf.resume(),
    "Resume a paused workflow (a failed step runs again).",
)
_operator_command(
    "cancel", "canceled", lambda wf: wf.cancel(), "Cancel a ready or paused workflow."
)
_operator_command(
    "pause",
    "paused",
    lambda wf: wf.pause(),
    "Pause a ready workflow; its scheduled step waits for resume.",
)
_operator_command(
    "skip",
    "skipped the pending step of",
    lambda wf: wf.skip(),
    "Skip the pending step of a ready or paused workflow.",
)


@geneva_cli.command(
    "signal",
    help="Send the signal NAME to a workflow (a step that waits for it runs).",
    context_settings=_ID_COMMAND_SETTINGS,
)
@click.argument("workflow_id")
@click.argument("name")
@click.option("--payload", help="the signal's payload, as JSON (default: null)")
@click.option("--key", help="an idempotency key: the same key is stored once")
def signal_command(workflow_id: str, name: str, payload: str | None, key: str | None) -> None:
    geneva = _state().geneva
    session = geneva.db.session
    try:
        value = parse_payload(payload)
    except InvalidInputError as error:
        _fail(str(error))
    workflow = _load(workflow_id)
    try:
        with unwaited_names_reported_by_caller():  # sent_line says it, once
            sent = geneva.send_signal(workflow.id, name, payload=value, idempotency_key=key)
        woke = None
        if not sent.duplicate and workflow.state == WorkflowState.READY:
            model = geneva.StepExecution
            woke = session.scalar(
                sa.select(model.step_name).where(
                    model.workflow_id == workflow.id,
                    model.state == StepState.SCHEDULED,
                    model.waiting_for == sent.name,
                )
            )
        session.commit()
    except (InvalidStateError, ValueError, LookupError) as error:
        session.rollback()
        _fail(str(error))
    except Exception:
        session.rollback()
        raise
    cls = type(workflow)
    waits = cls._geneva_definition.signal_waits if cls.is_defined() else None
    click.echo(sent_line(workflow, sent, woke, waits))


# --------------------------------------------------------------------------- show


def _execution_flags(workflow: Any, execution: Any, steps: list[str], now: datetime) -> str:
    """What is wrong (or waiting) about one execution, as ``  [...]`` notes."""
    config = _state().config
    flags = []
    if execution.state == StepState.SCHEDULED:
        due = as_utc(execution.scheduled_for)
        if workflow.state == WorkflowState.PAUSED:
            flags.append("kept: runs after resume")
        elif due is not None and now - due > OVERDUE_GRACE:
            late = f"overdue by {_ago(now - due)}"
            if now - due > config.stuck_scheduled_threshold:
                late += "; housekeeping will recover it"
            flags.append(late)
    elif execution.state == StepState.IN_PROGRESS:
        started = as_utc(execution.started_at)
        if started is not None and now - started > config.stuck_in_progress_threshold:
            flags.append(
                f"stuck: in progress for {_ago(now - started)}; housekeeping will recover it"
            )
    if steps and execution.step_name not in steps:
        flags.append("step no longer defined")
    return "".join(f"  [{flag}]" for flag in flags)


@geneva_cli.command(
    "show", help="Show one workflow and its step timeline.", context_settings=_ID_COMMAND_SETTINGS
)
@click.argument("workflow_id")
@click.option("--backtraces", is_flag=True, help="print the backtrace of every failed attempt")
def show_command(workflow_id: str, backtraces: bool) -> None:
    workflow = _load(workflow_id)
    geneva = _state().geneva
    cls = type(workflow)
    defined = cls.is_defined()
    hero = f"{workflow.hero_type}:{workflow.hero_id}" if workflow.hero_type else "none"
    data = json.dumps(workflow.data, ensure_ascii=False, sort_keys=True, default=str)
    show = click.echo
    show(printable(f"{workflow.workflow_class} #{workflow.id}"))
    if not defined:
        show(
            "  (its workflow class is no longer defined in the application; "
            "it loads as geneva.Workflow)"
        )
    show(f"  state:        {workflow.state}")
    show(f"  hero:         {printable(hero)}")
    show(f"  created:      {_when(workflow.created_at)}")
    show(f"  transitioned: {_when(workflow.transitioned_at)}")
    show(f"  next step:    {printable(workflow.next_step_name or '-')}")
    show(f"  previous:     {printable(workflow.previous_step_name or '-')}")
    history = execution_history(geneva, workflow)
    waiting = waiting_of(next((e for e in reversed(history) if waits_now(e)), None))
    paused = workflow.state == WorkflowState.PAUSED
    runs = signal_runs(history, signals_taken(geneva, history))
    waits = cls._geneva_definition.signal_waits if defined else {}
    if paused and history and str(history[-1].outcome) == "canceled":
        last = history[-1]
        if timed_out(last, runs.get(last.id)):
            show(
                f"  paused:       {printable(last.step_name)} timed out waiting for "
                f"{quoted(last.waiting_for, CLI_NAME_LENGTH)} (on_timeout='pause')"
            )
    if waiting is not None:
        wait = waits.get(waiting.execution.step_name)
        pending = pending_signals(geneva, workflow, waiting.signal) if paused else 0
        checks = wait is not None and wait.matcher.predicate is not None
        line = waiting_line(waiting, paused, _when, pending=pending, checks=checks)
        show(f"  waiting:      {line}")
    elif paused and workflow.next_step_name in waits and history:
        wait = waits[workflow.next_step_name]
        kept = any(e.state == StepState.SCHEDULED for e in history[-1:])
        if not kept and held_signal(geneva, workflow) is None:
            pending = pending_signals(geneva, workflow, wait.name)
            checks = wait.matcher.predicate is not None
            line = resume_line(workflow.next_step_name, wait, pending, checks)
            show(f"  waiting:      {line}")
    show(f"  data:         {printable(data)}")
    steps = cls.step_names() if defined else []
    if steps:
        show(f"  steps:        {' -> '.join(steps)}")
    signals = workflow_signals(geneva, workflow, limit=CLI_SIGNAL_LIMIT)
    if signals.signals:
        newest = f", the newest {CLI_SIGNAL_LIMIT}" if signals.truncated else ""
        # An ended workflow's pending signals are kept: no step will take them.
        ended = str(workflow.state) in ("finished", "canceled")
        status = "kept (workflow ended)" if ended else "pending"
        show(f"  signals:      {signals.pending} {status}{newest}")
        for line in _aligned(signal_rows(signals, _when, workflow.state), gap=2):
            show("    " + line)
    show("  timeline:")
    if not history:
        show("    (no executions)")
    now = utcnow()
    cells = [
        [
            f"#{execution.sequence}",
            printable(execution.step_name),
            f"{execution.state}/{execution.outcome}" if execution.outcome else execution.state,
            _scheduled_cell(execution, runs.get(execution.id)),
            f"started {_when(execution.started_at)}" if execution.started_at else "",
            f"finished {_when(execution.finished_at)}" if execution.finished_at else "",
        ]
        for execution in history
    ]
    for execution, line in zip(history, _aligned(cells, gap=2), strict=True):
        flags = _execution_flags(workflow, execution, steps, now)
        show(("    " + line + flags).rstrip())
        if execution.error_class_name:
            message = (execution.error_message or "").splitlines() or [""]
            error_class = printable(execution.error_class_name)
            show(f"         error: {error_class}: {printable(message[0])}")
            for more in message[1:]:
                show(f"                {printable(more)}")
            if backtraces and execution.error_backtrace:
                for trace_line in execution.error_backtrace.rstrip().splitlines():
                    show(f"           | {printable(trace_line)}")


def _scheduled_cell(execution: Any, signal_id: Any) -> str:
    """When the execution was due; for a step waiting for a signal, what it waits for,
    or what it waited for and whether a signal (which) or its timeout ended the wait."""
    taken = "" if signal_id is None else f", ran with signal #{signal_id}"
    if execution.waiting_for is None:
        return f"scheduled {_when(execution.scheduled_for)}{taken}"
    name = quoted(execution.waiting_for)
    if timed_out(execution, signal_id):
        return f"timed out waiting for {name}"
    if not waits_now(execution):
        return f"waited for {name}{taken}"
    if execution.scheduled_for is None:
        return f"waiting for {name}, no timeout"
    return f"waiting for {name} until {_when(execution.scheduled_for)}"


# --------------------------------------------------------------------------- list

#: The most workflows ``flask geneva list`` prints.
MAX_LIST_LIMIT: Final = 10_000


class _Limit(click.ParamType):
    """``--limit``: a whole number from 1 to :data:`MAX_LIST_LIMIT`, read by the one
    number parser (ASCII digits only, bounded before ``int()``)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_integer(str(value), name="--limit", minimum=1, maximum=MAX_LIST_LIMIT)
        except InvalidInputError as error:
            self.fail(str(error), param, ctx)


@geneva_cli.command("list", help="List workflows, newest first.")
@click.option("--state", help="ready, performing, finished, canceled or paused")
@click.option("--workflow", "workflow_class", help="the workflow class (its stored name)")
@click.option("--hero", help="TYPE:ID, for example User:42")
@click.option("--limit", type=_Limit(), default=50, show_default=True, help="from 1 to 10000")
def list_command(
    state: str | None, workflow_class: str | None, hero: str | None, limit: int
) -> None:
    geneva = _state().geneva
    try:
        hero_type, hero_id = parse_hero(hero) if hero is not None else (None, None)
        filters = WorkflowFilters(
            state=state, workflow=workflow_class, hero_type=hero_type, hero_id=hero_id
        )
        workflows = list_workflows(geneva, filters, limit=limit)
    except InvalidInputError as error:
        _fail(str(error))
    if not workflows:
        click.echo("no workflows match")
        return
    rows = [["ID", "CLASS", "STATE", "NEXT STEP", "HERO", "CREATED"]]
    for workflow in workflows:
        hero_text = f"{workflow.hero_type}:{workflow.hero_id}" if workflow.hero_type else "-"
        rows.append(
            [
                str(workflow.id),
                printable(workflow.workflow_class),
                str(workflow.state),
                printable(workflow.next_step_name or "-"),
                printable(hero_text),
                _when(workflow.created_at),
            ]
        )
    for line in _aligned(rows, gap=2):
        click.echo(line)


def _aligned(rows: list[list[str]], gap: int) -> list[str]:
    """The rows as lines whose columns line up: each as wide as its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    spacer = " " * gap
    return [
        spacer.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# -------------------------------------------------------------- housekeeping, relay


@geneva_cli.command("housekeeping", help="Delete old finished workflows; recover stuck steps.")
def housekeeping_command() -> None:
    from flask_geneva.housekeeping import run_housekeeping

    result = run_housekeeping()
    click.echo(f"deleted workflows:                {result.deleted_workflows}")
    click.echo(f"recovered executions in progress: {result.recovered_in_progress}")
    click.echo(f"recovered overdue scheduled:      {result.recovered_scheduled}")


@geneva_cli.command("relay", help="Publish due step messages from the outbox.")
@click.option("--once", is_flag=True, help="publish what is due now, then exit")
def relay_command(once: bool) -> None:
    state = _state()
    if not state.can_deliver:
        _fail(
            "GENEVA_BROKER_URL is memory:// and the embedded worker runs in the app's "
            "serving process: its relay publishes the outbox there, and this process has "
            "no worker to deliver to. Run `flask geneva relay` with a Redis or RabbitMQ "
            "GENEVA_BROKER_URL"
        )
    relay = state.relay
    if once:
        count = relay.publish_due()
        click.echo(f"published {count} step message(s)")
        return

    def stop(signum: int, frame: Any) -> None:
        relay.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo("relay running; stop with Ctrl-C")
    relay.run_forever()
