"""What replication costs: `just load` on one nats-server, on a cluster of three (R3), and on three with
`--sync always`, side by side, with the bare transport measured in the same session.

    python bench/replication.py [--rates 5000,15000] [--repeats 3] [--duration 20] [--transport-messages 100000]

For each round and each setting (their order rotated from round to round, so that none always runs first or
last), a fresh system in a temporary run directory: `rrr-stack up none [--cluster 3] [--sync always]
--no-supervise`, then `bench/load.py --rate R --symbols 100 --duration S` for each rate, then `rrr-stack reset`.
Then `bench/transport.py` once per setting (`--repeats` repeats inside it). Printed: per setting and rate the
median over the rounds of quote -> order and quote -> row p50 / p99, whether every run held, and the CPU of
nats-server (all nodes) per quote; the transport's medians. Every run's JSON stays under `--out-dir`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    up_flags: tuple[str, ...]
    transport_flags: tuple[str, ...]


SETTINGS = (
    Setting("1 node", (), ()),
    Setting("3 nodes, R3", ("--cluster", "3"), ("--cluster", "3")),
    Setting("3 nodes, R3, sync always", ("--cluster", "3", "--sync", "always"), ("--cluster", "3", "--sync", "always")),
)


@dataclass(slots=True)
class Runs:
    """The load runs of one setting at one rate, a round each."""

    results: list[dict[str, Any]] = field(default_factory=list)


def _stack(run_dir: Path, *argv: str) -> None:
    done = subprocess.run(
        [str(BIN / "rrr-stack"), "--run-dir", str(run_dir), *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"rrr-stack {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")


def _load(run_dir: Path, out_dir: Path, rate: int, duration_s: float) -> dict[str, Any]:
    before = set(out_dir.glob("*.json"))
    argv = [
        *(str(BIN / "rrr-stack"), "--run-dir", str(run_dir), "exec", sys.executable, str(ROOT / "bench" / "load.py")),
        *("--rate", str(rate), "--symbols", "100", "--duration", str(duration_s), "--no-progress"),
        *("--run-dir", str(run_dir), "--out-dir", str(out_dir)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"load failed:\n{done.stdout}\n{done.stderr}")
    [path] = set(out_dir.glob("*.json")) - before
    run: dict[str, Any] = json.loads(path.read_text())["runs"][-1]
    return run


def _nats_cpu_us_per_quote(run: dict[str, Any]) -> float:
    cpu = sum(r["cpu_percent"] for name, r in run["resources"].items() if name.startswith("nats-server"))
    return cpu / 100 / run["rate"] * 1e6


def _transport(setting: Setting, messages: int, repeats: int) -> str:
    argv = [
        sys.executable,
        str(ROOT / "bench" / "transport.py"),
        "--messages",
        str(messages),
        "--repeats",
        str(repeats),
    ]
    done = subprocess.run([*argv, *setting.transport_flags], capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip()


def _ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def main() -> int:
    """Run every setting, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="5000,15000", help="quotes/s, comma-separated [5000,15000]")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every setting [3]")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per run [20]")
    parser.add_argument("--transport-messages", type=int, default=100_000)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results" / "replication")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    runs: dict[tuple[str, int], Runs] = {(s.name, r): Runs() for s in SETTINGS for r in rates}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores; {args.repeats} rounds; rates {rates}; {args.duration:g} s per run", flush=True)
    for round_ in range(args.repeats):
        order = SETTINGS[round_ % len(SETTINGS) :] + SETTINGS[: round_ % len(SETTINGS)]
        for setting in order:
            with tempfile.TemporaryDirectory(prefix="rrr-replication-") as tmp:
                run_dir = Path(tmp) / "run"
                _stack(run_dir, "up", "none", "--no-supervise", *setting.up_flags)
                try:
                    for rate in rates:
                        run = _load(run_dir, args.out_dir, rate, args.duration)
                        runs[(setting.name, rate)].results.append(run)
                        print(
                            f"round {round_ + 1} {setting.name} {rate}/s: order p50 "
                            f"{_ms(run['order_latency_us'].get('p50', 0))} ms p99 "
                            f"{_ms(run['order_latency_us'].get('p99', 0))} ms, row p50 "
                            f"{_ms(run['store_latency_us'].get('p50', 0))} ms p99 "
                            f"{_ms(run['store_latency_us'].get('p99', 0))} ms, held {run['held']}, "
                            f"nats {_nats_cpu_us_per_quote(run):.1f} us/quote",
                            flush=True,
                        )
                finally:
                    _stack(run_dir, "reset", "--yes")
    print("\n| setting | rate | quote -> order p50 / p99 | quote -> row p50 / p99 | held | nats-server CPU per quote |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, rate), measured in runs.items():

        def med(key: str, pct: str, results: list[dict[str, Any]] = measured.results) -> str:
            return _ms(statistics.median(r[key].get(pct, 0) for r in results))

        held = sum(1 for r in measured.results if r["held"])
        cpu = statistics.median(_nats_cpu_us_per_quote(r) for r in measured.results)
        print(
            f"| {name} | {rate:,}/s | {med('order_latency_us', 'p50')} / {med('order_latency_us', 'p99')} ms "
            f"| {med('store_latency_us', 'p50')} / {med('store_latency_us', 'p99')} ms "
            f"| {held} of {len(measured.results)} | {cpu:.1f} us |"
        )
    print()
    for setting in SETTINGS:
        print(_transport(setting, args.transport_messages, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
