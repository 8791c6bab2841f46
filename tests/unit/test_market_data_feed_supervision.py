"""The supervision of venue connections as pure logic: back-off, staleness, health, and frames to ticks."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence

from rrr.market_data import live
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.venues import binance
from rrr.market_data.venues.base import Tick
from rrr.market_data.venues.connection import Backoff, FeedHealth, FeedSettings, StaleWatch, VenueFeed
from rrr.shared.subjects import shard_of

S = 1_000_000_000


class _Collect:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []

    async def put(self, ticks: Sequence[Tick]) -> None:
        self.ticks.extend(ticks)


def test_backoff_grows_to_its_cap_and_never_falls_below_half_of_it() -> None:
    backoff = Backoff(0.5, 30, random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(30, 0.5 * 2**n) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # It grows: each ceiling's lower half-bound is above the previous ceiling's until the cap.
    assert delays[-1] >= 15 > delays[0]
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_connections_dropped_at_once_do_not_reconnect_at_the_same_instant() -> None:
    rng = random.Random(7)
    # 200 connections dropped together, each with its own back-off drawing from one source of jitter.
    for attempt in range(6):
        backoffs = [Backoff(1.0, 30, rng) for _ in range(200)]
        for b in backoffs:
            b.attempt = attempt
        delays = sorted(b.next_delay() for b in backoffs)
        ceiling = min(30, 2**attempt)
        # Spread over the upper half of the ceiling: no 1 % slice of that half holds more than 5 %.
        buckets: dict[int, int] = {}
        for d in delays:
            slot = int((d - ceiling / 2) / (ceiling / 2) * 100)
            buckets[slot] = buckets.get(slot, 0) + 1
        assert max(buckets.values()) <= 10, (attempt, max(buckets.values()))
        assert delays[-1] - delays[0] >= ceiling / 2 * 0.9


def test_a_symbol_silent_for_the_timeout_is_stale_once_until_seen_again() -> None:
    watch = StaleWatch(["A", "B"], 10 * S, 0)
    watch.seen("A", 5 * S)
    assert watch.stale(9 * S) == []
    assert watch.stale(10 * S) == ["B"]
    assert watch.stale(11 * S) == []
    assert watch.stale(15 * S) == ["A"]
    watch.seen("B", 16 * S)
    assert watch.stale(26 * S) == ["B"]
    watch.restart(30 * S)
    assert watch.stale(39 * S) == []
    assert StaleWatch(["A"], 0, 0).stale(10**18) == []


def test_health_names_each_figure_per_venue_and_reports_lag_since_the_last_read() -> None:
    health = FeedHealth("binance", reconnects=2, last_frame_ns=10 * S, lag_max_ns=1_500_000)
    values = health.values(12 * S)
    assert values["live_binance_reconnects"] == 2
    assert values["live_binance_last_frame_age_ms"] == 2000
    assert values["live_binance_lag_max_us"] == 1500
    assert health.values(12 * S)["live_binance_lag_max_us"] == 0
    assert all(len(name) <= 64 and name.islower() for name in values)


def _book(u: int) -> bytes:
    data = {"u": u, "s": "BTCUSDT", "b": "1.0", "B": "1", "a": "1.1", "A": "1"}
    return json.dumps({"stream": "btcusdt@bookTicker", "data": data}).encode()


async def test_frames_of_two_overlapping_connections_give_each_tick_once_and_bad_ones_are_counted() -> None:
    feed = VenueFeed(
        binance.VENUE,
        {"BTCUSDT": "BTCUSDT"},
        FeedSettings(url="ws://127.0.0.1:1", symbols_per_connection=10),
        _Collect(),
        asyncio.Event(),
        clock=lambda: 5 * S,
    )
    # A rollover: the old connection delivers 1..3, the new one 2..5 from its start.
    old = [(S, None, _book(u)) for u in (1, 2, 3)]
    new = [(S, None, _book(u)) for u in (2, 3, 4, 5)]
    ticks = feed.process([old[0], old[1], new[0], old[2], new[1], new[2], (S, None, b"{oops"), new[3]])
    assert [t.id for t in ticks] == [f"binance:BTCUSDT:{u}" for u in (1, 2, 3, 4, 5)]
    assert (feed.health.duplicates, feed.health.malformed, feed.health.frames) == (2, 1, 8)


def test_each_shard_builds_feeds_of_only_its_own_symbols_within_the_venues_limits() -> None:
    symbols = tuple(f"binance:S{i}USDT" for i in range(300)) + tuple(f"coinbase:C{i}-USD" for i in range(120))
    seen: dict[str, set[str]] = {"binance": set(), "coinbase": set()}
    for shard in range(2):
        config = MarketDataConfig(
            feed="live", venues=("binance", "coinbase"), symbols=symbols, shard=shard, shards=2, live_max_symbols=500
        )
        for feed in live.feeds(config, _Collect(), asyncio.Event()):
            assert all(shard_of(system, 2) == shard for system in feed.symbols.values())
            assert feed.settings.symbols_per_connection == feed.venue.max_symbols_per_connection
            assert not seen[feed.venue.name] & feed.symbols.keys()
            seen[feed.venue.name] |= feed.symbols.keys()
    assert (len(seen["binance"]), len(seen["coinbase"])) == (300, 120)
