"""Benchmark driver: run every system on every load, N rounds, print the table.

    .venv-bench/bin/python benchmarks/run.py [--rounds N] [--loads light,heavy,timer,timer-paced]
        [--systems floor,dbos] [--preset heroes] [--profile tuned|stock] [--set KEY=VALUE ...]
        [--output FILE] [--json FILE]

``--preset heroes`` is the hero-path comparison of issue 15 in one command: the heavy and
light loads for floor, dbos, geneva (with heroes) and geneva-noheroes (explicit
``--loads`` / ``--systems`` still win).

Systems are discovered, not listed here: every ``benchmarks/*.py`` that assigns a
string to ``SYSTEM`` at top level is one (see common.py's docstring for the runner
interface).  A flask_geneva runner is registered by adding one such module, e.g.
``benchmarks/geneva_runner.py`` with ``SYSTEM = "geneva"``.  Each runner runs in its
own subprocess with the python of its ``VENV`` (default ``.venv-bench``; override
with env ``BENCH_PYTHON_<SYSTEM>``), so the systems never share a process.

Rounds are interleaved (round 1 of every load and system, then round 2, ...) so that
slow drift of the machine hits every system alike; the table shows, per metric, the
median over the successful rounds.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

PROFILES: dict[str, dict[str, str]] = {
    # Latency-tuned pollers on both sides (the default).
    "tuned": {"dramatiq_worker_timeout": "100", "dbos_polling_interval": "0.1"},
    # Each library's out-of-the-box polling: dramatiq worker_timeout 1000 ms (= max
    # idle backoff of the Redis consumer), DBOS queue polling_interval_sec 1.0.
    "stock": {"dramatiq_worker_timeout": "1000", "dbos_polling_interval": "1.0"},
}


#: Named selections of loads and systems (``--preset``); ``--loads``/``--systems`` win.
PRESETS: dict[str, dict[str, str]] = {
    # Issue 15's measure: the hero path against the floor and DBOS, hero-less as a
    # second line, at heavy load (throughput, cost per step) and light (latency).
    "heroes": {"loads": "heavy,light", "systems": "floor,dbos,geneva,geneva-noheroes"},
}


@dataclass
class System:
    name: str
    label: str
    order: int
    venv: str
    path: Path

    @property
    def python(self) -> str:
        override = os.environ.get(f"BENCH_PYTHON_{self.name.upper()}")
        if override:
            return override
        cand = common.REPO_ROOT / self.venv / "bin" / "python"
        return str(cand) if cand.exists() else sys.executable


def discover_systems() -> dict[str, System]:
    found: dict[str, System] = {}
    for path in sorted(common.BENCH_DIR.glob("*.py")):
        if path.name in ("common.py", "run.py"):
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            continue
        consts: dict[str, object] = {}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)
            ):
                consts[node.targets[0].id] = node.value.value
        name = consts.get("SYSTEM")
        if not isinstance(name, str):
            continue
        if name in found:
            raise SystemExit(f"system {name!r} defined twice: {found[name].path} and {path}")
        found[name] = System(
            name=name,
            label=str(consts.get("LABEL", name)),
            order=int(consts.get("ORDER", 100)),  # type: ignore[arg-type]
            venv=str(consts.get("VENV", ".venv-bench")),
            path=path,
        )
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def _ms(v):
    return "-" if v is None else f"{v:.1f}"


def _cost(cost):
    """A round's cost per step, as the per-round lines show it."""
    if not cost:
        return "-"
    return (
        f"cpu {cost['cpu_ms']:.2f} ms, redis {cost['redis_calls']:.2f}, "
        f"pg xacts {cost['pg_xacts']:.2f}"
    )


