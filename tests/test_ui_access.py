"""Who may see the status UI, which methods it answers, and where it lives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.conftest import make_app
from tests.models import db

PAGES = [
    "/geneva/",
    "/geneva/workflows",
    "/geneva/workflows/1",
    "/geneva/heroes/User/1",
    "/geneva/search?q=1",
    "/geneva/static/geneva.css",
]


@pytest.fixture
def build(tmp_path: Any) -> Iterator[Any]:
    """``build(**config)`` makes an app on a file SQLite database with its tables."""
    apps: list[Flask] = []

    def factory(testing: bool = True, debug: bool = False, **config: Any) -> Flask:
        app = make_app(f"sqlite:///{tmp_path / f'access{len(apps)}.sqlite3'}", **config)
        app.testing = testing
        app.debug = debug
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


def _status(app: Flask, url: str, method: str = "GET") -> int:
    return int(app.test_client().open(url, method=method).status_code)


def test_without_a_callable_testing_apps_answer(build: Any) -> None:
    app = build(testing=True)
    assert _status(app, "/geneva/") == 200
    assert _status(app, "/geneva/workflows/1") == 404  # past the access check


def test_without_a_callable_debug_apps_answer(build: Any) -> None:
    app = build(testing=False, debug=True)
    assert _status(app, "/geneva/") == 200


@pytest.mark.parametrize("url", PAGES)
def test_without_a_callable_other_apps_are_refused(build: Any, url: str) -> None:
    app = build(testing=False, debug=False)
    response = app.test_client().get(url)
    assert response.status_code == 403
    assert "GENEVA_UI_ACCESS" in response.get_data(as_text=True)


def test_refusal_in_json(build: Any) -> None:
    app = build(testing=False)
    response = app.test_client().get("/geneva/?format=json")
    assert response.status_code == 403
    assert response.get_json()["error"]["status"] == 403


@pytest.mark.parametrize("url", PAGES)
def test_a_callable_saying_no_refuses_even_under_testing(build: Any, url: str) -> None:
    app = build(testing=True, GENEVA_UI_ACCESS=lambda: False)
    response = app.test_client().get(url)
    assert response.status_code == 403
    assert "GENEVA_UI_ACCESS refused" in response.get_data(as_text=True)


def test_a_callable_saying_yes_opens_it_outside_testing(build: Any) -> None:
    app = build(testing=False, GENEVA_UI_ACCESS=lambda: True)
    assert _status(app, "/geneva/") == 200


def test_the_callable_is_asked_on_each_request_with_the_request_at_hand(build: Any) -> None:
    from flask import request

    seen: list[str] = []

    def access() -> bool:
        seen.append(request.path)
        return request.headers.get("X-Operator") == "yes"

    app = build(testing=False, GENEVA_UI_ACCESS=access)
    client = app.test_client()
    assert client.get("/geneva/").status_code == 403
    assert client.get("/geneva/", headers={"X-Operator": "yes"}).status_code == 200
    assert client.get("/geneva/workflows", headers={"X-Operator": "yes"}).status_code == 200
    assert seen == ["/geneva/", "/geneva/", "/geneva/workflows"]


def test_access_must_be_callable(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="GENEVA_UI_ACCESS"):
        make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", GENEVA_UI_ACCESS=True)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("url", PAGES)
def test_only_get(build: Any, url: str, method: str) -> None:
    app = build(testing=True)
    assert _status(app, url, method) == 405


def test_every_route_is_get_only(build: Any) -> None:
    app = build(testing=True)
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("geneva.")]
    assert {r.endpoint for r in rules} == {
        "geneva.overview",
        "geneva.workflows",
        "geneva.workflow",
        "geneva.hero",
        "geneva.search",
        "geneva.static",
    }
    for rule in rules:
        assert rule.methods is not None
        assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule


def test_no_routes_with_the_prefix_none(build: Any) -> None:
    app = build(testing=True, GENEVA_UI_URL_PREFIX=None)
    assert not [r for r in app.url_map.iter_rules() if r.endpoint.startswith("geneva.")]
    assert "geneva" not in app.blueprints
    assert _status(app, "/geneva/") == 404
    assert _status(app, "/geneva/workflows") == 404


def test_another_prefix(build: Any) -> None:
    app = build(testing=True, GENEVA_UI_URL_PREFIX="/ops/workflows/")
    client = app.test_client()
    assert client.get("/geneva/").status_code == 404
    page = client.get("/ops/workflows/")
    assert page.status_code == 200
    assert 'href="/ops/workflows/static/geneva.css"' in page.get_data(as_text=True)
    assert client.get("/ops/workflows/workflows?format=json").status_code == 200


def test_security_headers(build: Any) -> None:
    app = build(testing=True)
    client = app.test_client()
    for url in ("/geneva/", "/geneva/workflows/1", "/geneva/workflows?state=bad"):
        response = client.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
    refused = build(testing=False).test_client().get("/geneva/")
    assert "default-src 'none'" in refused.headers["Content-Security-Policy"]


def test_the_rest_of_the_app_is_untouched(build: Any) -> None:
    app = build(testing=False)

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    response = app.test_client().get("/hello")
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response.headers
