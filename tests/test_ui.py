"""The status UI's pages and their JSON twins, on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.timeutil import utcnow
from tests.conftest import DATABASES, create_server_database, drop_server_database, make_app
from tests.models import db, geneva
from tests.ui_demo import HOSTILE_MESSAGE, Demo, seed_demo


@pytest.fixture(scope="module", params=DATABASES)
def demo_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Flask, Demo]]:
    """One seeded demo database per module and backend: the UI only reads, so the tests
    share it (its own server database, apart from the ``app`` fixture's)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'demo.sqlite3'}"
    else:
        url = create_server_database(request.param, "geneva_ui")
    app = make_app(url)
    with app.app_context():
        db.create_all()
        demo = seed_demo()
        db.session.remove()
    yield app, demo
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    if request.param != "sqlite":
        drop_server_database(url)


@pytest.fixture
def demo(demo_site: tuple[Flask, Demo]) -> Demo:
    return demo_site[1]


@pytest.fixture
def client(demo_site: tuple[Flask, Demo]) -> Any:
    return demo_site[0].test_client()


def _html(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    return str(response.get_data(as_text=True))


def _json(response: Any) -> Any:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    return response.get_json()


# ------------------------------------------------------------------------------ overview


def test_overview_counts_by_state_and_class(client: Any, demo: Demo) -> None:
    page = _html(client.get("/geneva/"))
    assert "Overview" in page
    for name in demo.classes:
        assert name in page
    assert "LegacyImportWorkflow" in page and "not in code" in page

    data = _json(client.get("/geneva/?format=json"))
    assert data["counts"] == {
        "ready": {"count": 5, "exact": True, "estimate": None},
        "performing": {"count": 1, "exact": True, "estimate": None},
        "paused": {"count": 5, "exact": True, "estimate": None},
        "finished": {"count": 11, "exact": True, "estimate": None},
        "canceled": {"count": 1, "exact": True, "estimate": None},
    }
    classes = {c["workflow_class"]: c for c in data["classes"]}
    assert classes["OnboardingWorkflow"]["counts"]["finished"]["count"] == 6
    assert classes["OnboardingWorkflow"]["defined"] is True
    assert classes["LegacyImportWorkflow"]["defined"] is False
    assert (
        classes["LegacyImportWorkflow"]["url"] == "/geneva/workflows?workflow=LegacyImportWorkflow"
    )
    assert data["count_cap"] == 10_000


def test_overview_health(client: Any, demo: Demo) -> None:
    health = _json(client.get("/geneva/?format=json"))["health"]
    assert health["ok"] is False
    stuck = health["stuck_in_progress"]
    assert stuck["count"]["count"] == 1
    assert stuck["threshold_seconds"] == 3600
    assert [e["workflow"]["id"] for e in stuck["executions"]] == [demo.stuck_running]
    assert stuck["executions"][0]["execution"]["state"] == "in_progress"

    overdue = health["overdue_scheduled"]
    assert [e["workflow"]["id"] for e in overdue["executions"]] == [demo.overdue]
    assert overdue["executions"][0]["execution"]["step_name"] == "remind_to_verify"
    assert overdue["stuck_threshold_seconds"] == 15 * 60

    outbox = health["outbox"]
    assert outbox["oldest_unpublished_age_seconds"] > 19 * 60  # the overdue step's row
    assert outbox["due"]["count"] >= 1

    paused = {p["workflow"]["id"]: p for p in health["paused"]}
    assert set(paused) == {
        demo.hostile_error,
        demo.paused_with_error,
        demo.document_workflow,
        demo.gone_class_id,
        demo.hostile_hero,
    }
    assert paused[demo.paused_with_error]["last_execution"]["error_class_name"].endswith(
        "GatewayTimeout"
    )
    failures = health["recent_failures"]
    assert failures[0]["execution"]["finished_at"] >= failures[-1]["execution"]["finished_at"]
    assert {f["workflow"]["id"] for f in failures} == {
        demo.hostile_error,
        demo.paused_with_error,
        demo.document_workflow,
    }
    assert "error_backtrace" not in failures[0]["execution"]


def test_overview_of_an_empty_database(app: Flask) -> None:
    client = app.test_client()
    page = _html(client.get("/geneva/"))
    assert "Everything is moving" in page
    data = _json(client.get("/geneva/?format=json"))
    assert data["health"]["ok"] is True
    assert all(c["count"] == 0 for c in data["counts"].values())


# ------------------------------------------------------------------------------ the list


def test_list_newest_first_with_activity(client: Any, demo: Demo) -> None:
    data = _json(client.get("/geneva/workflows?format=json"))
    created = [w["created_at"] for w in data["workflows"]]
    assert created == sorted(created, reverse=True)
    assert len(data["workflows"]) == 23
    by_id = {w["id"]: w for w in data["workflows"]}
    waiting = by_id[demo.waiting]
    assert waiting["active_execution"]["step_name"] == "charge_payment"
    assert waiting["active_execution"]["state"] == "scheduled"
    assert waiting["last_execution"]["step_name"] == "charge_payment"
    paused = by_id[demo.paused_with_error]
    assert paused["active_execution"] is None
    assert paused["last_execution"]["outcome"] == "failed"
    assert data["page"]["older_url"] is None and data["page"]["newer_url"] is None
    assert data["filters"] == {"state": None, "workflow": None, "hero_type": None, "hero_id": None}

    page = _html(client.get("/geneva/workflows"))
    assert f'href="/geneva/workflows/{demo.waiting}"' in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=paused", 5),
        ("state=finished", 11),
        ("workflow=OnboardingWorkflow", 10),
        ("workflow=OnboardingWorkflow&state=ready", 4),
        ("workflow=NoSuchWorkflow", 0),
        ("hero_type=User", 14),
        ("hero_type=User&hero_id=1", 2),
        ("hero=User:1", 2),
        ("hero=User:1&state=paused", 1),
        ("state=&workflow=&hero_type=", 23),  # empty fields are no filter
    ],
)
def test_list_filters(client: Any, demo: Demo, query: str, expected: int) -> None:
    data = _json(client.get(f"/geneva/workflows?{query}&format=json"))
    assert len(data["workflows"]) == expected
    for key, value in (part.split("=") for part in query.split("&")):
        if key == "state" and value:
            assert {w["state"] for w in data["workflows"]} == {value}
        if key == "workflow" and value:
            assert {w["workflow_class"] for w in data["workflows"]} <= {value}
    html = _html(client.get(f"/geneva/workflows?{query}"))
    assert html.count('<tr class="row-') == expected


