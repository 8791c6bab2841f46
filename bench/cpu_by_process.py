"""CPU time per quote and per order of every process of the system, two checkouts side by side, alternating.

    python bench/cpu_by_process.py before=/path/to/checkout after=. [--rounds 3] [--rate 10000]
        [--symbols 100] [--duration 20] [--tick-us 200]

For each round and each checkout in turn (A B A B ...): ``just reset --yes`` and ``just up none`` in that
checkout (its own run directory, its own code), then this checkout's load harness against it (the same
generator and the same measurement on both sides: ``bench/load.py`` with ``RRR_RUN_DIR`` set to the other
checkout's), then ``just down``. The harness reads every process's CPU time (user + system, PostgreSQL with
all of its children) from the start of the load to the end of its drain; divided by the quotes published and
by the orders stored, it gives microseconds of CPU per quote and per order, median over the rounds.

Process CPU time, not wall time or a share of a core: a test suite running beside it on the same cores slows
the run, but charges its CPU to its own processes, so the figures stay comparable under contention (what
contention still moves, such as cache misses and more, smaller batches, shows as spread between rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent
# What the table shows, in this order; the rest of the run directory's processes (the dashboard, the
# collector, the supervisor) are summed as "other".
_SHOWN = ("market_data-0", "strategy-0", "execution-0", "persistence-0", "nats-server", "postgres")


def _just(checkout: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(["just", *args], cwd=checkout, check=True, env=env, stdout=subprocess.DEVNULL)


def _one(checkout: Path, rate: float, symbols: int, duration: float, tick_us: float) -> dict[str, object]:
    _just(checkout, "reset", "--yes")
    _just(checkout, "up", "none")
    try:
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "RRR_RUN_DIR": str(checkout / ".run")}
            _just(_HERE, "load", "--rate", str(rate), "--symbols", str(symbols), "--duration", str(duration),
                  "--tick-us", str(tick_us), "--no-progress", "--out-dir", out, env=env)  # fmt: skip
            [report] = Path(out).glob("load-*.json")
            run: dict[str, object] = json.loads(report.read_text())["runs"][0]
            return run
    finally:
        _just(checkout, "down")


def _per_unit(run: dict[str, object]) -> dict[str, tuple[float, float]]:
    """us of CPU per quote and per order of each process of one run."""
    resources = run["resources"]
    assert isinstance(resources, dict)
    quotes, orders = run["published"], run["orders_stored"]
    assert isinstance(quotes, int)
    assert isinstance(orders, int)
    cpu = {name: float(figures["cpu_s"]) for name, figures in resources.items()}
    rows = {name: cpu.pop(name, 0.0) for name in _SHOWN}
    rows["other"] = sum(cpu.values())
    rows["all"] = sum(rows.values())
    return {name: (seconds * 1e6 / quotes, seconds * 1e6 / orders) for name, seconds in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", help="LABEL=PATH of each checkout, in the order they alternate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument(
        "--tick-us", type=float, default=200, help="the load generator's tick: quotes due within one go in one batch"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_by_process.json"))
    args = parser.parse_args()
    checkouts = {label: Path(path).resolve() for label, _, path in (c.partition("=") for c in args.checkouts)}
    runs: dict[str, list[dict[str, object]]] = {label: [] for label in checkouts}
    for round_ in range(1, args.rounds + 1):
        for label, checkout in checkouts.items():
            print(f"round {round_}: {label} ({checkout})", file=sys.stderr, flush=True)
            run = _one(checkout, args.rate, args.symbols, args.duration, args.tick_us)
            runs[label].append(run)
            print(f"  {run['published']:,} quotes, {run['orders_stored']:,} orders, held {run.get('held')}",
                  file=sys.stderr, flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=2))
    per = {label: [_per_unit(run) for run in label_runs] for label, label_runs in runs.items()}
    labels = list(checkouts)
    messages = statistics.median(int(str(run["messages"])) for label_runs in runs.values() for run in label_runs)
    print(f"us of CPU per quote / per order, median of {args.rounds} ({args.rate:,.0f} quotes/s, {args.symbols} "
          f"symbols, {args.duration:g} s, tick {args.tick_us:g} us: {messages:,.0f} quote messages a run)")  # fmt: skip
    print("| process | " + " | ".join(f"{label} per quote | {label} per order" for label in labels) + " |")
    print("| --- |" + " --- | --- |" * len(labels))
    for name in (*_SHOWN, "other", "all"):
        cells = []
        for label in labels:
            quote = statistics.median(p[name][0] for p in per[label])
            order = statistics.median(p[name][1] for p in per[label])
            cells.append(f"{quote:.1f} | {order:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label in labels:
        orders = [run["orders_stored"] for run in runs[label]]
        print(f"{label}: orders per run {orders}; quotes per run {[run['published'] for run in runs[label]]}")


if __name__ == "__main__":
    main()
