"""What the lockstep of a closed-loop strategy with execution costs, against the same day sent and forgotten.

    python bench/lockstep.py [--repeats 3] [--file tests/data/eurusd_quotes_2020-01-01.csv]

For each way and repeat: a fresh nats-server (JetStream, file storage, no users), execution and the strategy
started as processes (``rrr-execution``, ``rrr-strategy``, as ``just up`` runs them), the file replayed from this
process (the replay's own code), and the clock stopped once the order events the backtest of the same strategy
says the day makes (``rrr.deploy.backtest``, one process) have all been published: the whole day traded, in
lockstep where it applies. The ways, each with the replay's batches (``--replay-window 512``, up to 512 quotes a
message) and with one quote a message (window 1):

- ``sma_cross``: market orders, sent and forgotten: never waits;
- ``FollowsFills`` (tests/support/strategies.py): closed-loop with market orders: one marker and one round trip
  per order;
- ``RestsLimits``: closed-loop with an order resting nearly all day: a marker and a round trip to execution before
  every quote, and one more after each quote it sends orders, cancels or replaces at.

Reported per way, the median of ``--repeats``: quotes/s end to end (the day's quotes over the time from the
replay's start to the last event), the strategy's waits and their mean (its heartbeat's ``order_outcome_waits``
and ``order_outcome_wait_ms``: the round trip strategy -> JetStream -> execution -> JetStream -> strategy, with
execution's matching in it), markers published and execution's progress events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
from nats.aio.msg import Msg

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # the test strategies are a user's module

from rrr.deploy import backtest  # noqa: E402 - after the path above
from rrr.deploy.nats_server import NatsServer  # noqa: E402
from rrr.deploy.processes import ManagedProcess, service_command  # noqa: E402
from rrr.market_data.feeds import replay_file  # noqa: E402
from rrr.shared.bus import Bus, payloads  # noqa: E402
from rrr.shared.config import ServiceConfig  # noqa: E402
from rrr.shared.messages import Heartbeat, OrderUpdate, any_decoder, heartbeat_decoder  # noqa: E402
from rrr.strategy import loading  # noqa: E402

EURUSD = ROOT / "tests" / "data" / "eurusd_quotes_2020-01-01.csv"
RESTS = {"qty": "1", "tick": "0.00001", "below": 2, "chase": 3, "take": 5, "stop": 5, "max_age": 30}
WAYS: dict[str, tuple[str, dict[str, object]]] = {
    "sma_cross (send and forget)": ("sma_cross", {}),
    "FollowsFills (closed-loop, market)": ("tests.support.strategies:FollowsFills", {"every": 25}),
    "RestsLimits (lockstep, resting)": ("tests.support.strategies:RestsLimits", RESTS),
}


@dataclass(frozen=True, slots=True)
class Run:
    """One run of one way."""

    seconds: float
    quotes: int
    waits: int
    waited_ms: int
    markers: int
    progress: int


class _Watch:
    """Order events and heartbeats as they are published (core NATS sees what JetStream stores)."""

    def __init__(self) -> None:
        self.events: set[str] = set()
        self.progress = 0
        self.beats: dict[str, Heartbeat] = {}
        self.changed = asyncio.Event()

    async def on_event(self, msg: Msg) -> None:
        for data in payloads(msg):
            event = any_decoder.decode(data)
            if isinstance(event, OrderUpdate):
                self.events.add(event.id)
            else:
                self.progress += 1
        self.changed.set()

    async def on_beat(self, msg: Msg) -> None:
        beat = heartbeat_decoder.decode(msg.data)
        self.beats[beat.service] = beat
        self.changed.set()

    async def until(self, predicate: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


@contextlib.asynccontextmanager
async def _services(url: str, workdir: Path, strategy: str, params: dict[str, object]) -> AsyncIterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")} | {
        "RRR_NATS_URL": url, "RRR_SHARDS": "1", "RRR_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
        "RRR_STRATEGY_HEARTBEAT_MS": "100", "RRR_EXECUTION_HEARTBEAT_MS": "100",
        "RRR_STRATEGY_STRATEGY": strategy, "RRR_STRATEGY_PARAMS": msgspec.json.encode(params).decode(),
        "RRR_STRATEGY_STRATEGY_ID": "bench",
    }  # fmt: skip
    processes = [
        ManagedProcess(name, [*service_command(name), "--shard", "0"], log_file=workdir / f"{name}.log", env=env,
                       detached=False)
        for name in ("execution", "strategy")
    ]  # fmt: skip
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in processes:
            process.kill()


async def _once(path: Path, strategy: str, params: dict[str, object], window: int, expected: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="rrr-lockstep-") as tmp, NatsServer(data_dir=Path(tmp) / "nats") as server:
        watch = _Watch()
        nc = await nats.connect(server.url)
        bus = await Bus.connect(server.url, service="bench", name="bench-replay")
        try:
            await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s)
            await nc.subscribe("evt.order.>", cb=watch.on_event)
            await nc.subscribe("ctl.heartbeat.>", cb=watch.on_beat)
            async with _services(server.url, Path(tmp), strategy, params):
                await watch.until(
                    lambda: {"execution", "strategy"} <= {s for s, b in watch.beats.items() if b.status == "ok"},
                    60,
                    "the services to be up",
                )
                started = time.monotonic()
                report = await replay_file(bus, path, shards=1, window=window, skip_bad_rows=False)
                await watch.until(lambda: len(watch.events) >= expected, 600, f"{expected} order events")
                seconds = time.monotonic() - started
                # The next heartbeat says what the strategy waited.
                beat = watch.beats["strategy"]
                await watch.until(lambda: watch.beats["strategy"].ts_init > beat.ts_init, 10, "a heartbeat")
                counters = watch.beats["strategy"].counters
                progress = watch.progress
        finally:
            await bus.close()
            await nc.close()
    return Run(
        seconds=seconds,
        quotes=report.published,
        waits=counters.get("order_outcome_waits", 0),
        waited_ms=counters.get("order_outcome_wait_ms", 0),
        markers=counters.get("lockstep_markers", 0),
        progress=progress,
    )


async def _main(path: Path, repeats: int, windows: Sequence[int]) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{path.name}; Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load}; median of {repeats}")
    for name, (strategy, params) in WAYS.items():
        expected = len(backtest.run([path], [loading.spec("bench", strategy, params)]).events)
        for window in windows:
            runs = []
            for _ in range(repeats):
                runs.append(await _once(path, strategy, params, window, expected))
                print(f"  {name} window {window}: {runs[-1]}", file=sys.stderr)
            seconds = statistics.median(r.seconds for r in runs)
            quotes = runs[0].quotes
            waits = statistics.median(r.waits for r in runs)
            per_wait = statistics.median(r.waited_ms / r.waits if r.waits else 0.0 for r in runs)
            print(
                f"  {name:<36} window {window:>3}: {quotes / seconds:8,.0f} quotes/s ({seconds:.2f} s "
                f"[{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}]), {expected} order "
                f"events, {waits:,.0f} waits of {per_wait:.2f} ms, {runs[0].markers:,} markers, "
                f"{runs[0].progress:,} progress events"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every way and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=EURUSD, help="a one-symbol quote file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", default="512,1", help="replay windows, comma-separated")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.file, args.repeats, [int(w) for w in args.windows.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