def test_list_filters_show_in_the_form(client: Any, demo: Demo) -> None:
    page = _html(client.get("/geneva/workflows?workflow=OnboardingWorkflow&hero_type=User"))
    assert '<option value="OnboardingWorkflow" selected>' in page
    assert 'name="hero_type" value="User"' in page
    unknown = _html(client.get("/geneva/workflows?workflow=Nope"))
    assert "No workflow class named <code>Nope</code>" in unknown


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=sleeping", "unknown state 'sleeping'"),
        ("hero_id=4", "a hero id needs a hero type too"),
        ("hero=User", "a hero is written TYPE:ID"),
        ("hero=User:1&hero_type=User", "not both"),
        ("limit=0", "limit must be a whole number from 1 to 100"),
        ("limit=lots", "limit must be a whole number"),
        ("limit=101", "limit must be a whole number"),
        ("before=yesterday", "malformed page cursor"),
        ("before=123-abc", "workflow ids are whole numbers"),
        ("before=99999999999999999999-1", "out of range"),
        ("before=1-1&after=1-1", "either before= or after="),
        ("format=xml", "format must be html or json"),
        ("workflow=%00", "workflow must not contain a NUL character"),
        ("hero_type=User%00&hero_id=1", "hero_type must not contain a NUL character"),
        ("hero=User:1%00", "hero_id must not contain a NUL character"),
        ("before=%C2%B2-1", "malformed page cursor"),
    ],
)
def test_malformed_filters_are_a_400(client: Any, query: str, message: str) -> None:
    page = client.get(f"/geneva/workflows?{query}")
    assert page.status_code == 400
    assert message in html.unescape(page.get_data(as_text=True))
    if "format=" not in query:
        data = client.get(f"/geneva/workflows?{query}&format=json")
        assert data.status_code == 400
        assert data.get_json()["error"]["status"] == 400
        assert message in data.get_json()["error"]["message"]


