"""Load harness: drive the running system with an open-loop quote generator and measure it.

Method
------
- Quotes for ``--symbols`` symbols are made at a fixed ``--rate`` for ``--duration`` seconds and published in
  batches per shard (``md.quotes.<shard>.load``) the way the market-data feeds publish them
  (``rrr.shared.bus.QuoteBatcher``: a batch goes out when the one before it is acknowledged by the stream,
  with every quote made meanwhile, so the batches grow with the system's load). The generator runs on a
  thread, event loop and connection of its own and sleeps the thread until the next quote is due, but
  wakes at most every ``--tick-us`` (200) to make the quotes that came due (``--single`` sends one message
  per quote on ``md.quote.<shard>.<symbol>`` on core NATS instead). An event loop's own timers would wake
  up to a millisecond late, which every latency would count. Open loop: the
  n-th quote is due at ``start + n / rate`` whatever the system does, and every latency is counted from
  that intended time, so a stalled system cannot hide its stall (coordinated omission corrected).
- Quote -> order accepted: the harness listens to ``evt.order.>``; an ``OrderAccepted`` names the quote
  that triggered it (client order id ``sma_cross-<quote id>``), so its latency is its arrival time minus
  the quote's intended time.
- Quote -> row in PostgreSQL: after the run, each stored quote's ``stored_at`` (the start of the
  transaction that wrote it; the commit follows within that batch's write) minus its intended time.
- Loss: quotes published against quotes stored, exactly, after a drain of at most ``--drain-s``.
  Signals, orders and fills of the run are counted in PostgreSQL too; the orders the strategy sent (seen on
  ``cmd.order.>``) must all be answered by execution and stored within the drain.
- Resources: CPU (share of one core) and peak RSS of every service, nats-server and PostgreSQL (all of
  its processes), sampled every 0.5 s with psutil.
- Histograms: HDR (1 us .. 1 h, 3 significant digits); p50, p90, p99, p99.9, max.

Each run writes ``<out-dir>/load-<time>.json`` and ``.png`` (latency percentiles and throughput over
time) and prints a table. ``--find-max`` steps the rate up and reports the highest that held for the whole
duration: every quote stored, every order answered and stored, no lag of a second or more (the largest
quote -> row and quote -> order latencies both under 1 s), and the generator keeping up with the rate.

Run it with the system up without the simulator: ``just up none`` then ``just load --rate 5000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import psutil
from hdrh.histogram import HdrHistogram
from nats.aio.client import DEFAULT_INBOX_PREFIX, Client
from nats.aio.msg import Msg
from opentelemetry import trace
from tqdm import tqdm

from rrr.shared import subjects
from rrr.shared.bus import Publisher, QuoteBatcher, inbox_prefix, payloads, url_user
from rrr.shared.limits import DEFAULT_MAX_MSG_BYTES
from rrr.shared.messages import (
    OrderAccepted,
    OrderRejected,
    QuoteRow,
    SubmitOrder,
    encode,
    order_command_decoder,
    order_event_decoder,
)

_MAX_US = 3_600_000_000  # 1 h
# Turns of the generator's event loop after each wake-up: enough to read an acknowledgement that came, hand it to
# the batcher and send the next batch before the thread sleeps again.
_TURNS = 4
# The hops of quote -> order accepted: the generator's own lateness (a quote's intended time to its batch's
# ts_init, stamped when it was sent), the batch to the strategy's decision, the decision to execution's
# acceptance, the acceptance to its arrival at the harness.
_HOPS = ("generator (due -> sent)", "sent -> strategy", "strategy -> execution", "execution -> harness")


@dataclass(slots=True)
class RunResult:
    """Everything one load run measured."""

    rate: float
    symbols: int
    duration_s: float
    # The generator woke at most this often (--tick-us) to make the quotes that came due.
    tick_us: float = 200.0
    published: int = 0
    # Messages the quotes went out in (batches, or one per quote with --single).
    messages: int = 0
    # Quotes of batches the market-data stream refused or did not acknowledge in time (the loss says whether
    # they were stored).
    quotes_unacknowledged: int = 0
    publish_seconds: float = 0.0
    achieved_rate: float = 0.0
    stored: int = 0
    lost: int = 0
    signals: int = 0
    # Orders the strategy sent for the run's quotes, and those execution answered (accepted or rejected) in
    # time to be seen: an order not answered by the end of the drain is a lag of more than the run itself.
    orders_sent: int = 0
    orders_accepted_seen: int = 0
    orders_rejected_seen: int = 0
    orders_stored: int = 0
    fills_stored: int = 0
    drain_seconds: float = 0.0
    order_latency_us: dict[str, float] = field(default_factory=dict)
    store_latency_us: dict[str, float] = field(default_factory=dict)
    # Quote -> order accepted, hop by hop (see _HOPS).
    hops_us: dict[str, dict[str, float]] = field(default_factory=dict)
    published_per_s: list[int] = field(default_factory=list)
    stored_per_s: list[int] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        """Every quote stored, no lag of 1 s or more (quote -> row, quote -> order), generator on rate."""
        return not self.missed

    @property
    def missed(self) -> list[str]:
        """Why the rate did not hold, one reason per criterion it failed (empty when it held)."""
        reasons = []
        if self.lost:
            reasons.append(f"{self.lost:,} quotes not stored within the drain")
        store_max = self.store_latency_us.get("max", float("inf"))
        if store_max >= 1_000_000:
            reasons.append(f"quote -> row reached {_human(store_max)} (limit 1 s)")
        if self.order_latency_us.get("max", 0) >= 1_000_000:
            reasons.append(f"quote -> order reached {_human(self.order_latency_us['max'])} (limit 1 s)")
        unanswered = self.orders_sent - self.orders_accepted_seen - self.orders_rejected_seen
        if unanswered > 0:
            reasons.append(f"{unanswered:,} of {self.orders_sent:,} orders not answered by execution within the drain")
        if self.orders_stored < self.orders_accepted_seen + self.orders_rejected_seen:
            missing = self.orders_accepted_seen + self.orders_rejected_seen - self.orders_stored
            reasons.append(f"{missing:,} answered orders not stored within the drain")
        if self.achieved_rate < 0.99 * self.rate:
            reasons.append(f"the generator reached {self.achieved_rate:,.0f}/s of {self.rate:,.0f}/s")
        return reasons


def _percentiles(hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return {}
    return {
        "count": float(hist.get_total_count()),
        "p50": float(hist.get_value_at_percentile(50)),
        "p90": float(hist.get_value_at_percentile(90)),
        "p99": float(hist.get_value_at_percentile(99)),
        "p99.9": float(hist.get_value_at_percentile(99.9)),
        "max": float(hist.get_max_value()),
    }


class _Resources:
    """Samples CPU and RSS of the system's processes every 0.5 s."""

    def __init__(self, run_dir: Path) -> None:
        self.procs: dict[str, psutil.Process] = {}
        pid_files = {p.stem: p for p in (run_dir / "pids").glob("*.pid")}
        pid_files["nats-server"] = run_dir / "nats" / "nats.pid"
        # The nodes of a cluster (`just up --cluster 3`), each counted on its own.
        pid_files |= {
            f"nats-server-{p.parent.name.removeprefix('node')}": p for p in (run_dir / "nats").glob("node*/nats.pid")
        }
        pid_files["postgres"] = run_dir / "postgres" / "postgres.pid"
        for name, pid_file in pid_files.items():
            try:
                self.procs[name] = psutil.Process(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, psutil.Error):
                continue
        self.peak_rss: Counter[str] = Counter()
        self.rss_timeline: dict[str, list[float]] = {name: [] for name in self.procs}
        self._last_timeline = 0.0
        self.cpu_start: dict[str, float] = {}
        self.started = time.monotonic()

    def _family(self, name: str) -> list[psutil.Process]:
        proc = self.procs[name]
        # PostgreSQL works in child processes (one per connection, plus its writers).
        try:
            return [proc, *proc.children(recursive=True)] if name == "postgres" else [proc]
        except psutil.Error:
            return []  # gone: the system was taken down under the run, which ends saying so

    def _cpu(self, name: str) -> float:
        total = 0.0
        for p in self._family(name):
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def start(self) -> None:
        self.started = time.monotonic()
        self.cpu_start = {name: self._cpu(name) for name in self.procs}

    def sample(self) -> None:
        # RSS of each process every 0.5 s for the peak, and every 10 s for the timeline (is it flat?).
        now = time.monotonic()
        timeline = now - self._last_timeline >= 10
        for name in self.procs:
            rss = 0
            for p in self._family(name):
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss[name] = max(self.peak_rss[name], rss)
            if timeline:
                self.rss_timeline[name].append(round(rss / 1e6, 1))
        if timeline:
            self._last_timeline = now

    def result(self) -> dict[str, dict[str, Any]]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            name: {
                "cpu_percent": round(100 * (self._cpu(name) - self.cpu_start.get(name, 0.0)) / elapsed, 1),
                # Process CPU time over the run and its drain: what it cost, whatever else ran on the machine.
                "cpu_s": round(self._cpu(name) - self.cpu_start.get(name, 0.0), 3),
                "peak_rss_mb": round(self.peak_rss[name] / 1e6, 1),
                "rss_mb_every_10s": self.rss_timeline[name],
            }
            for name in sorted(self.procs)
        }


