"""A workflow waiting for a signal, in a real browser (Debian's chromium, headless).

The page says what the step waits for and until when, lists the signal that came, and
its hostile payload shows as text; nothing on the page fails or leaves the site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium, serve
from tests.conftest import make_app
from tests.models import db, geneva
from tests.test_signal_ui import HOSTILE, SignalUiFlow, waiting_flow
from tests.test_ui_browser import PHONE, PageWatch, _no_horizontal_scroll, _require_chromium

pytestmark = [pytest.mark.browser]
__all__ = ["_require_chromium"]  # its autouse fixture applies here too


@pytest.fixture
def served(database_url: str) -> Any:
    app = make_app(database_url)
    with app.app_context():
        db.drop_all()
        db.create_all()
        waiting = waiting_flow()
        other = SignalUiFlow.create()
        db.session.commit()
        geneva.send_signal(other.id, "approved", payload={"note": HOSTILE}, idempotency_key="k")
        db.session.commit()
        ids = (waiting.id, other.id)
        db.session.remove()
        with serve(app) as base_url:
            yield *ids, base_url
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


def test_a_waiting_workflow_in_chromium(served: Any, tmp_path: Path) -> None:
    waiting_id, other_id, base_url = served
    with chromium(tmp_path / "profile") as context:
        page = context.new_page()
        watch = PageWatch(page, base_url)

        response = page.goto(f"{base_url}/geneva/workflows/{waiting_id}")
        assert response.status == 200
        callout = page.locator(".callout")
        assert callout.locator(".eyebrow").inner_text().lower() == "waiting for a signal"
        line = callout.locator(".waiting-line").inner_text()
        assert line.startswith("decide waits for approved since ")
        assert ", until in 2 d " in line and line.endswith(" UTC")
        assert "waits for" in page.locator("#step-decide table.attempts").inner_text()
        assert page.locator("section.signals").inner_text().endswith(
            "No signal was sent to this workflow: flask geneva signal "
            f"{waiting_id} approved sends one."
        )

        # A signal that came before its step waits: pending, its payload shown as text.
        page.goto(f"{base_url}/geneva/workflows/{other_id}")
        row = page.locator("section.signals tr.signal-pending")
        assert row.count() == 1
        assert "<script>alert(1)</script><img src=x onerror=alert(2)>" in row.inner_text()
        assert page.locator("img[src=x]").count() == 0

        page.set_viewport_size(PHONE)
        page.goto(f"{base_url}/geneva/workflows/{waiting_id}")
        _no_horizontal_scroll(page)
        assert watch.problems == []

