"""The manual runs: every python example in docs/ is executed, and the site builds cleanly.

How the examples are run is described in ``tests/docs_harness.py`` (and, for readers, in
``docs/index.md``, "About the examples").
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flask_geneva.config import DEFAULTS
from tests.docs_harness import DOCS_DIR, all_pages, parse_page, run_page

REPO = DOCS_DIR.parent

#: Languages a fenced block may have. Only ``python`` is executed.
FENCE_LANGUAGES = {"python", "sh", "text", "ini", "toml", "dot", "json", "sql"}

#: Every python block that is shown but not run: (page, the reason the page gives).
#: A new skip must be added here, so that skipping stays a deliberate choice.
EXPECTED_SKIPS: set[tuple[str, str]] = set()

#: The sections of the original manual's outline, and the page and heading of each here.
OUTLINE_SECTIONS: dict[str, tuple[str, str]] = {
    "Introduction": ("index.md", "flask_geneva"),
    "The Problem with Long-Running Processes": (
        "index.md",
        "The problem with long-running processes",
    ),
    "What GenevaDrive Provides": ("index.md", "What flask_geneva provides"),
    "Workflows": ("concepts.md", "Workflows"),
    "Steps": ("concepts.md", "Steps"),
    "The Hero": ("concepts.md", "The hero"),
    "Step Executions": ("concepts.md", "Step executions"),
    "Named Steps": ("defining-steps.md", "Named steps"),
    "Anonymous Steps": ("defining-steps.md", "Anonymous steps"),
    "Polling with Programmatic Steps": ("defining-steps.md", "Polling with programmatic steps"),
    "Instance Methods as Steps": ("defining-steps.md", "Methods as steps"),
    "Step Ordering": ("defining-steps.md", "Step ordering with before_step and after_step"),
    "Flow Control Overview": ("flow-control.md", "Overview"),
    "Canceling a Workflow": ("flow-control.md", "Canceling a workflow"),
    "Pausing for Manual Intervention": ("flow-control.md", "Pausing for manual intervention"),
    "Reattempting Steps": ("flow-control.md", "Reattempting steps"),
    "Skipping Steps": ("flow-control.md", "Skipping steps"),
    "Early Completion": ("flow-control.md", "Early completion"),
    "State Machine Diagram": ("states.md", "Workflow states"),
    "Step Execution States": ("states.md", "Step execution states"),
    "Skipping Steps with skip_if": ("conditions.md", "Skipping steps with skip_if"),
    "Blanket Cancellation with cancel_if": ("conditions.md", "Blanket cancellation with cancel_if"),
    "Key Assumptions": ("async-model.md", "Key assumptions"),
    "No Shared State Between Steps": ("async-model.md", "No shared state between steps"),
    "Default Behavior": ("exceptions.md", "Default behaviour"),
    "Configuring Exception Policy": ("exceptions.md", "Configuring the exception policy"),
    "Manual Exception Handling": ("exceptions.md", "Manual exception handling"),
    "Recovering Paused Workflows": ("exceptions.md", "Recovering paused workflows"),
    "Choosing the Right Hero": ("heroes.md", "Choosing the right hero"),
    "Workflows Without Heroes": ("heroes.md", "Workflows without heroes"),
    "When Heroes Disappear": ("heroes.md", "When heroes disappear"),
    "Adding the Gem": ("installation.md", "Adding the package"),
    "Database Tables": ("installation.md", "Database tables"),
    "UUID Primary Keys": ("installation.md", "UUID primary keys"),
    "How Steps Are Scheduled": ("dramatiq.md", "How steps are scheduled"),
    "Recommended Queue Adapters": ("dramatiq.md", "Brokers"),
    "Custom Job Options": ("dramatiq.md", "Custom message options"),
    "The Housekeeping Job": ("housekeeping.md", "What housekeeping does"),
    "Housekeeping Configuration": ("housekeeping.md", "Configuration"),
    "Running Housekeeping": ("housekeeping.md", "Running housekeeping"),
    "Test Helpers": ("testing.md", "Test helpers"),
    "Running Workflows Synchronously": ("testing.md", "Running workflows synchronously"),
    "Testing Individual Steps": ("testing.md", "Testing individual steps"),
    "Logging": ("observability.md", "Logging"),
    "ActiveSupport Instrumentation": ("observability.md", "Blinker signals"),
    "User Onboarding Workflow": ("examples/user-onboarding.md", "User onboarding workflow"),
    "Payment Processing Workflow": (
        "examples/payment-processing.md",
        "Payment processing workflow",
    ),
    "Data Retention Workflow": ("examples/data-retention.md", "Data retention workflow"),
    "Quick Reference: Flow Control Methods": ("quick-reference.md", "Flow-control methods"),
    "Quick Reference: Workflow States": ("quick-reference.md", "Workflow states"),
    "Quick Reference: Step Execution States": ("quick-reference.md", "Step execution states"),
}


def _page_id(path: Path) -> str:
    return str(path.relative_to(DOCS_DIR))


PAGES_WITH_PYTHON = [path for path in all_pages() if parse_page(path).python_blocks]


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=_page_id)
def test_the_examples_of_a_page_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def test_every_code_block_has_a_known_language() -> None:
    problems = []
    for path in all_pages():
        for block in parse_page(path).blocks:
            if block.language not in FENCE_LANGUAGES:
                problems.append(f"{block.where}: fence language {block.language!r}")
    assert not problems, "\n".join(problems)


def test_skipped_examples_are_the_listed_ones() -> None:
    skipped = [
        block
        for path in all_pages()
        for block in parse_page(path).python_blocks
        if block.skip_reason is not None
    ]
    found = {(_page_id(block.page), block.skip_reason) for block in skipped}
    assert found == EXPECTED_SKIPS, (
        "python examples that are not run must be listed in EXPECTED_SKIPS; skipped now:\n"
        + "\n".join(f"  {block.where}: {block.skip_reason}" for block in skipped)
    )


def _headings(page: str) -> list[str]:
    text = (DOCS_DIR / page).read_text(encoding="utf-8")
    headings = []
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*(\{[^}]*\})?\s*$", line)
        if match:
            headings.append(match[1].replace("`", ""))
    return headings


def test_every_section_of_the_outline_is_there() -> None:
    missing = []
    for section, (page, heading) in OUTLINE_SECTIONS.items():
        if not (DOCS_DIR / page).exists():
            missing.append(f"{section}: page {page} is missing")
        elif heading not in _headings(page):
            missing.append(f"{section}: no heading {heading!r} in {page}")
    assert not missing, "\n".join(missing)


def _documented_defaults() -> dict[str, str]:
    """``{key: default as written}`` from the configuration reference."""
    text = (DOCS_DIR / "configuration.md").read_text(encoding="utf-8")
    documented: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        heading = re.match(r"^##\s+`?(GENEVA_\w+)`?\s*$", line)
        if heading:
            key = heading[1]
            continue
        default = re.match(r"^Default:\s+`(.+)`\s*$", line)
        if default and key is not None:
            documented[key] = default[1]
            key = None
    return documented


def test_the_configuration_reference_lists_every_key_with_its_default() -> None:
    documented = _documented_defaults()
    assert sorted(documented) == sorted(DEFAULTS), (
        "docs/configuration.md must have one '## GENEVA_...' section with a 'Default: `...`' "
        "line for each key of flask_geneva.config.DEFAULTS"
    )
    for key, written in documented.items():
        value = eval(
            compile(ast.parse(written, mode="eval"), key, "eval"), {"timedelta": timedelta}
        )
        assert value == DEFAULTS[key], (
            f"{key}: the manual says {written}, the code {DEFAULTS[key]!r}"
        )


def test_every_diagram_is_rendered() -> None:
    sources = sorted((DOCS_DIR / "diagrams").glob("*.dot"))
    assert sources, "docs/diagrams/*.dot holds the state diagrams"
    for source in sources:
        svg = source.with_suffix(".svg")
        assert svg.exists(), f"render {source.name}: dot -Tsvg {source} -o {svg}"
        names = set(re.findall(r"^\s*(\w+)\s*\[", source.read_text(), flags=re.M))
        rendered = svg.read_text()
        for name in names - {"node", "edge", "graph", "start"}:
            assert name in rendered, f"{svg.name} is older than {source.name} ({name} missing)"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert not warnings, "mkdocs build warned:\n" + "\n".join(warnings)
    return site


def test_the_manual_builds_without_warnings(built_site: Path) -> None:
    assert (built_site / "index.html").exists()
    assert (built_site / "api" / "index.html").exists()


def test_the_manual_loads_nothing_from_the_network(built_site: Path) -> None:
    remote = re.compile(
        r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I
    )
    offenders = []
    for html in built_site.rglob("*.html"):
        for match in remote.finditer(html.read_text(encoding="utf-8")):
            offenders.append(f"{html.relative_to(built_site)}: {match.group(0)}")
    assert not offenders, "\n".join(offenders[:20])


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
def test_the_quickstart_runs_with_a_real_worker(tmp_path: Path) -> None:
    """Follow the quickstart's shell steps: Redis, `dramatiq worker:broker`, `flask run`."""
    import time
    import urllib.request
    import uuid

    page = parse_page(DOCS_DIR / "quickstart.md")
    for block in page.python_blocks:
        if block.title:
            (tmp_path / block.title).write_text(block.code, encoding="utf-8")
    shell = "\n".join(block.code for block in page.blocks if block.language == "sh")
    for command in (
        "flask --app app create-tables",
        "dramatiq worker:broker --processes 1 --threads 4",
        "flask --app app run --debug",
        "curl -X POST -d email=ada@example.com http://localhost:5000/signup",
        "flask --app app geneva show 1",
    ):
        assert command in shell, f"the quickstart no longer says {command!r}"

    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "FLASK_GENEVA_BROKER_URL": os.environ.get(
            "GENEVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
        ),
        # A queue of its own, so that no other test's worker takes these messages.
        "FLASK_GENEVA_DEFAULT_QUEUE": f"docs_quickstart_{uuid.uuid4().hex[:8]}",
    }

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert flask("create-tables").returncode == 0
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "worker:broker",
            "--processes",
            "1",
            "--threads",
            "4",
            "--queues",
            env["FLASK_GENEVA_DEFAULT_QUEUE"],
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def get_json(path: str) -> Any:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/users/0", timeout=1)
            except urllib.error.HTTPError:
                break  # the server answers (404: no such user)
            except OSError:
                assert time.monotonic() < deadline, "flask run did not start"
                time.sleep(0.2)
        request = urllib.request.Request(
            base + "/signup", data=b"email=ada%40example.com", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            created = json.loads(response.read())
        deadline = time.monotonic() + 60
        while get_json(f"/users/{created['user']}")["tips_sent"] != 1:
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the workflow did not finish in time"
            time.sleep(0.2)
        assert get_json(f"/users/{created['user']}") == {
            "email": "ada@example.com",
            "tips_sent": 1,
            "welcomed": True,
        }
        shown = flask("geneva", "show", str(created["workflow"]))
        assert shown.returncode == 0, shown.stderr
        assert "  state:        finished" in shown.stdout
        assert "send_welcome -> send_first_tip" in shown.stdout
    finally:
        worker_log = ""
        for process in (web, worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                _, log = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                _, log = process.communicate(timeout=30)
            if process is worker:
                worker_log = log
    # The log lines the quickstart shows.
    for block in parse_page(DOCS_DIR / "quickstart.md").blocks:
        if block.language == "text" and "welcoming" in block.code:
            for expected in block.code.splitlines():
                assert expected in worker_log, f"{expected!r} not in the worker's log"
