"""Hostile input to the status UI, the CLI and the logs (issue 19).

What an attacker or a careless operator can send: any query argument, any id, any
number, workflow data and step errors of any content and size. Each gets a 4xx or a
one-line error, escaped and bounded output, and never a 500, a traceback, a link that
leaves the UI, or an unbounded row.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import step
from flask_geneva.executor import execute_step
from flask_geneva.testing import perform_next_step
from flask_geneva.ui import present
from tests.conftest import make_app
from tests.helpers import reload
from tests.models import db, geneva

# The documented bounds (docs/exceptions.md "What a failed attempt keeps",
# docs/observability.md "Logging", docs/ui.md "Security").
MAX_ERROR_MESSAGE_LENGTH = 10_000
MAX_ERROR_BACKTRACE_LENGTH = 50_000
MAX_LOGGED_VALUE_LENGTH = 2_000
LIST_ERROR_EXCERPT_LENGTH = 300

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31m\rFORGED\nlog line\u202e"
HUGE_NUMBER = "9" * 5000


class HostileWorkflow(geneva.Workflow):
    """Its first step fails with the message its data gives (``pad`` adds that many
    ``x`` in the middle, so that the data itself stays small)."""

    allow_multiple = True
    workflow_name = "Hostile\x1b[2J\x07Workflow\nFORGED"

    @step
    def first(self) -> None:
        if "message" in self.data:
            head, _, tail = self.data["message"].partition("|")
            raise RuntimeError(head + "x" * self.data.get("pad", 0) + tail)

    @step
    def second(self) -> None:
        pass


def failed_workflow(user: Any, message: str, pad: int = 0) -> Any:
    """A committed workflow paused by its first step failing with ``message`` (with
    ``pad`` characters in place of its ``|``)."""
    workflow = HostileWorkflow.create(hero=user, data={"message": message, "pad": pad})
    db.session.commit()
    with pytest.raises(RuntimeError):
        perform_next_step(workflow)
    return reload(workflow)


def control_characters(text: str) -> list[str]:
    """The characters of ``text`` a terminal or a log reader would act on."""
    return [ch for ch in text if not ch.isprintable()]


# ------------------------------------------------------------- 1. URL building in the UI

PAGES = [
    "/geneva/",
    "/geneva/workflows",
    "/geneva/workflows/1",
    "/geneva/heroes/User/1",
    "/geneva/search?q=1",
    "/geneva/static/geneva.js",
]
STRAY_ARGUMENTS = [
    "endpoint=x",
    "_method=POST",
    "_anchor=evil",
    "_external=1",
    "_scheme=javascript",
    "filename=x",
    "workflow_id=9",
    "hero_type=x&hero_id=y",
    "values=1",
]


@pytest.fixture
def sqlite_app(tmp_path: Any) -> Any:
    """``sqlite_app(**config)``: an app on a file SQLite database with its tables."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = make_app(f"sqlite:///{tmp_path / f'hostile{len(apps)}.sqlite3'}", **config)
        with app.app_context():
            db.create_all()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


def _separator(url: str) -> str:
    return "&" if "?" in url else "?"


@pytest.mark.parametrize("url", PAGES)
def test_a_refused_visitor_always_gets_the_403(sqlite_app: Any, url: str) -> None:
    client = sqlite_app(GENEVA_UI_ACCESS=lambda: False).test_client()
    for argument in STRAY_ARGUMENTS:
        response = client.get(f"{url}{_separator(url)}{argument}")
        assert response.status_code == 403, argument
        assert "GENEVA_UI_ACCESS refused" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", PAGES)
def test_unknown_arguments_neither_break_nor_rewrite_the_links(sqlite_app: Any, url: str) -> None:
    client = sqlite_app().test_client()
    for argument in STRAY_ARGUMENTS:
        response = client.get(f"{url}{_separator(url)}{argument}", headers={"Host": "evil.example"})
        assert response.status_code in (200, 302, 404), (argument, response.status_code)
        if response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            for href in re.findall(r'href="([^"]*)"', page):
                assert href.startswith(("/geneva/", "data:")), (argument, href)
                assert "#evil" not in href and "javascript" not in href, (argument, href)


