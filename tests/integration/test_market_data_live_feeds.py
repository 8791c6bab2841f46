"""Live venue feeds against local servers that speak each venue's protocol (``tests/support/venue_server.py``).

Each server runs a script written from the venue's documented frames (``tests/data/venues``): handshakes,
thousands of frames, repeats, hostile frames, a server-side drop mid-stream, a stall, a sequence gap,
pings, a scheduled close. The tests check the exact ticks that come out against the script's own list,
what was reported, and that a recording of the run replays to the same ticks.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rrr.market_data.venues import VENUES
from rrr.market_data.venues.base import Tick
from rrr.market_data.venues.connection import FeedSettings, VenueFeed, VenueUnreachableError
from rrr.market_data.venues.recorder import Recorder, ReplayCounts, read_recording
from rrr.shared.messages import Quote
from tests.support.venue_server import VENUES_DATA, VenueServer
from tests.support.waiting import wait_until

SYMBOLS = {
    "binance": {"BTCUSDT": "BTCUSDT", "ETHUSDT": "ETHUSDT", "SOLUSDT": "SOLUSDT"},
    "coinbase": {"BTC-USD": "BTCUSD", "ETH-USD": "ETHUSD"},
    "kraken": {"BTC/USD": "BTCUSD", "ETH/USD": "ETHUSD"},
}


class _Collect:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []

    async def put(self, ticks: Sequence[Tick]) -> None:
        self.ticks.extend(ticks)


def _settings(url: str, **overrides: Any) -> FeedSettings:
    values: dict[str, Any] = {
        "url": url,
        "symbols_per_connection": 100,
        "max_frame_bytes": 4096,
        "ping_interval_s": 2.0,
        "stale_connection_s": 3.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "rollover_after_s": 3600.0,
    }
    return FeedSettings(**(values | overrides))


def _expected(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VENUES_DATA / f"{name}.expected.json").read_text())
    return loaded


def _seen(tick: Tick) -> dict[str, Any]:
    """A tick as the expected files write it."""
    if isinstance(tick, Quote):
        return {
            "id": tick.id,
            "symbol": tick.symbol,
            "bid": str(tick.bid),
            "ask": str(tick.ask),
            "bid_size": str(tick.bid_size),
            "ask_size": str(tick.ask_size),
            "ts_event": tick.ts_event,
        }
    return {
        "id": tick.id,
        "symbol": tick.symbol,
        "price": str(tick.price),
        "size": str(tick.size),
        "ts_event": tick.ts_event,
        "aggressor": tick.aggressor,
    }


def _same(seen: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Equal in every field the expected file gives, prices as numbers (Kraken writes 1.10 as 1.1)."""
    for key, value in expected.items():
        if key in ("bid", "ask", "bid_size", "ask_size", "price", "size"):
            if Decimal(seen[key]) != Decimal(value):
                return False
        elif seen[key] != value:
            return False
    return True


async def _run_feed(
    venue_name: str,
    script: str,
    tmp_path: Path,
    settings: dict[str, Any] | None = None,
    *,
    clock: Callable[[], int] = time.time_ns,
    midway: Callable[[VenueFeed, _Collect], Awaitable[None]] | None = None,
) -> tuple[VenueFeed, _Collect, VenueServer, Path]:
    expected = _expected(script)
    recording = tmp_path / f"{script}.jsonl"
    recorder = Recorder(recording, max_bytes=64 << 20)
    recorder.venue(venue_name, SYMBOLS[venue_name])
    sink = _Collect()
    stop = asyncio.Event()
    async with VenueServer.running(venue_name, VENUES_DATA / f"{script}.script.jsonl") as server:
        feed = VenueFeed(
            VENUES[venue_name],
            SYMBOLS[venue_name],
            _settings(server.url, **(settings or {})),
            sink,
            stop,
            recorder=recorder,
            rng=random.Random(5),
            clock=clock,
        )
        task = asyncio.create_task(feed.run())
        if midway is not None:
            await midway(feed, sink)
        await wait_until(
            lambda: len(sink.ticks) >= len(expected["ticks"]) and feed.health.malformed >= expected["malformed"],
            60,
            f"{len(expected['ticks'])} ticks and {expected['malformed']} frames refused",
            describe=lambda: (len(sink.ticks), feed.health),
            watch=[task],
        )
        stop.set()
        await task
    await recorder.close()
    return feed, sink, server, recording


def _check_ticks(sink: _Collect, expected: dict[str, Any]) -> None:
    seen = [_seen(t) for t in sink.ticks]
    assert len(seen) == len(expected["ticks"])
    mismatched = [(s, e) for s, e in zip(seen, expected["ticks"], strict=True) if not _same(s, e)]
    assert not mismatched, mismatched[:3]
    assert len({t.id for t in sink.ticks}) == len(sink.ticks)


