"""Feeds: where quotes come from and how they are put on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats.errors

from rrr.market_data.checked import CheckedFile, _Alone, check_file
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.handlers import MarketDataCounters
from rrr.market_data.replay import ReadCounts, ReadLimits
from rrr.market_data.simulator import RandomWalk
from rrr.shared import subjects
from rrr.shared.bus import Bus, Outgoing, QuoteBatcher, fitted
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.limits import DEFAULT_MAX_MSG_BYTES
from rrr.shared.messages import Quote, QuoteBatch, QuoteRow, Trade

_log = logging.getLogger(__name__)


async def run_simulator(
    bus: Bus,
    config: MarketDataConfig,
    counters: MarketDataCounters,
    stop: asyncio.Event,
    clock: Clock = wall_clock,
) -> None:
    """Publish random-walk quotes for this shard's symbols at ``rate_hz`` until ``stop`` is set.

    Open loop: the n-th quote is due at start + n / rate, so a slow iteration is caught up rather than
    stretching the schedule. Quotes go out in batches (``QuoteBatcher``: the quotes due at one wake-up
    travel together, each wake-up after the stream acknowledged the last). Trades go out one by one.
    """
    symbols = [s for s in config.symbols if subjects.shard_of(subjects.check_symbol(s), config.shards) == config.shard]
    if not symbols:
        _log.warning("simulator: none of %s belongs to shard %d of %d", config.symbols, config.shard, config.shards)
        return
    walk = RandomWalk(symbols, seed=config.seed, trade_every=config.trade_every)
    run_id = f"sim{config.seed}-{clock()}"
    batcher = QuoteBatcher(
        bus, "sim", config.shards, batch_id_prefix=f"{run_id}:b", clock=clock, max_bytes=config.max_msg_bytes
    )
    cycle = itertools.cycle(symbols)
    start = time.monotonic()
    sent = quotes_dropped = 0
    while not stop.is_set():
        due = int((time.monotonic() - start) * config.rate_hz) + 1
        for _ in range(min(due - sent, 10_000)):
            sim = walk.next(next(cycle))
            sent += 1
            # A simulated quote happens when it is made: its event time is the clock's.
            now = clock()
            # Sizes are whole numbers: 0 places.
            row = QuoteRow(
                f"{run_id}:{sent}", sim.symbol, now, sim.bid_units, sim.ask_units, sim.places,
                int(sim.bid_size), int(sim.ask_size),
            )  # fmt: skip
            batcher.add(row)
            if sim.trade_side is not None:
                trade = Trade(
                    id=f"{run_id}:{sent}:t",
                    ts_event=now,
                    ts_init=now,
                    symbol=sim.symbol,
                    price=sim.ask if sim.trade_side == "buy" else sim.bid,
                    size=sim.ask_size if sim.trade_side == "buy" else sim.bid_size,
                    aggressor="buy" if sim.trade_side == "buy" else "sell",
                )
                await _publish_live(bus, counters, subjects.trade(sim.symbol, config.shards), trade)
        # The quotes of this wake-up go out together before the next one is made.
        await batcher.close()
        counters.published = batcher.counters.quotes
        counters.dropped_disconnected += batcher.counters.dropped - quotes_dropped
        quotes_dropped = batcher.counters.dropped
        counters.quotes_unconfirmed = batcher.counters.unconfirmed
        # Pacing, not synchronisation: wake at the next quote's due time, or at once when asked to stop.
        next_due = start + sent / config.rate_hz
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(next_due - time.monotonic(), 0))


async def _publish_live(bus: Bus, counters: MarketDataCounters, subject: str, message: Quote | Trade) -> bool:
    """Publish a live tick; while the broker is away and the client's buffer is full, drop and count it.

    A live feed cannot wait: a quote that could not be sent now is stale by the time it could.
    """
    try:
        await bus.publish(subject, message)
    except nats.errors.Error:
        counters.dropped_disconnected += 1
        return False
    return True


# Quotes per batch a replay sends: large enough that a message's own cost is small beside its quotes'.
BATCH_ROWS = 512


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: of ``rows`` read, ``published`` were stored, ``duplicates`` had been stored before.

    The rest were skipped: ``counts.duplicate_rows`` repeat an earlier row of the file and
    ``counts.bad_rows`` cannot be read (``bad_rows`` holds the errors of the first MAX_BAD_ROWS_LISTED).
    """

    path: str
    source: str
    published: int = 0
    duplicates: int = 0
    bad_rows: list[str] = field(default_factory=list)
    counts: ReadCounts = field(default_factory=ReadCounts)
    seconds: float = 0.0
    # Stopped by ``stop`` before the end of the file: ``published + duplicates`` rows were stored.
    interrupted: bool = False

    @property
    def rows(self) -> int:
        """Data rows read, bad and duplicate ones included."""
        return self.counts.rows


