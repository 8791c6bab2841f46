"""Where the CPU goes, moment by moment, while the million-quote replay of ``just bench-compare`` runs: one
panel per checkout, side by side.

    python bench/replay_timeline.py before=/path/to/checkout after=. [--quotes 1000000] [--interval 0.5]
        [--out bench/results/replay_timeline]

For each checkout in turn: that checkout's own ``bench/compare_nautilus.py --only rrr --repeats 1`` (fresh
nats-server, PostgreSQL and services, its own code, the same generated quotes), while this script reads the CPU
time (user + system) of every process of the run every ``--interval`` seconds: the replay (with the processes it
starts to check a file in parts, all of whose CPU counts), the four services, nats-server and PostgreSQL (all of
its processes). Time 0 is the replay's start, as in the comparison's own
timing. Writes ``<out>.json`` (the samples, and each run's throughput from the comparison's JSON) and
``<out>.png``: per checkout, the cores each process used over time, stacked, against the machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

_HERE = Path(__file__).resolve().parent.parent
# Process groups, in the order they are stacked, matched on the command line (PostgreSQL by its program).
_GROUPS = (
    ("replay", "rrr-market-data replay"),
    ("market-data", "rrr-market-data"),
    ("strategy", "rrr-strategy"),
    ("execution", "rrr-execution"),
    ("persistence", "rrr-persistence"),
    ("nats-server", "nats-server"),
)
_NAMES = [name for name, _ in _GROUPS] + ["postgres"]
_COLOURS = ["#8c564b", "#bcbd22", "#2ca02c", "#d62728", "#1f77b4", "#9467bd", "#17becf"]


def _group(process: psutil.Process) -> str | None:
    try:
        if process.name() == "postgres":
            return "postgres"
        line = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    found = next((name for name, marker in _GROUPS if marker in line), None)
    if found is None and "multiprocessing" in line:
        # A process the replay started to check a part of the file: the replay's work.
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            return None if parent is None else _group(parent)
    return found


def _cpu(process: psutil.Process) -> tuple[float, float] | None:
    """The process's own CPU time, and that of its children it has waited for."""
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return float(times.user + times.system), float(times.children_user + times.children_system)


def _run(checkout: Path, quotes: int, interval: float) -> dict[str, object]:
    """One comparison run in ``checkout``, sampled; the samples from the replay's start."""
    with tempfile.TemporaryDirectory(prefix="rrr-timeline-") as tmp:
        result = Path(tmp) / "compare.json"
        argv = [str(checkout / ".venv" / "bin" / "python"), "bench/compare_nautilus.py", "--only", "rrr",
                "--repeats", "1", "--quotes", str(quotes), "--out", str(result)]  # fmt: skip
        compare = subprocess.Popen(argv, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        known: dict[int, tuple[str, psutil.Process]] = {}
        last: dict[int, float] = {}
        # The replay's processes checking parts of the file: counted while they run, and what they used after the
        # last sample from the replay's children's times once they end (ended: what was counted of them).
        parts: set[int] = set()
        waited: dict[int, float] = {}
        ended = 0.0
        samples: list[dict[str, float]] = []
        started: float | None = None
        try:
            while compare.poll() is None:
                now = time.monotonic()
                for process in psutil.process_iter():
                    if process.pid not in known and (name := _group(process)) is not None:
                        known[process.pid] = (name, process)
                        if started is not None:
                            last[process.pid] = 0.0  # begun during the run: all of its CPU is the run's
                        with contextlib.suppress(psutil.Error):
                            if name == "replay" and "multiprocessing" in " ".join(process.cmdline()):
                                parts.add(process.pid)
                used = dict.fromkeys(_NAMES, 0.0)
                reads = {pid: _cpu(process) for pid, (_, process) in known.items()}
                for pid, read in reads.items():
                    if read is None:
                        if pid in parts:
                            # Its CPU since the last sample shows in the replay's children once it is waited for.
                            ended += last.get(pid, 0.0)
                        del known[pid]
                for pid, (name, _) in known.items():
                    read = reads[pid]
                    assert read is not None
                    cpu, children = read
                    used[name] += cpu - last.get(pid, cpu)
                    last[pid] = cpu
                    if name == "replay" and pid not in parts:
                        grown = children - waited.get(pid, children)
                        waited[pid] = children
                        used[name] += max(0.0, grown - ended)
                        ended = max(0.0, ended - grown)
                        if started is None:
                            started = now
                if started is not None:
                    samples.append({"t": now - started, **{k: v / interval for k, v in used.items()}})
                time.sleep(max(0.0, interval - (time.monotonic() - now)))
        finally:
            if compare.poll() is None:
                compare.kill()
            compare.wait()
        if compare.returncode != 0:
            raise SystemExit(f"{checkout}: bench/compare_nautilus.py failed ({compare.returncode})")
        rrr = json.loads(result.read_text())["rrr"]
    seconds = float(rrr["run_seconds"][0])
    # Until the comparison's own end: what follows is its check of the stored rows and the servers stopping.
    return {"seconds": seconds, "quotes_per_s": rrr["quotes_per_s"][0],
            "samples": [s for s in samples if s["t"] <= seconds + interval]}  # fmt: skip


def _plot(runs: dict[str, dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = os.cpu_count() or 1
    longest = max(float(run["seconds"]) for run in runs.values())  # type: ignore[arg-type]
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 3.3 * len(runs)), sharex=True, squeeze=False)
    for ax, (label, run) in zip(axes[:, 0], runs.items(), strict=True):
        samples = run["samples"]
        assert isinstance(samples, list)
        t = [s["t"] for s in samples]
        ax.stackplot(t, *[[s[name] for s in samples] for name in _NAMES], labels=_NAMES, colors=_COLOURS, step="pre")
        ax.axhline(cores, color="black", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, cores * 1.15)
        ax.set_ylabel("cores")
        ax.set_title(
            f"{label}: 1,000,000 quotes stored in {float(run['seconds']):.1f} s "  # type: ignore[arg-type]
            f"({float(run['quotes_per_s']):,.0f} quotes/s)",  # type: ignore[arg-type]
            loc="left",
            fontsize=10,
        )
        ax.grid(axis="y", alpha=0.3)
    # Listed top to bottom as stacked.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9,
                      frameon=False)  # fmt: skip
    axes[-1, 0].set_xlim(0, longest)
    axes[-1, 0].set_xlabel(f"seconds from the replay's start (the dashed line: this machine's {cores} cores)")
    fig.suptitle("The million-quote replay of `just bench-compare`: CPU by process over time", x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", metavar="LABEL=PATH", help="checkouts to run, in this order")
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=_HERE / "bench" / "results" / "replay_timeline")
    args = parser.parse_args()
    checkouts: dict[str, Path] = {}
    for item in args.checkouts:
        label, sep, path = item.partition("=")
        if not sep or not label or not (Path(path) / "bench" / "compare_nautilus.py").is_file():
            parser.error(f"expected LABEL=PATH of a checkout with bench/compare_nautilus.py, got {item!r}")
        checkouts[label] = Path(path).resolve()
    runs = {}
    for label, checkout in checkouts.items():
        print(f"{label}: replaying {args.quotes:,} quotes in {checkout} ...", file=sys.stderr)
        runs[label] = _run(checkout, args.quotes, args.interval)
        print(f"{label}: {runs[label]['seconds']:.1f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"interval_s": args.interval, "runs": runs}, indent=1))
    _plot(runs, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