# -------------------------------------------------------------------- 2. bad numbers in the UI


@pytest.mark.parametrize(
    "url",
    [
        f"/geneva/workflows/{HUGE_NUMBER}",
        f"/geneva/workflows/{HUGE_NUMBER}?format=json",
        "/geneva/workflows/99999999999999999999",
    ],
)
def test_an_id_no_key_can_hold_is_a_404(app: Flask, url: str) -> None:
    response = app.test_client().get(url)
    assert response.status_code == 404
    assert len(response.get_data()) < 20_000


MALFORMED_NUMBERS = [
    f"limit={HUGE_NUMBER}",
    "limit=%C2%B2",  # "²": a digit to str.isdigit(), not to int()
    "limit=%D9%A3",  # ARABIC-INDIC DIGIT THREE: int() reads it, but no URL writes it so
    f"before={HUGE_NUMBER}-1",
    f"after={HUGE_NUMBER}-1",
    f"before=1-{HUGE_NUMBER}",
    "before=1-99999999999999999999",  # beyond BIGINT: OverflowError on SQLite
    "after=1-9223372036854775808",
    "before=99999999999999999999999-1",
]


@pytest.mark.parametrize("path", ["/geneva/workflows", "/geneva/heroes/User/1"])
def test_malformed_numbers_in_the_lists_are_a_400(app: Flask, path: str) -> None:
    client = app.test_client()
    for query in MALFORMED_NUMBERS:
        for suffix in ("", "&format=json"):
            response = client.get(f"{path}?{query}{suffix}")
            assert response.status_code == 400, (query, response.status_code)
            assert len(response.get_data()) < 20_000


@pytest.mark.parametrize("q", [HUGE_NUMBER, "99999999999999999999", "²", "User:" + HUGE_NUMBER])
def test_search_never_fails_on_a_number(app: Flask, q: str) -> None:
    response = app.test_client().get("/geneva/search", query_string={"q": q})
    assert response.status_code in (302, 400)


# --------------------------------------------------------------------- 3. bad ids in the CLI


def invoke(app: Flask, *args: str) -> Any:
    runner = app.test_cli_runner()
    with app.app_context():
        return runner.invoke(args=["geneva", *args])


def one_line_error(result: Any, exit_code: int = 1) -> str:
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert not control_characters(lines[0])
    return str(lines[0])


@pytest.mark.parametrize("command", ["show", "resume", "cancel", "pause", "skip"])
def test_a_huge_id_is_a_one_line_error(app: Flask, user: Any, command: str) -> None:
    line = one_line_error(invoke(app, command, HUGE_NUMBER))
    assert line.startswith("Error: no workflow with id 9999")
    assert len(line) < 200


@pytest.mark.parametrize("limit", ["²", "\u0663", HUGE_NUMBER, "1e3", "+5"])
def test_list_refuses_a_limit_that_is_not_ascii_digits(app: Flask, limit: str) -> None:
    line = one_line_error(invoke(app, "list", "--limit", limit), exit_code=2)
    assert "--limit" in line
    assert len(line) < 300


# ------------------------------------------------------------------ 4. terminal escapes


def test_action_success_lines_escape_names_from_the_database(app: Flask, user: Any) -> None:
    workflow = HostileWorkflow.create(hero=user, data={})
    db.session.commit()
    table = geneva.Workflow.__table__
    db.session.execute(
        sa.update(table).where(table.c.id == workflow.id).values(next_step_name=ESCAPES)
    )
    # The scheduled execution names the same step (pause() keeps it for resume()).
    executions = geneva.StepExecution.__table__
    db.session.execute(
        sa.update(executions)
        .where(executions.c.workflow_id == workflow.id)
        .values(step_name=ESCAPES)
    )
    db.session.commit()

    result = invoke(app, "pause", str(workflow.id))

    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert not control_characters(line), repr(line)
    assert line.startswith("paused Hostile\\x1b[2J\\x07Workflow\\nFORGED #")
    assert "next step \\x1b]0;owned\\x07" in line


