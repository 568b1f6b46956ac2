"""flask_geneva with fewer worker threads: 2 processes x 2 threads, a 2 ms idle poll.

The same runner as ``geneva_bench.py`` (same workflow, same measurements), with other
defaults: 2 worker processes x 2 threads (fewer threads contend less for the GIL: each
step waits less, but fewer run at once) and an idle poll of 2 ms
(``GENEVA_WORKER_IDLE_TIMEOUT_MS``: an idle consumer notices a new message sooner, for
some CPU while idle). ``--set`` still overrides each of them. On the 2-core machine it
had lower heavy-load step latency and lower throughput than 2 x 8: see
``docs/performance.md``.
"""

from __future__ import annotations

import os
import sys

SYSTEM = "geneva-2x2"
LABEL = "flask_geneva with heroes, 2 processes x 2 threads, 2 ms idle poll"
ORDER = 3
VENV = ".venv"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import geneva_bench  # noqa: E402

TUNED = {"processes": "2", "threads": "2", "idle_timeout_ms": "2"}


def run(load: common.Load, ctx: common.RunContext) -> common.RunOutput:
    for key, value in TUNED.items():
        if key not in ctx.settings and f"BENCH_{key.upper()}" not in os.environ:
            ctx.settings[key] = value
    return geneva_bench.run(load, ctx)


if __name__ == "__main__":
    common.runner_main(SYSTEM, run)