def same_round_ratios(results, chosen, loads, rounds) -> list[str]:
    """Each system's steps/s over the floor's and DBOS's of the same round and load."""
    lines = []
    for base in ("floor", "dbos"):
        if base not in chosen:
            continue
        for ld in loads:
            by_round = {r.get("round"): r for r in results[(base, ld)] if r.get("ok")}
            for s in chosen:
                if s == base:
                    continue
                ratios = []
                for r in results[(s, ld)]:
                    b = by_round.get(r.get("round"))
                    if r.get("ok") and b and r.get("throughput") and b.get("throughput"):
                        ratios.append(r["throughput"] / b["throughput"])
                if ratios:
                    each = ", ".join(f"{x:.2f}" for x in ratios)
                    lines.append(
                        f"  {s:<16} / {base:<5} {ld:<11} {common.median(ratios):.2f}x"
                        f"  (per round: {each})"
                    )
    return lines


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM/SIGINT (even when started in the background) stop the current runner
    # cleanly: invoke_runner passes SIGTERM on and the runner stops its workers.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    systems = discover_systems()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named selection of loads and systems: "
        + "; ".join(f"{k} = {v['loads']} x {v['systems']}" for k, v in PRESETS.items()),
    )
    ap.add_argument("--loads", help="default: light,heavy,timer,timer-paced")
    ap.add_argument("--systems", help=f"default: all; known: {', '.join(systems)}")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="tuned")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runner setting, overrides the profile (e.g. dbos_worker_concurrency=16)",
    )
    ap.add_argument(
        "--redis",
        choices=["private", "shared"],
        default="private",
        help="private (default): start a throw-away redis-server on a free port for the "
        "whole run; shared: use BENCH_REDIS_URL (default redis://127.0.0.1:6379/13)",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        metavar="S",
        help="before each round wait up to S seconds for the machine to be idle (CPU busy "
        "<= --quiet-cpu %% for 3 s in a row); 0 (default) = don't wait",
    )
    ap.add_argument("--quiet-cpu", type=float, default=20, metavar="PCT")
    ap.add_argument("--output", help="also write the printed report to this file")
    ap.add_argument("--json", help="write every round's raw result to this file")
    args = ap.parse_args(argv)
    preset = PRESETS.get(args.preset or "", {})
    if args.loads is None:
        args.loads = preset.get("loads", "light,heavy,timer,timer-paced")
    if args.systems is None:
        args.systems = preset.get("systems", ",".join(systems))

    loads = [s.strip() for s in args.loads.split(",") if s.strip()]
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    for ld in loads:
        if ld not in common.LOADS:
            ap.error(f"unknown load {ld!r}; known: {', '.join(common.LOADS)}")
    for s in chosen:
        if s not in systems:
            ap.error(f"unknown system {s!r}; known: {', '.join(systems)}")
    chosen.sort(key=lambda s: (systems[s].order, s))
    settings = dict(PROFILES[args.profile])
    settings.update(dict(kv.split("=", 1) for kv in args.set))

    with contextlib.ExitStack() as stack:
        if args.redis == "private":
            os.environ["BENCH_REDIS_URL"] = stack.enter_context(common.private_redis())
        return _run_all(args, systems, chosen, loads, settings)