def test_log_lines_escape_and_bound_step_errors(app: Flask, user: Any, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        failed_workflow(user, ESCAPES + "|", pad=1_000_000)
    records = [r for r in caplog.records if r.name.startswith("flask_geneva")]
    assert any("step failed" in r.getMessage() for r in records)
    for record in records:
        message = record.getMessage()
        assert not control_characters(message), repr(message[:200])
        assert len(message) < MAX_LOGGED_VALUE_LENGTH + 1000
        assert record.workflow_class == "Hostile\\x1b[2J\\x07Workflow\\nFORGED"


def test_log_lines_escape_and_bound_malformed_step_messages(app: Flask, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="flask_geneva"):
        assert execute_step(geneva, ESCAPES + "9" * 1_000_000) is None
    [record] = [r for r in caplog.records if "malformed step message" in r.getMessage()]
    message = record.getMessage()
    assert not control_characters(message)
    assert len(message) < MAX_LOGGED_VALUE_LENGTH + 1000


def test_logged_tracebacks_keep_their_lines_and_lose_their_escapes(caplog: Any) -> None:
    logger = logging.getLogger("flask_geneva.relay")
    with caplog.at_level(logging.ERROR, logger="flask_geneva.relay"):
        try:
            raise RuntimeError(ESCAPES + "y" * 1_000_000)
        except RuntimeError:
            logger.exception("publishing failed for %s", ESCAPES)
    [record] = caplog.records
    assert not control_characters(record.getMessage())
    text = caplog.text
    assert "Traceback (most recent call last):" in text
    assert all(not control_characters(line) for line in text.splitlines())
    assert len(text) < MAX_ERROR_BACKTRACE_LENGTH + 10_000


# ------------------------------------------------------------------- 5. off-site links


@pytest.mark.parametrize(
    "url",
    [
        "/\\evil.example/x",
        "/\t/evil.example/y",
        "/\n/evil.example",
        "\t//evil.example",
        "/%09/ok\x00",
        "java\tscript:alert(1)",
    ],
)
def test_hero_urls_a_browser_reads_as_another_site_are_refused(url: str) -> None:
    assert present.safe_url(url) is None


def test_ordinary_hero_urls_are_kept() -> None:
    assert present.safe_url("/admin/users/1") == "/admin/users/1"
    assert present.safe_url("/admin/users/a\\b") == "/admin/users/a\\b"
    assert present.safe_url("https://admin.example.com/u/1") == "https://admin.example.com/u/1"


def _inside_the_ui(base: str, location: str) -> bool:
    return urlsplit(urljoin(f"http://localhost{base}", location)).path.startswith("/geneva/")


@pytest.mark.parametrize(
    "hero", ["User:../../../x", "User:..", "..:1", "User:a/./b", "../..:x", "a/..:b", "User:a//b"]
)
def test_search_for_a_hero_stays_inside_the_ui(app: Flask, hero: str) -> None:
    response = app.test_client().get("/geneva/search", query_string={"q": hero})
    assert response.status_code == 302
    assert _inside_the_ui("/geneva/search", response.headers["Location"])
    followed = app.test_client().get(response.headers["Location"])
    assert followed.status_code == 200


def test_links_to_a_hero_with_dot_segments_stay_inside_the_ui(app: Flask, user: Any) -> None:
    workflow = HostileWorkflow.create(hero=user, data={})
    db.session.commit()
    table = geneva.Workflow.__table__
    db.session.execute(
        sa.update(table).where(table.c.id == workflow.id).values(hero_id="../../../../x")
    )
    db.session.commit()
    client = app.test_client()
    for url in ("/geneva/workflows", f"/geneva/workflows/{workflow.id}"):
        page = client.get(url).get_data(as_text=True)
        hrefs = re.findall(r'href="([^"]*)"', page)
        assert any("hero_id=../../../../x" in href for href in hrefs)
        for href in hrefs:
            if not href.startswith("data:"):
                assert _inside_the_ui(url, href.replace("&amp;", "&")), href
    data = client.get(f"/geneva/workflows/{workflow.id}?format=json").get_json()
    assert _inside_the_ui("/geneva/", data["hero"]["url"])


# ----------------------------------------------------------------- 6. bounded stored text


def test_a_huge_error_is_stored_bounded_and_shown_as_an_excerpt(app: Flask, user: Any) -> None:
    workflow = failed_workflow(user, "start | end", pad=1_000_000)
    [execution] = [e for e in workflow.execution_history if e.error_class_name]
    assert len(execution.error_message) <= MAX_ERROR_MESSAGE_LENGTH
    assert execution.error_message.startswith("start xxx")
    assert execution.error_message.endswith("xxx end")
    assert "characters left out" in execution.error_message
    assert len(execution.error_backtrace) <= MAX_ERROR_BACKTRACE_LENGTH
    assert execution.error_backtrace.startswith("Traceback (most recent call last):")

    client = app.test_client()
    assert len(client.get("/geneva/").get_data()) < 100_000
    assert len(client.get("/geneva/workflows").get_data()) < 100_000
    assert len(client.get(f"/geneva/workflows/{workflow.id}").get_data()) < 200_000
    overview = client.get("/geneva/?format=json").get_json()
    [failure] = overview["health"]["recent_failures"]
    assert len(failure["execution"]["error_message"]) <= LIST_ERROR_EXCERPT_LENGTH
    assert failure["execution"]["error_message_truncated"] is True
    listed = client.get("/geneva/workflows?format=json").get_json()
    last = listed["workflows"][0]["last_execution"]
    assert len(last["error_message"]) <= LIST_ERROR_EXCERPT_LENGTH


def test_an_error_message_with_nul_is_stored(app: Flask, user: Any) -> None:
    # PostgreSQL's text columns refuse NUL: the failure must still be recorded.
    workflow = failed_workflow(user, "before\x00after")
    assert workflow.state == "paused"
    [execution] = [e for e in workflow.execution_history if e.error_class_name]
    assert execution.error_message == "before\\x00after"


# ------------------------------------------------------------- 7. non-finite numbers in data


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"n": float("nan")}, "data['n']"),
        ({"a": [1, {"b": float("inf")}]}, "data['a'][1]['b']"),
        ({"c": -float("inf")}, "data['c']"),
    ],
)
def test_create_refuses_non_finite_numbers(app: Flask, user: Any, data: Any, where: str) -> None:
    with pytest.raises(ValueError, match="non-finite") as raised:
        HostileWorkflow.create(hero=user, data=data)
    assert where in str(raised.value)
    assert "store None or a string" in str(raised.value)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 0


