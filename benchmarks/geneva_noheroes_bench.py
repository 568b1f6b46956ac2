"""flask_geneva without heroes: the hero-less variant, a second line beside ``geneva``.

The same runner as ``geneva_bench.py`` (same workers, same measurements) with
``heroes=0``: its workflows are ``BenchWorkflowNoHero`` (``may_proceed_without_hero =
True``, ``allow_multiple = True``), created without a hero, so no step pays the hero
check and no creation the one-ongoing check; each step runs the workload's ``UPDATE`` as
text through ``db.session``. This is what the benchmark measured up to 2026-12-03; the
difference between the two lines is what the hero path costs.
"""

from __future__ import annotations

import os
import sys

SYSTEM = "geneva-noheroes"
LABEL = "flask_geneva WITHOUT heroes (may_proceed_without_hero, allow_multiple)"
ORDER = 4
VENV = ".venv"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import geneva_bench  # noqa: E402


def run(load: common.Load, ctx: common.RunContext) -> common.RunOutput:
    ctx.settings["heroes"] = "0"
    return geneva_bench.run(load, ctx)


if __name__ == "__main__":
    common.runner_main(SYSTEM, run)
