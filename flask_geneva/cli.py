"""``flask geneva ...``: operate workflows from the command line.

Every command exits 0 on success, and non-zero with a one-line message on stderr for an
unknown id, a malformed argument, or a state that does not allow the action; nothing
changes on error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from flask_geneva.errors import InvalidStateError
from flask_geneva.queries import (
    QueryError,
    WorkflowFilters,
    execution_history,
    find_workflow,
    list_workflows,
    parse_hero,
)
from flask_geneva.timeutil import utcnow

geneva_cli = AppGroup("geneva", help="Operate flask_geneva workflows.")


def _state() -> Any:
    return current_app.extensions["geneva"]


def _load(workflow_id: str) -> Any:
    geneva = _state().geneva
    try:
        workflow = find_workflow(geneva, workflow_id)
    except QueryError as error:
        raise click.ClickException(str(error)) from None
    if workflow is None:
        raise click.ClickException(f"no workflow with id {workflow_id}")
    return workflow


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _operator_command(
    name: str, past: str, act: Callable[[Any], None], help_text: str
) -> None:
    @geneva_cli.command(name, help=help_text)
    @click.argument("workflow_id")
    def command(workflow_id: str) -> None:
        workflow = _load(workflow_id)
        session = _state().geneva.db.session
        try:
            act(workflow)
            session.commit()
        except InvalidStateError as error:
            session.rollback()
            raise click.ClickException(str(error)) from None
        except Exception:
            session.rollback()
            raise
        click.echo(
            f"{past} {workflow.workflow_class} #{workflow.id}: now {workflow.state}"
            + (f", next step {workflow.next_step_name}" if workflow.next_step_name else "")
        )


_operator_command(
    "resume", "resumed", lambda wf: wf.resume(),
    "Resume a paused workflow (a failed step runs again).",
)
_operator_command(
    "cancel", "canceled", lambda wf: wf.cancel(), "Cancel a ready or paused workflow."
)
_operator_command(
    "pause", "paused", lambda wf: wf.pause(),
    "Pause a ready workflow; its scheduled step waits for resume.",
)
_operator_command(
    "skip", "skipped the pending step of", lambda wf: wf.skip(),
    "Skip the pending step of a ready or paused workflow.",
)


@geneva_cli.command("show", help="Show one workflow and its step timeline.")
@click.argument("workflow_id")
def show_command(workflow_id: str) -> None:
    workflow = _load(workflow_id)
    geneva = _state().geneva
    cls = type(workflow)
    hero = f"{workflow.hero_type}:{workflow.hero_id}" if workflow.hero_type else "none"
    click.echo(f"{workflow.workflow_class} #{workflow.id}")
    if not cls.is_defined():
        click.echo("  (this workflow class is no longer defined in the application)")
    click.echo(f"  state:        {workflow.state}")
    click.echo(f"  hero:         {hero}")
    click.echo(f"  created:      {_when(workflow.created_at)}")
    click.echo(f"  transitioned: {_when(workflow.transitioned_at)}")
    click.echo(f"  next step:    {workflow.next_step_name or '-'}")
    click.echo(f"  previous:     {workflow.previous_step_name or '-'}")
    click.echo(f"  data:         {workflow.data}")
    history = execution_history(geneva, workflow)
    steps = cls.step_names() if cls.is_defined() else []
    if steps:
        click.echo(f"  steps:        {' -> '.join(steps)}")
    click.echo("  timeline:")
    if not history:
        click.echo("    (no executions)")
    now = utcnow()
    for execution in history:
        outcome = f"/{execution.outcome}" if execution.outcome else ""
        line = (
            f"    #{execution.sequence:<3} {execution.step_name:<24} "
            f"{execution.state}{outcome:<14} scheduled {_when(execution.scheduled_for)}"
        )
        if execution.started_at:
            line += f"  started {_when(execution.started_at)}"
        if execution.finished_at:
            line += f"  finished {_when(execution.finished_at)}"
        if execution.state == "scheduled" and execution.scheduled_for < now:
            line += "  (overdue)"
        if steps and execution.step_name not in steps:
            line += "  (step no longer defined)"
        click.echo(line)
        if execution.error_class_name:
            click.echo(f"         error: {execution.error_class_name}: {execution.error_message}")


@geneva_cli.command("list", help="List workflows, newest first.")
@click.option("--state", help="ready, performing, finished, canceled or paused")
@click.option("--workflow", "workflow_class", help="the workflow class (its stored name)")
@click.option("--hero", help="TYPE:ID, for example User:42")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def list_command(
    state: str | None, workflow_class: str | None, hero: str | None, limit: int
) -> None:
    geneva = _state().geneva
    try:
        hero_type, hero_id = parse_hero(hero) if hero else (None, None)
        filters = WorkflowFilters(
            state=state, workflow=workflow_class, hero_type=hero_type, hero_id=hero_id
        )
        workflows = list_workflows(geneva, filters, limit=limit)
    except QueryError as error:
        raise click.ClickException(str(error)) from None
    if not workflows:
        click.echo("no workflows match")
        return
    click.echo(f"{'ID':<38} {'CLASS':<32} {'STATE':<10} {'NEXT STEP':<24} {'HERO':<24} CREATED")
    for workflow in workflows:
        hero_text = f"{workflow.hero_type}:{workflow.hero_id}" if workflow.hero_type else "-"
        click.echo(
            f"{workflow.id!s:<38} {workflow.workflow_class:<32} {workflow.state!s:<10} "
            f"{workflow.next_step_name or '-':<24} {hero_text:<24} {_when(workflow.created_at)}"
        )


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
