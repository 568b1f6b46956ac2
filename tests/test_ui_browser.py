"""The status UI in a real browser: Debian's chromium, headless, driven by Playwright.

Opens the overview, follows a link to a paused workflow, checks what it shows, and takes
screenshots (light, dark, phone). They go to a temporary folder; to refresh the ones that
``docs/ui.md`` shows, run ``GENEVA_SCREENSHOT_DIR=docs/screenshots scripts/test -m browser``.
Chromium is required: ``scripts/test`` installs it, and without it this test fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.browser import chromium, chromium_available, serve
from tests.conftest import make_app
from tests.models import db
from tests.ui_demo import HOSTILE_MESSAGE, seed_demo

pytestmark = [pytest.mark.browser]

SCREENSHOTS = Path(
    os.environ.get("GENEVA_SCREENSHOT_DIR")
    or Path(tempfile.gettempdir()) / f"geneva-screenshots-{os.getpid()}"
)


@pytest.fixture(autouse=True)
def _require_chromium() -> None:
    if not chromium_available():
        pytest.fail("the browser tests need Debian's chromium (scripts/test installs it)")
PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1440, "height": 900}


@pytest.fixture
def served(database_url: str) -> Any:
    app = make_app(database_url)
    with app.app_context():
        db.drop_all()
        db.create_all()
        demo = seed_demo()
        db.session.remove()
        with serve(app) as base_url:
            yield app, demo, base_url
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


class PageWatch:
    """Collects what must not happen on a page: errors, dialogs, requests elsewhere."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.problems: list[str] = []
        host = urlparse(base_url).netloc
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on(
            "request",
            lambda r: (
                urlparse(r.url).netloc not in (host, "")
                and not r.url.startswith("data:")
                and self.problems.append(f"external request: {r.url}")
            ),
        )


def _shoot(page: Any, name: str, save: bool) -> None:
    if save:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def _no_horizontal_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow}px"


def test_overview_to_workflow_in_chromium(served: Any, tmp_path: Path, database_url: str) -> None:
    _app, demo, base_url = served
    save = database_url.startswith("sqlite")  # one set of screenshots is enough
    with chromium(tmp_path / "profile") as context:
        page = context.new_page()
        watch = PageWatch(page, base_url)

        # The overview: counts by state, health checks that point at the trouble.
        response = page.goto(f"{base_url}/geneva/")
        assert response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert page.title() == "Overview · geneva"
        tiles = page.locator(".tile")
        assert tiles.count() == 5
        assert page.locator(".tile-paused .tile-value").inner_text() == "5"
        # Stuck in progress, overdue, and the outbox (no relay runs in the tests).
        assert page.locator(".check-bad").count() == 3
        assert "DocumentProcessingWorkflow" in page.locator(".panel-bad").first.inner_text()
        assert "LegacyImportWorkflow" in page.locator("table.by-class").inner_text()
        _shoot(page, "overview.png", save)

        # Follow the paused workflow (its error is hostile markup) from the paused feed.
        link = page.locator(f".feed a[href='/geneva/workflows/{demo.hostile_error}']").first
        link.click()
        page.wait_for_url(f"{base_url}/geneva/workflows/{demo.hostile_error}")
        heading = page.locator("h1").inner_text()
        assert "SubscriptionRenewalWorkflow" in heading
        assert f"#{demo.hostile_error}" in heading
        assert "paused" in heading
        steps = page.locator("ol.steps > li .step-name").all_inner_texts()
        assert steps == ["send_renewal_notice", "charge_payment", "activate_new_period"]
        charge = page.locator("#step-charge_payment")
        assert charge.locator("table.attempts tbody tr.has-error").count() == 3  # 1 + 2 reattempts
        assert "resume runs this" in charge.inner_text()
        # The hostile message is shown as text, and nothing it contains ran.
        summary = charge.locator("details.error summary").last
        assert HOSTILE_MESSAGE[:40] in summary.inner_text()
        assert page.locator("img[src=x]").count() == 0
        summary.click()
        assert "Traceback" in charge.locator("pre.backtrace").last.inner_text()
        commands = page.locator("code.cmd").all_inner_texts()
        assert commands == [
            f"flask geneva {action} {demo.hostile_error}" for action in ("resume", "cancel", "skip")
        ]
        assert "Resume runs charge_payment" in page.locator(".callout").inner_text()
        _shoot(page, "workflow.png", save)

        # Dark mode.
        page.emulate_media(color_scheme="dark")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(245, 246, 248)"
        _shoot(page, "workflow-dark.png", save)
        page.goto(f"{base_url}/geneva/")
        _shoot(page, "overview-dark.png", save)
        page.emulate_media(color_scheme="light")

        # A workflow that waits: what is due next, and when.
        page.goto(f"{base_url}/geneva/workflows/{demo.overdue}")
        callout = page.locator(".callout").inner_text()
        assert "Overdue" in callout or "OVERDUE" in callout
        assert "remind_to_verify" in callout

        # The list, filtered in the URL, and the hero page.
        page.goto(f"{base_url}/geneva/workflows?state=paused")
        assert page.locator("table.list tbody tr").count() == 5
        assert page.locator(".tabs a[aria-current=page]").inner_text() == "paused"
        page.goto(f"{base_url}/geneva/workflows")
        _shoot(page, "workflows.png", save)
        page.locator("table.list a.hero").first.click()
        assert page.locator(".eyebrow").first.inner_text().lower() == "hero"

        # A phone: nothing scrolls sideways.
        page.set_viewport_size(PHONE)
        page.goto(f"{base_url}/geneva/")
        _no_horizontal_scroll(page)
        _shoot(page, "overview-phone.png", save)
        page.goto(f"{base_url}/geneva/workflows/{demo.paused_with_error}")
        _no_horizontal_scroll(page)
        _shoot(page, "workflow-phone.png", save)
        page.set_viewport_size(WIDE)

        assert watch.problems == []