def test_the_json_twin_is_strict_json_even_for_old_non_finite_data(app: Flask, user: Any) -> None:
    workflow = HostileWorkflow.create(hero=user, data={"n": 1.5})
    db.session.commit()
    if db.engine.dialect.name == "sqlite":  # PostgreSQL's json type never held NaN
        table = geneva.Workflow.__table__
        db.session.execute(
            sa.update(table)
            .where(table.c.id == workflow.id)
            .values(data=sa.literal_column('\'{"n": NaN, "m": Infinity}\''))
        )
        db.session.commit()
    text = app.test_client().get(f"/geneva/workflows/{workflow.id}?format=json").get_data(True)

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    data = json.loads(text, parse_constant=refuse)["workflow"]["data"]
    if db.engine.dialect.name == "sqlite":
        assert data == {"n": "NaN", "m": "Infinity"}


class NonFiniteDataWorkflow(geneva.Workflow):
    @step
    def poison(self) -> None:
        self.data["ratio"] = float("inf")


def test_a_step_that_puts_a_non_finite_number_in_data_fails_as_a_step(
    app: Flask, user: Any
) -> None:
    """JSON cannot carry NaN or an infinity: a step that stores one in ``data`` fails
    like any step error (its outcome recorded, the workflow paused), and the stored data
    stays what it was."""
    wf = NonFiniteDataWorkflow.create(hero=user, data={"ratio": 1})
    db.session.commit()
    with pytest.raises(ValueError, match="JSON"):
        perform_next_step(wf)
    assert wf.state == "paused"
    execution = wf.execution_history[-1]
    assert (execution.state, execution.outcome) == ("failed", "failed")
    assert wf.data == {"ratio": 1}


