"""The market-data service on live venues (local servers speaking their protocols) and a real nats-server:
ticks on the bus, health in the heartbeat, ``record`` and the replay of a recording."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import free_port
from rrr.market_data import app, live
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.venues.connection import VenueUnreachableError
from rrr.market_data.venues.recorder import ReplayCounts, read_recording
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import Quote, QuoteBatch, Trade, market_data_decoder
from tests.support.metrics import scrape
from tests.support.services import Heartbeats, running_service
from tests.support.streams import count
from tests.support.venue_server import VENUES_DATA, VenueServer
from tests.support.waiting import wait_until

COINBASE = ("BTC-USD", "ETH-USD")


def _expected(name: str) -> list[dict[str, object]]:
    ticks: list[dict[str, object]] = json.loads((VENUES_DATA / f"{name}.expected.json").read_text())["ticks"]
    return ticks


def _live_config(nats_url: str, url: str, **overrides: object) -> MarketDataConfig:
    values: dict[str, object] = {
        "nats_url": nats_url,
        "feed": "live",
        "venues": ("coinbase",),
        "symbols": COINBASE,
        "venue_urls": (f"coinbase={url}",),
        "live_backoff_initial_s": 0.05,
        "live_backoff_max_s": 0.2,
        "heartbeat_ms": 100,
    }
    return MarketDataConfig(**(values | overrides))  # type: ignore[arg-type]


MINE = frozenset({"BTCUSD", "ETHUSD"})


async def test_the_live_service_publishes_each_venue_tick_on_its_subject_and_reports_health(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    expected = _expected("coinbase")
    received: list[Quote | Trade] = []

    async def _on_md(msg: Msg) -> None:
        message = market_data_decoder.decode(msg.data)
        if isinstance(message, QuoteBatch):
            # Quotes in batches of the venue: on md.quotes.<shard>.coinbase.
            assert msg.subject == subjects.quote_batch(0, "coinbase")
            received.extend(message.quote(i) for i in range(len(message.quotes)) if message.quotes[i].symbol in MINE)
        elif message.symbol in MINE:
            assert msg.subject == (
                subjects.quote(message.symbol, 1) if isinstance(message, Quote) else subjects.trade(message.symbol, 1)
            )
            received.append(message)

    # One subscription: the order of what arrives is the order it was published in.
    await bus.nc.subscribe("md.*.0.*", cb=_on_md)
    await bus.nc.flush()
    port = free_port()
    async with (
        VenueServer.running("coinbase", VENUES_DATA / "coinbase.script.jsonl") as server,
        running_service(app.run, _live_config(nats_url, server.url, metrics_port=port), heartbeats) as md,
    ):
        await wait_until(lambda: len(received) >= len(expected), 30, f"{len(expected)} ticks", watch=[md.task])
        counters = await md.wait_for_counters(
            lambda c: c.get("live_published", 0) >= len(expected) and c.get("live_coinbase_reconnects", 0) >= 1,
            "every tick published and the reconnect counted",
        )
        page = await scrape(f"http://127.0.0.1:{port}/metrics")
    # Quotes go in batches and trades one by one: each family keeps its order (they travel on other subjects).
    expected_by_id = {e["id"]: e for e in expected}
    for kind in (Quote, Trade):
        got = [m for m in received if isinstance(m, kind)]
        assert [m.id for m in got] == [e["id"] for e in expected if (("bid" in e) == (kind is Quote))]
        assert all(
            Decimal(str(getattr(m, "bid", getattr(m, "price", 0))))
            == Decimal(str(expected_by_id[m.id].get("bid", expected_by_id[m.id].get("price"))))
            for m in got
        )
    assert counters["live_coinbase_gaps"] == 3
    assert counters["live_coinbase_malformed"] == 5
    assert counters["live_coinbase_connected"] == 1
    assert "live_coinbase_last_frame_age_ms" in counters
    assert "live_coinbase_lag_max_us" in counters
    # The same health on /metrics, labelled by venue.
    venue = {"service": "market_data", "venue": "coinbase"}
    assert page.value("rrr_feed_gaps_total", **venue) == 3
    assert page.value("rrr_feed_malformed_total", **venue) == 5
    assert page.value("rrr_feed_connected", **venue) == 1
    assert page.value("rrr_feed_reconnects_total", **venue) >= 1
    assert page.value("rrr_feed_last_frame_age_seconds", **venue) >= 0
    assert page.value("rrr_market_data_live_published_total", service="market_data") >= len(expected)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_the_live_service_stops_at_start_naming_a_venue_host_it_cannot_reach(
    nats_url: str, heartbeats: Heartbeats
) -> None:
    config = _live_config(nats_url, f"wss://127.0.0.1:{_closed_port()}/", instance="md-unreachable")
    with pytest.raises(VenueUnreachableError, match=r"coinbase: cannot reach 127\.0\.0\.1"):
        await app.run(config, asyncio.Event())
    assert "md-unreachable" not in heartbeats.latest


async def test_record_writes_the_frames_and_their_replay_gives_the_live_ticks(tmp_path: Path) -> None:
    out = tmp_path / "coinbase.jsonl"
    expected = _expected("coinbase")
    async with VenueServer.running("coinbase", VENUES_DATA / "coinbase.script.jsonl") as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rrr.market_data",
            "record",
            "--out",
            str(out),
            "--venue",
            "coinbase",
            "--symbols",
            ",".join(COINBASE),
            "--venue-urls",
            f"coinbase={server.url}",
            "--live-backoff-initial-s",
            "0.05",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("RRR_")},
        )

        def _all_recorded() -> bool:
            return out.exists() and sum(1 for _ in read_recording(out)) >= len(expected)

        try:
            await wait_until(_all_recorded, 30, f"{len(expected)} ticks in the recording")
        finally:
            process.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith(f"recorded {out}: frames=")
    counts = ReplayCounts()
    replayed = list(read_recording(out, counts))
    assert [t.id for t in replayed] == [e["id"] for e in expected]
    assert (counts.malformed, counts.gaps) == (5, 3)


async def test_a_recording_replays_into_the_market_data_stream_once_however_often_it_is_replayed(
    nats_server: NatsEndpoint, bus: Bus, tmp_path: Path
) -> None:
    if nats_server.server is None:
        pytest.skip("counting a stream needs a nats-server of this test")
    # A recording as `record` writes it: the venue's symbols, then every frame the script sends.
    recording = tmp_path / "kraken.jsonl"
    lines = [json.dumps({"kind": "venue", "venue": "kraken", "symbols": {"BTC/USD": "BTCUSD", "ETH/USD": "ETHUSD"}})]
    script = (VENUES_DATA / "kraken.script.jsonl").read_text().splitlines()
    frames = [json.loads(line)["send"] for line in script if '"send"' in line]
    lines += [
        json.dumps({"kind": "frame", "venue": "kraken", "conn": 1, "ns": 10**18 + n, "frame": f})
        for n, f in enumerate(frames)
    ]
    recording.write_text("\n".join(lines) + "\n")
    expected = _expected("kraken")
    first = await live.replay_recording(
        bus, recording, shards=1, window=256, stop=asyncio.Event(), counts=ReplayCounts()
    )
    again = await live.replay_recording(
        bus, recording, shards=1, window=256, stop=asyncio.Event(), counts=ReplayCounts()
    )
    assert (first.published, first.duplicates) == (len(expected), 0)
    assert (again.published, again.duplicates) == (0, len(expected))
    assert await count(bus.js, "RRR_MD") == len(expected)
