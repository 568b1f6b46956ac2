"""Logging with workflow and step context, on the ``flask_geneva`` logger."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

logger = logging.getLogger("flask_geneva")


class WorkflowLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with ``[Class #id hero=Type:id step=name]`` and adds the same
    fields (``workflow_class``, ``workflow_id``, ``hero``, ``step_name``,
    ``execution_id``) to each record, for structured log handlers."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        context = dict(self.extra or {})
        parts = [f"{context.get('workflow_class')} #{context.get('workflow_id')}"]
        if context.get("hero"):
            parts.append(f"hero={context['hero']}")
        if context.get("step_name"):
            parts.append(f"step={context['step_name']}")
        extra = dict(kwargs.get("extra") or {})
        extra.update(context)
        kwargs["extra"] = extra
        return f"[{' '.join(parts)}] {msg}", kwargs


def workflow_logger(workflow: Any, execution: Any = None) -> WorkflowLoggerAdapter:
    """A logger for ``workflow``; inside a step it carries the running step too."""
    running = execution or workflow.__dict__.get("_geneva_running")
    hero = None
    if workflow.hero_type is not None:
        hero = f"{workflow.hero_type}:{workflow.hero_id}"
    return WorkflowLoggerAdapter(
        logger,
        {
            "workflow_class": workflow.workflow_class or type(workflow).__name__,
            "workflow_id": workflow.id,
            "hero": hero,
            "step_name": running.step_name if running is not None else None,
            "execution_id": running.id if running is not None else None,
        },
    )