# ------------------------------------------- what the databases cannot hold, or pages show


def _nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"in": value}
    return value


def _circular(**first: Any) -> Any:
    loop: dict[str, Any] = dict(first)
    loop["again"] = [loop]
    return loop


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_nested(32), r"data\['in'\]\['in'\].* is nested more than 31 levels deep"),
        (_circular(), r"nested more than 31 levels deep \(or contains itself\)"),
        (_circular(when=object()), r"nested more than 31 levels deep \(or contains itself\)"),
        ({"name": "caf\udce9"}, r"data\['name'\] holds a string with a lone surrogate"),
        ({"caf\udce9": 1}, r"data holds a string with a lone surrogate"),
    ],
    ids=["deep", "circular", "circular-and-not-json", "surrogate", "surrogate-key"],
)
def test_create_refuses_what_a_database_cannot_store(
    app: Flask, user: Any, data: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HostileWorkflow.create(hero=user, data=data)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(geneva.Workflow)) == 0


def test_data_nested_31_deep_is_stored_on_every_database(app: Flask, user: Any) -> None:
    workflow = HostileWorkflow.create(hero=user, data=_nested(31))
    db.session.commit()
    assert reload(workflow).data == _nested(31)


class DeepDataWorkflow(geneva.Workflow):
    @step
    def deepen(self) -> None:
        self.data["deep"] = _nested(40)


def test_a_step_that_nests_data_too_deep_fails_as_a_step(app: Flask, user: Any) -> None:
    wf = DeepDataWorkflow.create(hero=user, data={"kept": True})
    db.session.commit()
    with pytest.raises(ValueError, match="nested more than 31 levels deep"):
        perform_next_step(wf)
    assert wf.state == "paused"
    assert reload(wf).data == {"kept": True}


def test_pages_show_old_data_nested_too_deep(app: Flask, user: Any) -> None:
    """Data stored before the depth limit (PostgreSQL and SQLite took any depth; the
    JSON twin's writer recursed into it) is shown down to the limit."""
    workflow = HostileWorkflow.create(hero=user, data={"n": 1})
    db.session.commit()
    deep = _nested(600)
    if db.engine.dialect.name != "mysql":  # MariaDB's JSON check never held it
        table = geneva.Workflow.__table__
        db.session.execute(
            sa.update(table).where(table.c.id == workflow.id).values(data=deep)
        )
        db.session.commit()
    client = app.test_client()
    page = client.get(f"/geneva/workflows/{workflow.id}")
    twin = client.get(f"/geneva/workflows/{workflow.id}?format=json")
    assert (page.status_code, twin.status_code) == (200, 200)
    if db.engine.dialect.name != "mysql":
        shown = twin.get_json()["workflow"]["data"]
        for _ in range(31):
            shown = shown["in"]
        assert shown == "(nested more than 31 levels deep: not shown)"


@pytest.mark.parametrize(
    ("q", "target"),
    [
        ("7", "/geneva/workflows/7"),
        ("HostileWorkflow", "/geneva/workflows"),
        ("", "/geneva/workflows"),
    ],
)
def test_the_search_twin_goes_to_the_json_twin(app: Flask, q: str, target: str) -> None:
    response = app.test_client().get("/geneva/search", query_string={"q": q, "format": "json"})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == target
    assert "format=json" in location.query


class SelfContainingDataWorkflow(geneva.Workflow):
    @step
    def loop(self) -> None:
        self.data["me"] = self.data


def test_a_step_that_makes_data_contain_itself_fails_naming_it(app: Flask, user: Any) -> None:
    wf = SelfContainingDataWorkflow.create(hero=user, data={"kept": True})
    db.session.commit()
    with pytest.raises(ValueError, match=r"data\['me'\].* \(or contains itself\)"):
        perform_next_step(wf)
    assert wf.state == "paused"
    assert reload(wf).data == {"kept": True}