# ------------------------------------------------------------------------- one workflow


def test_workflow_page_steps_beside_executions(client: Any, demo: Demo) -> None:
    page = _html(client.get(f"/geneva/workflows/{demo.paused_with_error}"))
    names = re.findall(r'<span class="step-name mono">([^<]+)</span>', page)
    assert names == ["send_renewal_notice", "charge_payment", "activate_new_period"]
    assert "resume runs this" in page
    assert "not reached yet" in page
    assert "Traceback (most recent call last)" in page
    assert "flask geneva resume" in page

    data = _json(client.get(f"/geneva/workflows/{demo.paused_with_error}?format=json"))
    assert data["workflow"]["state"] == "paused"
    assert data["workflow"]["data"] == {"fail": "timeout", "notice_sent": True}
    steps = data["steps"]
    assert [s["name"] for s in steps] == [
        "send_renewal_notice",
        "charge_payment",
        "activate_new_period",
    ]
    assert [s["position"] for s in steps] == [1, 2, 3]
    charge = steps[1]
    assert charge["wait_seconds"] == 3 * 86400
    assert charge["on_exception"].startswith("reattempt (max 2")
    assert [e["attempt"] for e in charge["executions"]] == [1, 2, 3]
    assert [e["outcome"] for e in charge["executions"]] == ["reattempted", "reattempted", "failed"]
    first = charge["executions"][0]
    assert first["error_class_name"] == "tests.ui_demo.GatewayTimeout"
    assert first["error_message"] == "no answer from the gateway in 30 s"
    assert "Traceback" in first["error_backtrace"]
    assert first["duration_seconds"] >= 0
    assert first["started_at"] and first["finished_at"] and first["scheduled_for"]
    assert steps[2]["executions"] == []
    assert steps[2]["skip_if"] == "already_active()"
    assert data["due"] == {
        "kind": "paused",
        "step_name": "charge_payment",
        "execution_id": None,
        "at": None,
        "overdue": False,
        "stuck": False,
        "waiting": None,
        "resume_waits_for": None,
        "pending_signals": 0,
        "held_signal_id": None,
    }
    assert data["actions"] == [
        {"name": a, "command": f"flask geneva {a} {demo.paused_with_error}"}
        for a in ("resume", "cancel", "skip")
    ]
    assert data["history"] == {"total": 4, "shown": 4, "truncated": False}
    assert data["hero"] == {
        "type": "User",
        "id": "2",
        "url": "/geneva/heroes/User/2",
        "app_url": None,
        "record": "present",
    }


def test_workflow_page_due_next_and_overdue(client: Any, demo: Demo) -> None:
    waiting = _json(client.get(f"/geneva/workflows/{demo.waiting}?format=json"))
    assert waiting["due"]["kind"] == "scheduled"
    assert waiting["due"]["step_name"] == "charge_payment"
    assert waiting["due"]["overdue"] is False
    assert waiting["due"]["at"] > waiting["workflow"]["updated_at"]
    assert [a["name"] for a in waiting["actions"]] == ["pause", "cancel", "skip"]
    assert "Next step" in _html(client.get(f"/geneva/workflows/{demo.waiting}"))

    overdue = _json(client.get(f"/geneva/workflows/{demo.overdue}?format=json"))
    assert overdue["due"]["kind"] == "scheduled"
    assert overdue["due"]["overdue"] is True
    assert overdue["due"]["stuck"] is True
    assert "Overdue" in _html(client.get(f"/geneva/workflows/{demo.overdue}"))

    running = _json(client.get(f"/geneva/workflows/{demo.stuck_running}?format=json"))
    assert running["due"]["kind"] == "running"
    assert running["due"]["stuck"] is True
    assert running["actions"] == []
    assert "its worker may have died" in _html(
        client.get(f"/geneva/workflows/{demo.stuck_running}")
    )

    done = _json(client.get(f"/geneva/workflows/{demo.finished}?format=json"))
    assert done["due"]["kind"] == "done"
    assert done["actions"] == []
    assert "allows no operator action" in _html(client.get(f"/geneva/workflows/{demo.finished}"))