def _run_all(args, systems, chosen, loads, settings) -> int:
    load_before = os.getloadavg()
    if load_before[0] > 1.0:
        print(
            f"[run] warning: load average is {load_before[0]:.2f} before starting; other "
            "processes on this 2-core machine will skew the figures",
            file=sys.stderr,
        )
    results: dict[tuple[str, str], list[dict]] = {(s, ld): [] for s in chosen for ld in loads}
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_all = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        for ld in loads:
            load = common.LOADS[ld]
            for s in chosen:
                sysm = systems[s]
                print(
                    f"[run] round {rnd}/{args.rounds}  {s:<15} {ld:<11} ...",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                with common.bench_lock(7200, f"{s}/{ld}"):
                    quiet = None
                    if args.quiet_wait > 0:
                        quiet, busy = common.wait_until_quiet(
                            args.quiet_cpu / 100, need_s=3, timeout_s=args.quiet_wait
                        )
                        print(
                            f" [cpu {busy:.0%}{'' if quiet else ', NOT quiet'}]",
                            end="",
                            file=sys.stderr,
                        )
                    else:
                        busy = common.cpu_busy(0.5)
                    foreign0 = common.foreign_cpu_ticks(os.getpid())
                    t0 = time.monotonic()
                    res = common.invoke_runner(
                        sysm.python,
                        sysm.path,
                        load,
                        rnd,
                        settings=settings,
                        env={"BENCH_LOCK_HELD": "1"},
                    )
                wall = time.monotonic() - t0
                foreign = common.foreign_cpu_seconds(
                    foreign0, common.foreign_cpu_ticks(os.getpid())
                )
                res["foreign_cpu_share"] = foreign / wall / (os.cpu_count() or 1)
                res["cpu_busy_before"] = busy
                res["quiet_before"] = quiet
                results[(s, ld)].append(res)
                if res.get("ok"):
                    lat = res.get("latency_ms") or {}
                    late = res.get("lateness_ms") or {}
                    extra = f" late p50 {_ms(late.get('p50'))} ms" if late else ""
                    secs = time.monotonic() - t0
                    print(
                        f" ok in {secs:.0f}s (foreign cpu {res['foreign_cpu_share']:.0%}):"
                        f" {res.get('throughput') or 0:.0f} steps/s,"
                        f" lat p50 {_ms(lat.get('p50'))} p99 {_ms(lat.get('p99'))} ms{extra}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    print(
                        f" FAILED: {res.get('error')} (logs: {res.get('workdir')})",
                        file=sys.stderr,
                        flush=True,
                    )
                    if res.get("traceback"):
                        print(res["traceback"], file=sys.stderr)

    rows = [common.summary_row(s, ld, results[(s, ld)]) for ld in loads for s in chosen]
    report = [
        f"flask_geneva benchmark - {started} - {args.rounds} round(s), median shown - "
        f"profile {args.profile}: {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}; "
        f"redis {args.redis} ({os.environ.get('BENCH_REDIS_URL', common.REDIS_URL)})",
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; total {time.monotonic() - t_all:.0f}s; "
        f"load avg (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after",
        "units: steps/s = 5*N / (last commit - first creation); "
        "lat = previous commit (or creation) -> next step body start, ms; "
        "late = timer due -> body start, ms",
        "",
        common.format_table(rows, baseline="floor" if "floor" in chosen else None),
        "",
        "latency breakdown (ms, median over rounds): first step = creation -> step 1 body; "
        "next steps = previous commit -> body (steps 2..5, timer-waited step excluded); "
        "create s = first to last workflow creation, s",
        common.format_breakdown(results, chosen, loads),
        "",
        "cost per step (median over rounds), from the first start to the last step's "
        "record: cpu ms = the machine's CPU, every process (workers, harness, PostgreSQL, "
        "Redis, anything else); redis calls = Dramatiq's calls to Redis (enqueue, fetch, "
        "ack; idle polls included); pg xacts = PostgreSQL transactions that wrote or "
        "locked a row (benchmarks/README.md)",
        common.format_costs(results, chosen, loads),
        "",
        "same-round throughput ratios (each round's steps/s divided by the baseline's in "
        "that round; median over rounds, then each round): compare within a run",
        *same_round_ratios(results, chosen, loads, args.rounds),
        "",
        "per round (cpu = machine CPU busy just before the round, * = not quiet; foreign = "
        "share of the machine's CPU used during the round by processes other than the "
        "benchmark's and PostgreSQL's, a lower bound):",
    ]
    for ld in loads:
        for s in chosen:
            for r in results[(s, ld)]:
                lat = r.get("latency_ms") or {}
                late = r.get("lateness_ms") or {}
                busy = r.get("cpu_busy_before")
                flag = "*" if r.get("quiet_before") is False else " "
                state = "ok" if r.get("ok") else "FAILED"
                report.append(
                    f"  {s:<15} {ld:<11} r{r.get('round')}  cpu {busy or 0:4.0%}{flag}"
                    f" foreign {r.get('foreign_cpu_share') or 0:4.0%} {state:<6}"
                    f" {r.get('throughput') or 0:7.1f} steps/s  lat p50 {_ms(lat.get('p50')):>7}"
                    f" p99 {_ms(lat.get('p99')):>7}  late p50 {_ms(late.get('p50')):>6}"
                    f" p99 {_ms(late.get('p99')):>6}"
                    f"  cost/step {_cost(r.get('cost_per_step'))}"
                )
    report += ["", "systems:"]
    for s in chosen:
        setts = (
            next((r.get("settings") for r in results[(s, loads[0])] if r.get("settings")), None)
            if loads
            else None
        )
        report.append(
            f"  {s}: {systems[s].label}; {json.dumps(setts, sort_keys=True) if setts else ''}"
        )
    failures = [(k, r) for k, rs in results.items() for r in rs if not r.get("ok")]
    for (s, ld), r in failures:
        report.append(
            f"  FAILED {s}/{ld} round {r.get('round')}: {r.get('error')} (logs: {r.get('workdir')})"
        )
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps([r for rs in results.values() for r in rs], indent=1, default=str)
        )
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"\n[run] interrupted ({e}); the running runner was stopped", file=sys.stderr)
        sys.exit(130)