async def test_binance_feed_survives_a_drop_a_stall_a_gap_repeats_and_hostile_frames_and_replays_the_same(
    tmp_path: Path,
) -> None:
    feed, sink, server, recording = await _run_feed("binance", "binance", tmp_path)
    expected = _expected("binance")
    _check_ticks(sink, expected)
    health = feed.health
    # Three connections: the first dropped by the server, the second stalled and given up on.
    assert len(server.connections) == 3
    assert (health.reconnects, health.stale_connections) == (2, 1)
    assert (health.gaps, health.gap_events_missed) == (1, 5)
    assert (health.malformed, health.duplicates) == (expected["malformed"], expected["duplicates"])
    # Subscribed on every connection, each to exactly its symbols; pings answered both ways.
    assert all(
        c.requests[0]["params"] == [f"{s.lower()}@{k}" for s in SYMBOLS["binance"] for k in ("bookTicker", "trade")]
        for c in server.connections
    )
    assert server.pongs >= 1
    # The recording replays through the same normaliser to the same ticks, and refuses the same frames.
    counts = ReplayCounts()
    replayed = list(read_recording(recording, counts))
    assert replayed == sink.ticks
    assert counts.malformed == expected["malformed"] - 1  # the oversize frame was refused before recording
    assert counts.gaps == 1


async def test_binance_rollover_opens_the_replacement_first_and_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # The feed's clock, moved past the connection's lifetime once the first 800 events arrived: exactly one
    # rollover, at that point of the script, whatever the machine's speed.
    offset = [0]

    async def _age_the_connection(feed: VenueFeed, sink: _Collect) -> None:
        await wait_until(lambda: len(sink.ticks) >= 800, 30, "the events before the scheduled close")
        offset[0] = 61 * 10**9

    feed, sink, server, _ = await _run_feed(
        "binance",
        "binance_rollover",
        tmp_path,
        {"rollover_after_s": 60.0, "stale_connection_s": 600.0},
        clock=lambda: time.time_ns() + offset[0],
        midway=_age_the_connection,
    )
    expected = _expected("binance_rollover")
    _check_ticks(sink, expected)
    assert (feed.health.rollovers, feed.health.reconnects) == (1, 0)
    assert len(server.connections) == 2
    # The replacement subscribed while the first connection was still open, and the overlap was dropped.
    assert server.connections[1].subscribes == 1
    assert feed.health.duplicates >= 1


async def test_coinbase_feed_reports_sequence_gaps_within_and_across_a_reconnect(tmp_path: Path) -> None:
    feed, sink, server, _ = await _run_feed("coinbase", "coinbase", tmp_path)
    expected = _expected("coinbase")
    _check_ticks(sink, expected)
    assert feed.health.reconnects == 1
    assert feed.health.gaps == len(expected["gaps"])
    assert feed.health.gap_events_missed == sum(g["last"] - g["first"] + 1 for g in expected["gaps"])
    assert feed.health.malformed == expected["malformed"]
    assert server.connections[0].requests[0] == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channels": ["ticker", "matches", "heartbeat"],
    }


async def test_kraken_feed_recovers_the_trades_missed_while_away_from_the_snapshot_once_each(tmp_path: Path) -> None:
    # A snapshot of 50 trades is a frame of about 7 KB.
    feed, sink, server, _ = await _run_feed("kraken", "kraken", tmp_path, {"max_frame_bytes": 65536})
    expected = _expected("kraken")
    seen = [_seen(t) for t in sink.ticks]
    assert len(seen) == len(expected["ticks"])
    # Quotes in arrival order; the recovered trades come in trade id order after the reconnect.
    by_id = {s["id"]: s for s in seen}
    trades = [e for e in expected["ticks"] if "price" in e]
    assert all(_same(by_id[e["id"]], e) for e in trades)
    quotes = [s for s in seen if "bid" in s]
    assert all(_same(s, e) for s, e in zip(quotes, [e for e in expected["ticks"] if "bid" in e], strict=True))
    assert feed.health.reconnects == 1
    assert feed.health.malformed == expected["malformed"]
    assert feed.health.duplicates == expected["duplicates"]
    assert len(server.connections) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("url", [f"ws://127.0.0.1:{_closed_port()}/stream", "wss://stream.venue.invalid:9443/stream"])
async def test_a_venue_that_cannot_be_reached_at_all_stops_the_feed_naming_its_host(url: str) -> None:
    feed = VenueFeed(
        VENUES["binance"], SYMBOLS["binance"], _settings(url, connect_timeout_s=5), _Collect(), asyncio.Event()
    )
    with pytest.raises(ExceptionGroup) as raised:
        await feed.run()
    (error,) = raised.value.exceptions
    assert isinstance(error, VenueUnreachableError)
    host = url.split("//")[1].split(":")[0]
    assert error.host == host
    assert f"cannot reach {host}" in str(error)


async def test_hundreds_of_symbols_spread_over_connections_each_subscribing_only_its_own() -> None:
    symbols = {f"S{i:03d}USDT": f"S{i:03d}USDT" for i in range(250)}
    stop = asyncio.Event()
    async with VenueServer.running("binance", VENUES_DATA / "binance_rollover.script.jsonl") as server:
        # Sessions beyond the script's first two hold; the feed's symbols are not the script's, so only the
        # handshake matters here: the script's frames are refused as symbols not subscribed.
        feed = VenueFeed(
            VENUES["binance"], symbols, _settings(server.url, symbols_per_connection=100), _Collect(), stop
        )
        task = asyncio.create_task(feed.run())
        await wait_until(
            lambda: len(server.connections) == 3 and all(c.subscribes for c in server.connections),
            30,
            "three connections subscribed",
            watch=[task],
        )
        stop.set()
        await task
    streams = [stream for c in server.connections for r in c.requests for stream in r["params"]]
    assert len(streams) == len(set(streams)) == 500
    assert [len(c.requests[0]["params"]) for c in server.connections] == [200, 200, 100]