async def run_load(
    nats_url: str,
    listen_url: str,
    database_url: str,
    run_dir: Path,
    *,
    rate: float,
    symbols: int,
    duration_s: float,
    shards: int,
    drain_s: float,
    progress: bool,
    single: bool = False,
    tick_s: float = 0.0002,
) -> RunResult:
    """One open-loop run at ``rate`` quotes/s over ``symbols`` symbols for ``duration_s`` seconds."""
    result = RunResult(rate=rate, symbols=symbols, duration_s=duration_s, tick_us=tick_s * 1e6)
    run_id = f"load{time.time_ns() // 1_000_000}"
    names = [f"LD{i:05d}" for i in range(symbols)]
    subject_of = {s: subjects.quote(s, shards) for s in names}
    rng = random.Random(7)
    mids = dict.fromkeys(names, 10_000)  # in ticks of 0.0001
    total = int(rate * duration_s)
    interval_ns = 1e9 / rate

    order_hist = HdrHistogram(1, _MAX_US, 3)
    # Two NATS users, as `just up` gives them: the replay's publishes quotes, the tap's listens to orders.
    # Each URL setting may name several servers (a cluster, `just up --cluster 3`), comma-separated.
    listener = await _connect(listen_url)
    prefix = f"sma_cross-{run_id}:"
    clock = {"start_ns": 0}  # set by the generator before its first quote: every intended time counts from it

    async def _on_event(msg: Msg) -> None:
        arrived = time.time_ns()
        try:
            events = [order_event_decoder.decode(data) for data in payloads(msg)]  # one, or an envelope's
        except Exception:
            return
        for event in events:
            if isinstance(event, OrderRejected) and event.client_order_id.startswith(prefix):
                result.orders_rejected_seen += 1
            if isinstance(event, OrderAccepted) and event.client_order_id.startswith(prefix):
                n = int(event.client_order_id[len(prefix) :])
                intended = clock["start_ns"] + n * interval_ns
                order_hist.record_value(max(int((arrived - intended) / 1000), 1))
                result.orders_accepted_seen += 1
                accepted[n] = (event.ts_init, arrived)

    # Per order seen: when execution accepted it (its ts_init) and when it arrived here, by quote number.
    accepted: dict[int, tuple[int, int]] = {}

    async def _on_command(msg: Msg) -> None:
        try:
            commands = [order_command_decoder.decode(data) for data in payloads(msg)]
        except Exception:
            return
        result.orders_sent += sum(1 for c in commands if isinstance(c, SubmitOrder) and c.id.startswith(prefix))

    await listener.subscribe("evt.order.>", cb=_on_event)
    await listener.subscribe("cmd.order.>", cb=_on_command)
    await listener.flush()
    resources = _Resources(run_dir)
    resources.start()
    published_per_s: Counter[int] = Counter()
    bar = tqdm(total=total, unit="quote", desc=f"{rate:,.0f}/s", disable=not progress, file=sys.stderr)
    sent = batches = 0

    async def _generate() -> None:
        # On a thread and an event loop of its own, with a connection of its own: the listener's callbacks never
        # delay a quote, and the pacing sleeps the thread for the exact time left (an event loop's timers wake
        # up to a millisecond late, which every latency from the intended time would count).
        nonlocal sent, batches
        nc = await _connect(nats_url, acknowledged=True)
        # As a feed publishes: each batch acknowledged by the market-data stream before the next goes out.
        batcher = QuoteBatcher(
            Publisher(nc, service="load", tracer=trace.get_tracer("rrr.load"), trace_roots=False), "load", shards,
            batch_id_prefix=f"{run_id}:b", max_bytes=DEFAULT_MAX_MSG_BYTES,
        )  # fmt: skip
        try:
            start_ns = clock["start_ns"] = time.time_ns()
            start = time.monotonic()
            while sent < total:
                now = time.monotonic()
                # The next wake-up: when the next quote is due, but not sooner than a tick after this one.
                wake = now + tick_s
                due = min(int((now - start) * rate) + 1, total)
                burst = due - sent
                for n in range(sent, due):
                    symbol = names[n % symbols]
                    mid = mids[symbol] = max(mids[symbol] + rng.choice((-1, 0, 1)), 100)
                    intended = start_ns + int(n * interval_ns)
                    row = QuoteRow(f"{run_id}:{n}", symbol, intended, mid - 1, mid + 1, 4)
                    if single:
                        await nc.publish(subject_of[symbol], encode(row.to_quote(intended)))
                    else:
                        batcher.add(row)
                # A few turns of this thread's loop: acknowledgements that came are read and handed on, and the
                # batcher sends what waits once the last batch is acknowledged.
                for _ in range(_TURNS):
                    await asyncio.sleep(0)
                sent = due
                published_per_s[int(now - start)] += burst
                bar.update(burst)
                # Written to the socket before the thread sleeps: the client's flusher has written what was
                # published (nats-py 2.x; ``flush`` would wait for a round trip to the server as well). Not while
                # the client reconnects (what is published waits in its buffer), nor once it gave up.
                if nc.is_closed:
                    raise nats.errors.ConnectionClosedError
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(nc._flush_pending(force_flush=True), timeout=1.0)
                # Pacing of an open loop: sleep until the next quote is due, waking at most every tick_s (a late
                # wake-up is caught up above). Blocking: this thread's loop has nothing else to do.
                delay = max(start + sent / rate, wake) - time.monotonic()
                if delay > 0 and sent < total:
                    time.sleep(delay)  # noqa: ASYNC251
            await batcher.close()
            result.publish_seconds = time.monotonic() - start
            batches = batcher.counters.batches
            result.quotes_unacknowledged = batcher.counters.dropped + batcher.counters.unconfirmed
        finally:
            await nc.close()

    async def _sample(done: asyncio.Event) -> None:
        while not done.is_set():
            resources.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)  # a sampling period, ended early by the run's end

    generated = asyncio.Event()
    sampler = asyncio.create_task(_sample(generated))
    try:
        await asyncio.to_thread(asyncio.run, _generate())
    finally:
        generated.set()
        await sampler
    start_ns = clock["start_ns"]
    bar.close()
    result.published = sent
    result.messages = batches if not single else sent
    result.achieved_rate = sent / result.publish_seconds

    # Drain: wait until every quote is stored and every order sent is answered and stored, or the deadline passes.
    conn = await asyncpg.connect(database_url)
    try:
        drain_start = time.monotonic()
        pattern = f"{run_id}:%"
        while True:
            resources.sample()
            stored = await conn.fetchval("SELECT count(*) FROM quotes WHERE id LIKE $1", pattern)
            answered = result.orders_accepted_seen + result.orders_rejected_seen
            orders = await conn.fetchval("SELECT count(*) FROM orders WHERE client_order_id LIKE $1", f"{prefix}%")
            done = stored >= sent and answered >= result.orders_sent and orders >= answered
            if done or time.monotonic() - drain_start > drain_s:
                break
            await asyncio.sleep(0.25)  # polling the database, bounded by the drain deadline
        result.drain_seconds = time.monotonic() - drain_start
        result.resources = resources.result()
        store_hist = HdrHistogram(1, _MAX_US, 3)
        stored_per_s: Counter[int] = Counter()
        rows = await conn.fetch(
            "SELECT split_part(id, ':', 2)::bigint AS n, ts_init, "
            "(extract(epoch from stored_at) * 1000000)::bigint AS us FROM quotes WHERE id LIKE $1",
            pattern,
        )
        sent_at = {int(row["n"]): int(row["ts_init"]) for row in rows}
        for row in rows:
            intended_us = (start_ns + row["n"] * interval_ns) / 1000
            store_hist.record_value(max(int(row["us"] - intended_us), 1))
            stored_per_s[int((row["us"] * 1000 - start_ns) / 1e9)] += 1
        result.stored = len(rows)
        result.lost = sent - len(rows)
        quote_ids = pattern
        result.signals = await conn.fetchval("SELECT count(*) FROM signals WHERE quote_id LIKE $1", quote_ids)
        # Hop by hop, from the times each process stamped: the strategy's signal (ts_init, the same moment
        # as its order) and execution's acceptance. One clock: every process runs on this machine.
        decided = {
            int(r["n"]): int(r["ts_init"])
            for r in await conn.fetch(
                "SELECT split_part(quote_id, ':', 2)::bigint AS n, ts_init FROM signals WHERE quote_id LIKE $1",
                quote_ids,
            )
        }
        hops = {name: HdrHistogram(1, _MAX_US, 3) for name in _HOPS}
        for n, (accepted_ns, arrived_ns) in accepted.items():
            strategy_ns, batch_ns = decided.get(n), sent_at.get(n)
            if strategy_ns is None or batch_ns is None:
                continue
            intended_ns = start_ns + n * interval_ns
            steps = (
                batch_ns - intended_ns,
                strategy_ns - batch_ns,
                accepted_ns - strategy_ns,
                arrived_ns - accepted_ns,
            )
            for name, value in zip(_HOPS, steps, strict=True):
                hops[name].record_value(max(int(value / 1000), 1))
        result.hops_us = {name: _percentiles(hist) for name, hist in hops.items()}
        result.orders_stored = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE client_order_id LIKE $1", f"{prefix}%"
        )
        result.fills_stored = await conn.fetchval(
            "SELECT count(*) FROM fills WHERE client_order_id LIKE $1", f"{prefix}%"
        )
    finally:
        await conn.close()
        await listener.close()
    result.order_latency_us = _percentiles(order_hist)
    result.store_latency_us = _percentiles(store_hist)
    # Whole seconds only: a last, partial second would read as a drop in throughput.
    seconds = max(int(result.publish_seconds), 1)
    result.published_per_s = [published_per_s[i] for i in range(seconds)]
    horizon = max(max(stored_per_s.keys(), default=0), seconds)
    result.stored_per_s = [stored_per_s[i] for i in range(horizon)]
    return result