def test_workflow_page_flags_removed_steps_and_classes(client: Any, demo: Demo) -> None:
    data = _json(client.get(f"/geneva/workflows/{demo.removed_step}?format=json"))
    assert [s["name"] for s in data["removed_steps"]] == ["send_sms_welcome"]
    assert data["removed_steps"][0]["defined"] is False
    assert data["removed_steps"][0]["position"] is None
    page = _html(client.get(f"/geneva/workflows/{demo.removed_step}"))
    assert "Executions of steps the code no longer has" in page
    assert "not in the code any more" in page

    gone = _json(client.get(f"/geneva/workflows/{demo.gone_class_id}?format=json"))
    assert gone["class_defined"] is False
    assert gone["workflow"]["class_defined"] is False
    assert gone["steps"] == []
    page = _html(client.get(f"/geneva/workflows/{demo.gone_class_id}"))
    assert "The code no longer defines a workflow class named" in page


def test_unknown_and_malformed_workflow_ids_are_404(client: Any, demo: Demo) -> None:
    missing = client.get("/geneva/workflows/987654")
    assert missing.status_code == 404
    assert "There is no workflow #987654" in missing.get_data(as_text=True)
    assert client.get("/geneva/workflows/987654?format=json").get_json() == {
        "error": {
            "status": 404,
            "title": "Not Found",
            "message": "There is no workflow #987654. It may have been cleaned up by "
            "housekeeping after it finished.",
        }
    }
    for bad in ("abc", "-1", "1.5", "%20", "0x1F", "%C2%B2", "%D9%A3", "%00"):
        response = client.get(f"/geneva/workflows/{bad}")
        assert response.status_code == 404, bad
        assert "workflow ids are whole numbers" in response.get_data(as_text=True)
    assert client.get(f"/geneva/workflows/{'9' * 40}").status_code == 404  # beyond BIGINT


def test_long_history_is_truncated_to_the_newest(app: Flask) -> None:
    client = app.test_client()

    class Poller(geneva.Workflow):
        may_proceed_without_hero = True

        @step
        def poll(self) -> None:
            self.reattempt(wait=0)

    wf = Poller.create()
    db.session.commit()
    for _ in range(5):
        perform_next_step(wf)
    from flask_geneva import queries

    state = app.extensions["geneva"]
    detail = queries.workflow_detail(
        geneva,
        wf,
        stuck_in_progress_threshold=state.config.stuck_in_progress_threshold,
        stuck_scheduled_threshold=state.config.stuck_scheduled_threshold,
        history_limit=3,
    )
    assert detail.history_truncated
    assert [e.sequence for e in detail.executions] == [4, 5, 6]
    assert detail.execution_total == 6
    data = _json(client.get(f"/geneva/workflows/{wf.id}?format=json"))
    assert data["history"] == {"total": 6, "shown": 6, "truncated": False}
    assert [e["attempt"] for e in data["steps"][0]["executions"]] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------- heroes


def test_hero_page_lists_every_workflow_of_the_hero(client: Any, demo: Demo) -> None:
    data = _json(client.get("/geneva/heroes/User/1?format=json"))
    assert data["hero"]["record"] == "present"
    assert data["hero"]["url"] == "/geneva/heroes/User/1"
    assert {w["hero_id"] for w in data["workflows"]} == {"1"}
    assert {w["id"] for w in data["workflows"]} >= {demo.hostile_error, demo.removed_step}
    assert len(data["workflows"]) == 2
    page = _html(client.get("/geneva/heroes/User/1"))
    assert "record exists" in page
    assert page.count('<tr class="row-') == 2

    nobody = _json(client.get("/geneva/heroes/User/424242?format=json"))
    assert nobody["workflows"] == []
    assert nobody["hero"]["record"] == "deleted"
    unmapped = _json(client.get("/geneva/heroes/Spaceship/1?format=json"))
    assert unmapped["hero"]["record"] == "unknown type"


def test_hero_url_builder_links_to_the_app(database_url: str) -> None:
    def hero_url(hero_type: str, hero_id: str) -> str | None:
        if hero_type == "Broken":
            raise RuntimeError("the builder failed")
        if hero_type == "Sneaky":
            return "javascript:alert(1)"
        return f"/admin/{hero_type.lower()}s/{hero_id}"

    app = make_app(database_url, GENEVA_UI_HERO_URL=hero_url)
    with app.app_context():
        db.create_all()
        try:
            client = app.test_client()
            page = _html(client.get("/geneva/heroes/User/5"))
            assert 'href="/admin/users/5"' in page
            assert (
                client.get("/geneva/heroes/User/5?format=json").get_json()["hero"]["app_url"]
                == "/admin/users/5"
            )
            assert "javascript:" not in _html(client.get("/geneva/heroes/Sneaky/1"))
            assert "Open in the app" not in _html(client.get("/geneva/heroes/Broken/1"))
        finally:
            db.session.remove()
            db.drop_all()


