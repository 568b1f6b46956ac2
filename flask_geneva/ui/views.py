"""The status blueprint: four read-only pages, each with a JSON twin (``?format=json``).

=====================================  ==============================================
``/``                                   overview: counts by state and class, health
``/workflows``                          the list (``state``, ``workflow``, ``hero_type``,
                                        ``hero_id``, ``hero=TYPE:ID``, ``limit``,
                                        ``before`` / ``after`` page cursors)
``/workflows/<id>``                     one workflow: steps beside their executions
``/heroes/<hero_type>/<hero_id>``       every workflow of one hero
``/search?q=``                          jump to a workflow id, a ``TYPE:ID`` hero or a class
=====================================  ==============================================

Every route is GET only and reads through :mod:`flask_geneva.queries`; nothing here
changes state. Access is checked before each request (see :func:`check_access`).
"""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any, Final, NoReturn

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from flask_geneva.errors import InvalidInputError
from flask_geneva.ids import parse_integer, parse_workflow_id
from flask_geneva.queries import counts, detail, health_panel, lookups, pages
from flask_geneva.queries.counts import CLASS_COUNT_CAP, COUNT_CAP
from flask_geneva.queries.health_panel import OVERDUE_GRACE
from flask_geneva.queries.lookups import WorkflowFilters
from flask_geneva.queries.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Cursor, WorkflowPage
from flask_geneva.queries.signals import payload_excerpt, signal_status
from flask_geneva.text import excerpt, quoted, shorten
from flask_geneva.timeutil import utcnow
from flask_geneva.ui import present, serialize

logger = logging.getLogger("flask_geneva.ui")

#: The Content-Security-Policy of every page: nothing but this blueprint's own files.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: The order the pages list states in: the ongoing ones, which need eyes, first.
DISPLAY_STATES: Final = ("ready", "performing", "paused", "finished", "canceled")

bp = Blueprint(
    "geneva",
    __name__,
    template_folder="templates",
    static_folder="static/geneva",
    static_url_path="/static",
)


# ---------------------------------------------------------------------- request hooks


def _state() -> Any:
    return current_app.extensions["geneva"]


@bp.before_request
def check_access() -> None:
    """Refuse (403) unless ``GENEVA_UI_ACCESS`` says yes, or, without it, in debug/testing."""
    access = _state().config.ui_access
    if access is not None:
        if not access():
            abort(403, "GENEVA_UI_ACCESS refused this request.")
    elif not (current_app.debug or current_app.testing):
        abort(
            403,
            "The geneva status UI answers only in debug or testing mode until "
            "GENEVA_UI_ACCESS is set to a callable that decides who may see it.",
        )