def _fmt_us(values: dict[str, float]) -> str:
    if not values:
        return "n/a"
    return " ".join(f"{k}={_human(v)}" for k, v in values.items() if k != "count")


def _human(us: float) -> str:
    return f"{us:.0f}us" if us < 1000 else f"{us / 1000:.1f}ms" if us < 1_000_000 else f"{us / 1e6:.2f}s"


def print_table(result: RunResult) -> None:
    """The run's figures, one per line."""
    print(f"rate target {result.rate:,.0f}/s over {result.symbols} symbols for {result.duration_s:g} s "
          f"(generator tick {result.tick_us:g} us)")  # fmt: skip
    print(f"  published {result.published:,} at {result.achieved_rate:,.0f}/s in {result.messages:,} messages; "
          f"stored {result.stored:,}; "
          f"lost {result.lost:,}; drained in {result.drain_seconds:.1f} s")  # fmt: skip
    if result.quotes_unacknowledged:
        print(f"  {result.quotes_unacknowledged:,} quotes in batches the stream refused or did not acknowledge in time")
    print(f"  signals {result.signals:,}; orders sent {result.orders_sent:,}, "
          f"accepted seen {result.orders_accepted_seen:,}, "
          f"rejected seen {result.orders_rejected_seen:,}; "
          f"orders stored {result.orders_stored:,}; fills stored {result.fills_stored:,}")  # fmt: skip
    print(f"  quote -> order accepted: {_fmt_us(result.order_latency_us)}")
    print(f"  quote -> row stored:     {_fmt_us(result.store_latency_us)}")
    for name, figures in result.hops_us.items():
        print(f"    hop {name + ':':<24}{_fmt_us(figures)}")
    for name, figures in result.resources.items():
        print(f"  {name:<16} cpu {figures['cpu_percent']:6.1f}%  peak rss {figures['peak_rss_mb']:7.1f} MB")
    print("  held: yes" if result.held else f"  held: no: {'; '.join(result.missed)}")