def test_hero_url_must_be_callable(database_url: str) -> None:
    with pytest.raises(ValueError, match="GENEVA_UI_HERO_URL"):
        make_app(database_url, GENEVA_UI_HERO_URL="/admin/{hero_id}")


# ------------------------------------------------------------------------------ search


@pytest.mark.parametrize(
    ("q", "location"),
    [
        ("42", "/geneva/workflows/42"),
        (" 42 ", "/geneva/workflows/42"),
        ("User:42", "/geneva/heroes/User/42"),
        ("OnboardingWorkflow", "/geneva/workflows?workflow=OnboardingWorkflow"),
        ("", "/geneva/workflows"),
    ],
)
def test_search_jumps(client: Any, q: str, location: str) -> None:
    response = client.get("/geneva/search", query_string={"q": q})
    assert response.status_code == 302
    assert response.headers["Location"] == location


def test_search_of_a_malformed_hero_is_a_400(client: Any) -> None:
    response = client.get("/geneva/search?q=User:")
    assert response.status_code == 400
    assert "TYPE:ID" in response.get_data(as_text=True)


# ----------------------------------------------------------------------------- escaping


def test_hostile_error_message_and_hero_type_are_escaped(client: Any, demo: Demo) -> None:
    pages = [
        "/geneva/",
        "/geneva/workflows",
        "/geneva/workflows?state=paused",
        f"/geneva/workflows/{demo.hostile_error}",
        f"/geneva/workflows/{demo.hostile_hero}",
        "/geneva/heroes/User/1",
    ]
    for url in pages:
        page = _html(client.get(url))
        assert "<script>alert" not in page, url
        assert "<img src=x" not in page, url
        assert "<b>Evil</b>" not in page, url
        assert "<i>1</i>" not in page, url
    workflow_page = _html(client.get(f"/geneva/workflows/{demo.hostile_error}"))
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in workflow_page
    overview = _html(client.get("/geneva/"))
    assert "&lt;script&gt;alert" in overview
    hero_page = _html(client.get(f"/geneva/workflows/{demo.hostile_hero}"))
    assert "&lt;b&gt;Evil&lt;/b&gt;&amp;Type:&lt;i&gt;1&lt;/i&gt;" in hero_page
    # A type with a slash cannot be one path segment: the hero link is the filtered list,
    # with the hostile type and id percent-encoded in its query.
    assert (
        'href="/geneva/workflows?hero_type=%3Cb%3EEvil%3C/b%3E%26Type&amp;hero_id=%3Ci%3E1%3C/i%3E"'
        in hero_page
    )

    # A hostile hero type in the hero page's own path (without a slash, which would end
    # the path segment).
    page = _html(client.get("/geneva/heroes/<img src=x onerror=alert(1)>&T/<i>1?format=html"))
    assert "<img src=x" not in page and "<i>1" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;T:&lt;i&gt;1" in page

    data = _json(client.get(f"/geneva/workflows/{demo.hostile_error}?format=json"))
    assert data["steps"][1]["executions"][0]["error_message"] == HOSTILE_MESSAGE


def test_hostile_workflow_class_and_step_names_are_escaped(app: Flask) -> None:
    client = app.test_client()
    table = geneva.Workflow.__table__
    ex = geneva.StepExecution.__table__
    now = utcnow()
    workflow_id = db.session.execute(
        sa.insert(table)
        .values(
            workflow_class="<svg onload=alert(1)>",
            state="ready",
            data={"<k>": "</pre><script>x()</script>"},
            allow_multiple=True,
            execution_count=1,
            created_at=now,
            updated_at=now,
            next_step_name="<u>step</u>",
        )
        .returning(table.c.id)
    ).scalar_one()
    db.session.execute(
        sa.insert(ex).values(
            workflow_id=workflow_id,
            sequence=1,
            step_name="<u>step</u>",
            state="scheduled",
            scheduled_for=now,
            created_at=now,
        )
    )
    db.session.commit()
    for url in ("/geneva/", "/geneva/workflows", f"/geneva/workflows/{workflow_id}"):
        page = _html(client.get(url))
        assert "<svg onload" not in page and "<u>step" not in page and "<script>x()" not in page
        assert "&lt;svg onload=alert(1)&gt;" in page