@bp.after_request
def secure_headers(response: Response) -> Response:
    """A strict CSP and friends on every response of the blueprint."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "geneva.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[Any, int]:
    """Errors in the format asked for: a small page, or ``{"error": {...}}``."""
    status = error.code or 500
    message = error.description or error.name
    if request.args.get("format") == "json":
        return jsonify(error={"status": status, "title": error.name, "message": message}), status
    return render_template(
        "geneva/error.html", status=status, title=error.name, message=message
    ), status


@bp.context_processor
def template_helpers() -> dict[str, Any]:
    """The formatting helpers of :mod:`flask_geneva.ui.present`, for the templates."""
    return {
        "absolute_time": present.absolute_time,
        "relative_time": present.relative_time,
        "iso_time": present.iso_time,
        "format_duration": present.format_duration,
        "format_number": present.format_number,
        "compact_number": present.compact_number,
        "count_text": present.count_text,
        "count_title": present.count_title,
        "describe_condition": present.describe_condition,
        "describe_policy": present.describe_policy,
        "short_source": present.short_source,
        "class_defined": lambda workflow: bool(type(workflow).is_defined()),
        "overdue_grace": OVERDUE_GRACE,
        "now": utcnow(),
        "workflow_states": DISPLAY_STATES,
        "page_url": _page_url,
        "hero_url": _hero_url,
        "excerpt": excerpt,
        "payload_excerpt": payload_excerpt,
        "signal_status": signal_status,
        "shell_quote": shlex.quote,
        "count_cap": COUNT_CAP,
        "class_count_cap": CLASS_COUNT_CAP,
    }


# ------------------------------------------------------------------------------ pages


@bp.get("/")
def overview() -> Any:
    """Counts by state and by class, and the health panel."""
    as_json = _wants_json()
    state = _state()
    geneva = state.geneva
    now = utcnow()
    by_state = counts.state_counts(geneva)
    by_class = counts.class_counts(geneva)
    panel = health_panel.health(
        geneva,
        stuck_in_progress_threshold=state.config.stuck_in_progress_threshold,
        stuck_scheduled_threshold=state.config.stuck_scheduled_threshold,
        now=now,
    )
    if as_json:
        return jsonify(
            generated_at=present.iso_time(now),
            count_cap=COUNT_CAP,
            class_count_cap=CLASS_COUNT_CAP,
            counts={s: serialize.count_json(c) for s, c in by_state.items()},
            classes=[
                {
                    "workflow_class": c.workflow_class,
                    "defined": c.defined,
                    "url": url_for("geneva.workflows", workflow=c.workflow_class),
                    "counts": {s: serialize.count_json(n) for s, n in c.counts.items()},
                }
                for c in by_class
            ],
            health=serialize.health_json(panel),
        )
    return render_template(
        "geneva/overview.html",
        now=now,
        by_state=by_state,
        by_class=by_class,
        health=panel,
        failures=present.group_repeats(panel.recent_failures),
    )


@bp.get("/workflows")
def workflows() -> Any:
    """The workflow list: filters in the URL, newest first, keyset pages."""
    as_json = _wants_json()
    geneva = _state().geneva
    now = utcnow()
    filters = _filters_from_args()
    page = _page(filters)
    activity = pages.workflow_activity(geneva, page.workflows)
    if as_json:
        return jsonify(
            filters=_filters_json(filters),
            workflows=[serialize.workflow_json(w, activity[w.id]) for w in page.workflows],
            page=_page_json(page),
        )
    classes = sorted(set(counts.stored_workflow_classes(geneva)) | set(geneva.workflow_classes))
    return render_template(
        "geneva/workflows.html",
        now=now,
        filters=filters,
        page=page,
        activity=activity,
        classes=classes,
        unknown_class=filters.workflow is not None and filters.workflow not in classes,
        page_sizes=(25, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    )


@bp.get("/workflows/<workflow_id>")
def workflow(workflow_id: str) -> Any:
    """One workflow: every step of its class beside its executions."""
    as_json = _wants_json()
    state = _state()
    geneva = state.geneva
    now = utcnow()
    try:
        found = lookups.find_workflow(geneva, workflow_id)
    except InvalidInputError as error:
        abort(404, f"No workflow can have the id {quoted(workflow_id)}: {error}.")
    if found is None:
        abort(
            404,
            f"There is no workflow #{shorten(workflow_id)}. It may have been cleaned up by "
            f"housekeeping after it finished.",
        )
    gathered = detail.workflow_detail(
        geneva,
        found,
        stuck_in_progress_threshold=state.config.stuck_in_progress_threshold,
        stuck_scheduled_threshold=state.config.stuck_scheduled_threshold,
        now=now,
    )
    hero = _hero_info(found.hero_type, found.hero_id)
    if as_json:
        return jsonify(serialize.detail_json(gathered, hero))
    return render_template(
        "geneva/workflow.html",
        now=now,
        detail=gathered,
        wf=found,
        hero=hero,
        data_text=json.dumps(found.data or {}, indent=2, sort_keys=True, default=str),
        config=state.config,
    )


@bp.get("/heroes/<hero_type>/<path:hero_id>")
def hero(hero_type: str, hero_id: str) -> Any:
    """Every workflow of one hero, newest first."""
    as_json = _wants_json()
    geneva = _state().geneva
    now = utcnow()
    filters = WorkflowFilters(hero_type=hero_type, hero_id=hero_id)
    page = _page(filters)
    activity = pages.workflow_activity(geneva, page.workflows)
    info = _hero_info(hero_type, hero_id)
    if as_json:
        return jsonify(
            hero=info,
            workflows=[serialize.workflow_json(w, activity[w.id]) for w in page.workflows],
            page=_page_json(page),
        )
    return render_template(
        "geneva/hero.html", now=now, hero=info, page=page, activity=activity, filters=filters
    )


@bp.get("/search")
def search() -> Any:
    """Jump from one box: a workflow id, a hero as ``TYPE:ID``, or a class name."""
    text = request.args.get("q", "").strip()
    # The JSON twin redirects to the JSON twin of the page it finds.
    twin: dict[str, Any] = {"format": "json"} if _wants_json() else {}
    if not text:
        return redirect(url_for("geneva.workflows", **twin))
    if ":" in text:
        hero_type, hero_id = _parse(lookups.parse_hero, text)
        return redirect(_hero_url(hero_type, hero_id, **twin))
    try:
        parse_workflow_id(_state().geneva, text)
    except InvalidInputError:
        return redirect(url_for("geneva.workflows", workflow=text, **twin))
    return redirect(url_for("geneva.workflow", workflow_id=text, **twin))


# ---------------------------------------------------------------------------- helpers


def _bad_request(message: str) -> NoReturn:
    abort(400, message)


def _parse(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except InvalidInputError as error:
        _bad_request(str(error))


def _wants_json() -> bool:
    value = request.args.get("format", "html")
    if value not in ("html", "json"):
        _bad_request(f"format must be html or json, got {value!r}")
    return value == "json"


def _arg(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    return value or None


def _filters_from_args() -> WorkflowFilters:
    hero_type, hero_id = _arg("hero_type"), _arg("hero_id")
    combined = _arg("hero")
    if combined is not None:
        if hero_type is not None or hero_id is not None:
            _bad_request("give hero=TYPE:ID or hero_type= and hero_id=, not both")
        hero_type, hero_id = _parse(lookups.parse_hero, combined)
    filters = WorkflowFilters(
        state=_arg("state"), workflow=_arg("workflow"), hero_type=hero_type, hero_id=hero_id
    )
    return _parse(filters.validated)


def _page(filters: WorkflowFilters) -> WorkflowPage:
    geneva = _state().geneva
    limit_text = _arg("limit")
    limit = DEFAULT_PAGE_SIZE
    if limit_text is not None:
        limit = _parse(
            lambda: parse_integer(limit_text, name="limit", minimum=1, maximum=MAX_PAGE_SIZE)
        )
    before = _arg("before")
    after = _arg("after")
    return _parse(
        lambda: pages.workflow_page(
            geneva,
            filters,
            before=None if before is None else Cursor.decode(geneva, before),
            after=None if after is None else Cursor.decode(geneva, after),
            limit=limit,
        )
    )


#: The query arguments each page reads, the only ones its links carry over. Anything else
#: in the URL (``endpoint=``, ``_external=``, ``_anchor=``, ``_method=``...) never reaches
#: ``url_for``, so it can neither break a page nor rewrite its links.
PAGE_ARGUMENTS: Final[dict[str, tuple[str, ...]]] = {
    "geneva.overview": ("format",),
    "geneva.workflows": (
        "state",
        "workflow",
        "hero_type",
        "hero_id",
        "hero",
        "limit",
        "before",
        "after",
        "format",
    ),
    "geneva.workflow": ("format",),
    "geneva.hero": ("limit", "before", "after", "format"),
}


def _page_url(**changes: Any) -> str:
    """The current page's URL with some query arguments changed (None removes one).

    Only the page's own arguments (:data:`PAGE_ARGUMENTS`) are kept; on any other
    endpoint (static files, search, an error before routing) the link is the overview's.
    """
    endpoint = request.endpoint if request.endpoint in PAGE_ARGUMENTS else "geneva.overview"
    known = PAGE_ARGUMENTS[endpoint]
    args = {key: request.args[key] for key in known if request.args.get(key, "") != ""}
    for key, value in changes.items():
        if key not in known:
            continue
        if value is None:
            args.pop(key, None)
        else:
            args[key] = str(value)
    if endpoint == "geneva.hero":
        view_args = request.view_args or {}
        return _hero_url(view_args["hero_type"], view_args["hero_id"], **args)
    values: dict[str, Any] = dict(args)
    if endpoint == "geneva.workflow":
        values.update(request.view_args or {})
    return url_for(endpoint, **values)


def _hero_url(hero_type: str, hero_id: str, **args: Any) -> str:
    """The link to a hero's workflows: its hero page, or, when the type or id would not
    stay one path segment (``..``, ``/`` in the type), the list filtered by that hero,
    so that no hero id can point a link outside the status UI."""
    if present.is_path_safe_hero(hero_type, hero_id):
        return url_for("geneva.hero", hero_type=hero_type, hero_id=hero_id, **args)
    args.pop("hero", None)
    return url_for("geneva.workflows", hero_type=hero_type, hero_id=hero_id, **args)


def _filters_json(filters: WorkflowFilters) -> dict[str, Any]:
    return {
        "state": filters.state,
        "workflow": filters.workflow,
        "hero_type": filters.hero_type,
        "hero_id": filters.hero_id,
    }


def _page_json(page: WorkflowPage) -> dict[str, Any]:
    def link(**changes: Any) -> str:
        return _page_url(**{"before": None, "after": None, "format": "json", **changes})

    return {
        "limit": page.limit,
        "count": len(page.workflows),
        "older_cursor": None if page.older is None else page.older.encode(),
        "newer_cursor": None if page.newer is None else page.newer.encode(),
        "older_url": None if page.older is None else link(before=page.older.encode()),
        "newer_url": None if page.newer is None else link(after=page.newer.encode()),
    }


def _hero_info(hero_type: str | None, hero_id: str | None) -> dict[str, Any]:
    """The hero block of the workflow and hero pages."""
    if hero_type is None or hero_id is None:
        return {"type": None, "id": None, "url": None, "app_url": None, "record": "none"}
    geneva = _state().geneva
    record = "unknown type"
    if geneva.hero_class(hero_type) is not None:
        try:
            record = "present" if geneva.load_hero(hero_type, hero_id) is not None else "deleted"
        except Exception:  # a hero table the app can't read here must not break the page
            geneva.db.session.rollback()
            logger.warning("could not load hero %s:%s", hero_type, hero_id, exc_info=True)
            record = "unreadable"
    return {
        "type": hero_type,
        "id": hero_id,
        "url": _hero_url(hero_type, hero_id),
        "app_url": _app_hero_url(hero_type, hero_id),
        "record": record,
    }


def _app_hero_url(hero_type: str, hero_id: str) -> str | None:
    builder = _state().config.ui_hero_url
    if builder is None:
        return None
    try:
        url = builder(hero_type, hero_id)
    except Exception:
        logger.warning("GENEVA_UI_HERO_URL failed for %s:%s", hero_type, hero_id, exc_info=True)
        return None
    checked = present.safe_url(url)
    if url is not None and checked is None:
        logger.warning("GENEVA_UI_HERO_URL returned %r, which is not an http(s) URL or path", url)
    return checked