async def replay_file(
    bus: Bus,
    path: Path,
    *,
    shards: int,
    window: int,
    skip_bad_rows: bool,
    limits: ReadLimits | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Clock = wall_clock,
    stop: asyncio.Event | None = None,
    max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES,
    checked: CheckedFile | None = None,
) -> ReplayReport:
    """Publish every quote of ``path`` to JetStream in file order, as fast as the streams acknowledge them.

    The whole file is read first (``check_file``, unless ``checked`` is that already done): a bad row or a
    file beyond ``limits`` stops the replay with nothing sent.

    Quotes travel in batches per shard (``md.quotes.<shard>.replay``). At most ``window`` quotes await
    their acknowledgement at once, which is the back-pressure: the replay goes as fast as the system
    absorbs it and no faster. Each quote's id is ``<source>:<line>``; a batch's id, its JetStream
    de-duplication key, is made of its first and last, so replaying a file twice stores its quotes once.

    ``stop`` ends the replay early: the window in flight is finished (or given up, if the broker is away)
    and the report says how far it got; running the same replay again resumes, since what was stored
    is stored once.

    Raises:
        BadRowError: a row cannot be read and ``skip_bad_rows`` is false. Nothing is published.
        UnsupportedFileError: the file cannot be read, or is beyond ``limits``. Nothing is published.
    """
    started = time.monotonic()
    if checked is None:
        checked = await asyncio.to_thread(check_file, path, skip_bad_rows=skip_bad_rows, limits=limits)
    try:
        return await _publish_checked(
            bus, checked, shards=shards, window=window, on_progress=on_progress, clock=clock, stop=stop,
            max_msg_bytes=max_msg_bytes, started=started,
        )  # fmt: skip
    finally:
        checked.close()


async def _publish_checked(
    bus: Bus,
    checked: CheckedFile,
    *,
    shards: int,
    window: int,
    on_progress: Callable[[int], None] | None,
    clock: Clock,
    stop: asyncio.Event | None,
    max_msg_bytes: int,
    started: float,
) -> ReplayReport:
    report = ReplayReport(
        path=str(checked.path), source=checked.source, bad_rows=checked.bad_rows, counts=checked.counts
    )

    # Rows gathered per shard, in file order, until ``window`` of them are waiting: then every shard's
    # rows go out as quote batches of at most BATCH_ROWS, all acknowledgements in flight together. The
    # batches depend only on the file and the window, so a second replay sends the same batch ids.
    pending: dict[int, list[QuoteRow]] = {}
    outgoing: list[tuple[Outgoing, int]] = []
    waiting = 0

    # A replay waits out a broker restart or a full store for as long as it takes, unless stopped.
    stop = stop or asyncio.Event()

    def _build(part: list[QuoteRow]) -> QuoteBatch:
        last_line = part[-1].id.rsplit(":", 1)[-1]
        return QuoteBatch(
            id=f"{part[0].id}-{last_line}", ts_event=part[0].ts_event, ts_init=clock(), source="replay", quotes=part
        )

    def _close_shard(shard: int) -> None:
        rows = pending.pop(shard, None)
        if not rows:
            return
        subject = subjects.quote_batch(shard, "replay")
        for start in range(0, len(rows), BATCH_ROWS):
            # Split further when a batch would be larger than the stream takes (long symbols and ids).
            for batch, data in fitted(rows[start : start + BATCH_ROWS], _build, max_msg_bytes):
                outgoing.append((bus.prepare_encoded(subject, batch.id, data), len(batch.quotes)))

    async def _flush() -> None:
        nonlocal waiting
        for shard in list(pending):
            _close_shard(shard)
        items = [o for o, _ in outgoing]
        sizes = [n for _, n in outgoing]
        outgoing.clear()
        waiting = 0
        if not items:
            return
        try:
            acks = await bus.publish_persistent_acks(items, retry_until=stop)
        except (nats.errors.Error, TimeoutError):
            if not stop.is_set():
                raise
            return  # given up when asked to stop: a rerun sends these again
        for ack, size in zip(acks, sizes, strict=True):
            if ack.duplicate:
                report.duplicates += size
            else:
                report.published += size
        if on_progress is not None:
            on_progress(sum(sizes))

    @functools.lru_cache(maxsize=65_536)
    def shard_of(symbol: str) -> int:
        return subjects.shard_of(symbol, shards)

    for frame in checked.frames():
        if stop.is_set():
            report.interrupted = True
            break
        if isinstance(frame, _Alone):
            # Sent alone, as a Quote, after what its shard gathered before it, so that the symbol's quotes
            # stay in file order.
            quote = msgspec.structs.replace(frame.quote, ts_init=clock())
            _close_shard(shard_of(quote.symbol))
            outgoing.append((bus.prepare(subjects.quote(quote.symbol, shards), quote), 1))
            waiting += 1
            if waiting >= window:
                await _flush()
            continue
        for batch_row in frame.rows:
            pending.setdefault(shard_of(batch_row.symbol), []).append(batch_row)
            waiting += 1
            if waiting >= window:
                await _flush()
                if stop.is_set():
                    break
    if (pending or outgoing) and not stop.is_set():
        await _flush()
    report.interrupted = report.interrupted or stop.is_set()
    report.seconds = time.monotonic() - started
    return report
