"""docs/performance.md is a page a user reads: what is measured, the latest figures of one
run with their provenance, what they mean for sizing, how to reproduce them; the diary
of earlier runs lives in benchmarks/RESULTS-*.txt."""

from __future__ import annotations

import re

from tests.docs_harness import DOCS_DIR

REPO = DOCS_DIR.parent
PAGE = DOCS_DIR / "performance.md"


def _sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_the_page_has_the_sections_a_reader_looks_for() -> None:
    sections = _sections(PAGE.read_text(encoding="utf-8"))
    for wanted in (
        "What is measured",
        "Latest figures",
        "What the numbers mean for sizing",
        "How to reproduce",
    ):
        assert wanted in sections, f"docs/performance.md has no '## {wanted}' section"


def test_the_latest_figures_name_their_commit_machine_and_rounds() -> None:
    text = PAGE.read_text(encoding="utf-8")
    latest = text.split("## Latest figures", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"commit [0-9a-f]{7}", latest)
    assert "2-core" in latest and "PostgreSQL 15" in latest
    assert re.search(r"median\s+of\s+\d+\s+interleaved\s+rounds", latest)
    assert "| **geneva** | heavy |" in latest


def test_the_page_is_not_a_diary() -> None:
    text = PAGE.read_text(encoding="utf-8")
    diary = re.findall(
        r"\b(morning's|afternoon's|evening's|late evening's|fourth machine|fifth machine)\b",
        text,
    )
    assert not diary, f"docs/performance.md still reads as a diary: {sorted(set(diary))}"


def test_the_history_it_points_to_exists() -> None:
    text = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"benchmarks/(RESULTS-[\w-]+\.txt)", text))
    assert "RESULTS-history.txt" in named
    for name in named:
        assert (REPO / "benchmarks" / name).exists(), name
    history = (REPO / "benchmarks" / "RESULTS-history.txt").read_text(encoding="utf-8")
    for kept in ("The afternoon's run", "Tried and not kept", "Timers started at once"):
        assert kept in history