# ------------------------------------------------------------------ templates and assets


def test_pages_load_only_their_own_assets(client: Any, demo: Demo) -> None:
    page = _html(client.get(f"/geneva/workflows/{demo.hostile_error}"))
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith(("/geneva/", "data:", "#")), url
    assert "<style" not in page and "style=" not in page  # the CSP forbids inline styles
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # and inline scripts
    css = client.get("/geneva/static/geneva.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.get_data(as_text=True)
    assert client.get("/geneva/static/geneva.js").status_code == 200


def test_templates_can_be_overridden_by_the_app(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "geneva").mkdir()
    (tmp_path / "geneva" / "overview.html").write_text(
        '{% extends "geneva/base.html" %}{% block content %}Our own overview: '
        "{{ by_state['paused'].value }} paused{% endblock %}"
    )
    app = Flask("override", template_folder=str(tmp_path))
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, TESTING=True)
    db.init_app(app)
    geneva.init_app(app)
    with app.app_context():
        db.create_all()
        try:
            page = _html(app.test_client().get("/geneva/"))
            assert "Our own overview: 0 paused" in page
        finally:
            db.session.remove()
            db.drop_all()


# ------------------------------------------------------------------------- UUID keys


def test_pages_with_uuid_keys(database_url: str) -> None:
    from tests.uuid_models import Customer, uuid_db, uuid_geneva

    class Welcome(uuid_geneva.Workflow):
        @step
        def greet(self) -> None:
            pass

        @step(wait=timedelta(hours=1))
        def follow_up(self) -> None:
            pass

    app = Flask("uuid_ui")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, TESTING=True)
    uuid_db.init_app(app)
    uuid_geneva.init_app(app)
    with app.app_context():
        uuid_db.drop_all()
        uuid_db.create_all()
        try:
            customers = [Customer(name=f"c{i}") for i in range(3)]
            uuid_db.session.add_all(customers)
            uuid_db.session.commit()
            workflows = [Welcome.create(hero=c) for c in customers]
            uuid_db.session.commit()
            perform_next_step(workflows[0])
            client = app.test_client()
            data = _json(client.get(f"/geneva/workflows/{workflows[0].id}?format=json"))
            assert data["workflow"]["id"] == str(workflows[0].id)
            assert data["due"]["step_name"] == "follow_up"
            first = _json(client.get("/geneva/workflows?limit=2&format=json"))
            assert len(first["workflows"]) == 2
            rest = _json(client.get(first["page"]["older_url"]))
            ids = [w["id"] for w in first["workflows"] + rest["workflows"]]
            assert sorted(ids) == sorted(str(w.id) for w in workflows)
            assert client.get("/geneva/workflows/42").status_code == 404
            assert client.get(f"/geneva/workflows/{uuid.uuid4()}").status_code == 404
            hero = _json(client.get(f"/geneva/heroes/Customer/{customers[1].id}?format=json"))
            assert hero["hero"]["record"] == "present"
            assert [w["id"] for w in hero["workflows"]] == [str(workflows[1].id)]
            assert "Welcome" in _html(client.get("/geneva/"))
        finally:
            uuid_db.session.remove()
            uuid_db.drop_all()
            for engine in uuid_db.engines.values():
                engine.dispose()


def test_a_hero_page_with_a_nul_character_is_a_400(client: Any) -> None:
    assert client.get("/geneva/heroes/User/%00").status_code == 400
    assert client.get("/geneva/heroes/%00/1?format=json").get_json()["error"]["status"] == 400


def test_hero_ids_may_hold_slashes(client: Any) -> None:
    data = _json(client.get("/geneva/heroes/Path/a/b/c?format=json"))
    assert data["hero"]["id"] == "a/b/c"
    assert data["hero"]["record"] == "unknown type"