def write_report(results: list[RunResult], out_dir: Path, label: str) -> list[Path]:
    """JSON of every run, and a PNG of the last run's latencies and throughput; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{label}-{stamp}.json"
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    path.write_text(json.dumps({"machine": machine, "runs": [asdict(r) | {"held": r.held} for r in results]}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return [path]
    last = results[-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = ["p50", "p90", "p99", "p99.9", "max"]
    width = 0.4
    for offset, (name, values) in enumerate(
        (("quote -> order accepted", last.order_latency_us), ("quote -> row stored", last.store_latency_us))
    ):
        if not values:
            left.plot([], [], " ", label=f"{name}: none seen")  # said, not left out without a word
            continue
        xs = [i + (offset - 0.5) * width for i in range(len(keys))]
        bars = left.bar(xs, [values[k] / 1000 for k in keys], width, label=name)
        left.bar_label(bars, labels=[_human(values[k]) for k in keys], fontsize=7, padding=2)
    left.set_xticks(range(len(keys)), keys)
    # Headroom above the tallest bar: the legend sits there, never over a bar's label.
    left.set_ylim(0, left.get_ylim()[1] * 1.3)
    left.set_ylabel("latency (ms)")
    left.set_title(f"latency at {last.rate:,.0f} quotes/s over {last.symbols} symbols (tick {last.tick_us:g} us)")
    left.legend(loc="upper left")
    right.plot(range(1, len(last.published_per_s) + 1), last.published_per_s, label="published/s")
    right.plot(range(1, len(last.stored_per_s) + 1), last.stored_per_s, label="stored/s")
    right.set_ylim(bottom=0)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("second of the run")
    right.set_ylabel("quotes per second")
    right.set_title(f"throughput ({'held' if last.held else 'did not hold'})")
    right.legend(loc="lower right")
    if not last.held:
        fig.text(0.5, 0.01, "did not hold: " + "; ".join(last.missed), ha="center", fontsize=8, color="firebrick")
    fig.tight_layout(rect=(0, 0.04 if not last.held else 0, 1, 1))
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return [path, png]


# Reconnects half a second apart (also for the first connection): a server restarting comes back within them; a
# stack taken down or never started does not, and the run ends saying so (main), instead of retrying for ever.
_RECONNECTS = 10


async def _connect(url: str, *, acknowledged: bool = False) -> Client:
    """A connection to ``url``; ``acknowledged``: with the inbox its user may read, for JetStream's answers."""

    async def _quiet(exc: Exception) -> None:
        """Reconnect attempts are expected; if they run out, the run ends with one line saying why."""

    user = url_user(url) if acknowledged else None
    return await nats.connect(
        url.split(","), max_reconnect_attempts=_RECONNECTS, reconnect_time_wait=0.5, error_cb=_quiet,
        inbox_prefix=inbox_prefix(user) if user else DEFAULT_INBOX_PREFIX,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``just load``."""
    parser = argparse.ArgumentParser(
        prog="just load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=100, help="symbols the quotes are spread over [100]")
    parser.add_argument("--rate", type=float, default=5000, help="quotes per second, all symbols [5000]")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load per run [30]")
    parser.add_argument("--find-max", action="store_true", help="step the rate up; report the highest that held")
    parser.add_argument("--drain-s", type=float, default=60, help="longest wait for the backlog after a run [60]")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("RRR_RUN_DIR", ".run")),
        help="where `just up` keeps pids [$RRR_RUN_DIR or .run]",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--single", action="store_true", help="one message per quote (md.quote.<shard>.<symbol>) instead of batches"
    )
    parser.add_argument(
        "--tick-us",
        type=float,
        default=200,
        help="the generator wakes at most this often to make the quotes that came due; they go out as the feeds "
        "send them, a batch per shard once the last is acknowledged [200]",
    )
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--tick-us", args.tick_us, 10),
        ("--symbols", args.symbols, 1),
        ("--rate", args.rate, 1),
        ("--duration", args.duration, 1),
    ):
        if value < low:
            parser.error(f"{flag}: expected at least {low}, got {value}")
    if args.tick_us > 100_000:
        parser.error(f"--tick-us: expected at most 100000 (a tenth of a second), got {args.tick_us:,.0f}")
    listen_url = os.environ.get("RRR_NATS_URL")
    # The replay tool's user publishes market data; without one (a system without users) RRR_NATS_URL does.
    nats_url = os.environ.get("RRR_MARKET_DATA_NATS_URL") or listen_url
    database_url = os.environ.get("RRR_DATABASE_URL")
    if not nats_url or not listen_url or not database_url:
        parser.error("RRR_NATS_URL and RRR_DATABASE_URL are not set: start the system with `just up none`")
    shards = int(os.environ.get("RRR_SHARDS", "1"))

    def _one(rate: float) -> RunResult:
        try:
            return _measured(rate)
        except (nats.errors.Error, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The system went away under the run (`just down`, a crash) or was never up: one line, not a trace.
            raise _SystemGoneError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    def _measured(rate: float) -> RunResult:
        result = asyncio.run(
            run_load(
                nats_url,
                listen_url,
                database_url,
                args.run_dir,
                rate=rate,
                symbols=args.symbols,
                duration_s=args.duration,
                shards=shards,
                drain_s=args.drain_s,
                progress=not args.no_progress,
                single=args.single,
                tick_s=args.tick_us / 1e6,
            )
        )
        print_table(result)
        return result

    try:
        return _drive(args, _one)
    except _SystemGoneError as exc:
        print(f"just load: lost the system ({exc}); is it up? Start it with `just up none`.", file=sys.stderr)
        return 2


class _SystemGoneError(Exception):
    """NATS or PostgreSQL could not be reached, or went away during a run."""


def _drive(args: argparse.Namespace, _one: Callable[[float], RunResult]) -> int:
    if not args.find_max:
        result = _one(args.rate)
        print("report: " + ", ".join(str(p) for p in write_report([result], args.out_dir, "load")))
        return 0
    results: list[RunResult] = []
    rate = args.rate
    best: float | None = None
    failed: float | None = None
    # Double until a rate fails, then bisect twice between the last that held and the first that failed.
    while failed is None and rate <= 1_000_000:
        results.append(_one(rate))
        if results[-1].held:
            best, rate = rate, rate * 2
        else:
            failed = rate
    for _ in range(2):
        if best is None or failed is None:
            break
        rate = (best + failed) / 2
        results.append(_one(rate))
        if results[-1].held:
            best = rate
        else:
            failed = rate
    print(f"highest rate that held for {args.duration:g} s: {best:,.0f} quotes/s" if best else "no rate held")
    print("report: " + ", ".join(str(p) for p in write_report(results, args.out_dir, "find-max")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
