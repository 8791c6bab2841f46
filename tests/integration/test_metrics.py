"""Each service's /metrics, scraped over HTTP while it runs against a real nats-server."""

from __future__ import annotations

import asyncio
import socket

import pytest

from rrr.deploy.processes import free_port
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.service import MetricsAddressError
from rrr.strategy import app as strategy_app
from rrr.strategy.config import StrategyConfig
from tests.support.factories import make_quote, unique_symbol
from tests.support.metrics import http_get, scrape
from tests.support.services import Heartbeats, running_service
from tests.support.waiting import wait_until


async def test_the_strategy_serves_what_its_consumer_took_handled_and_published_on_its_metrics_port(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    port = free_port()
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, metrics_port=port, fast=2, slow=3)
    url = f"http://127.0.0.1:{port}/metrics"
    symbol = unique_symbol("EURUSD")
    quotes = [make_quote(symbol, bid=1 + i % 3, ask=1.5 + i % 3, ts_event=i + 1) for i in range(40)]
    await bus.publish_persistent_many([bus.prepare(subjects.quote(symbol, 1), q) for q in quotes])

    async with running_service(strategy_app.run, config, heartbeats) as strategy:
        counters = await strategy.wait_for_counter("handled", len(quotes))

        async def _all_counted() -> bool:
            page = await scrape(url)
            return sum(page.values("rrr_messages_received_total", service="strategy")) >= len(quotes)

        await wait_until(_all_counted, 10, "every quote in rrr_messages_received_total")
        page = await scrape(url)

    consumer = next(iter(page.label_values("rrr_consumer_batch_messages_count", "consumer")))
    assert consumer.startswith("strategy-")
    labels = {"service": "strategy", "shard": "0", "consumer": consumer}
    assert page.value("rrr_messages_received_total", plane="md", **labels) == len(quotes)
    assert page.value("rrr_consumer_batch_messages_sum", **labels) == len(quotes)
    batches = page.value("rrr_consumer_batch_messages_count", **labels)
    assert 1 <= batches <= len(quotes)
    assert page.value("rrr_consumer_handler_duration_seconds_count", **labels) == batches
    assert page.value("rrr_consumer_handler_duration_seconds_sum", **labels) > 0
    # The last batch took the last quote: nothing was left behind it, and it had been stored a moment before.
    assert page.value("rrr_consumer_pending_messages", **labels) == 0
    assert 0 <= page.value("rrr_consumer_lag_seconds", **labels) < 60
    published = counters["published"]
    assert published > 0
    assert (
        sum(page.values("rrr_messages_published_total", family="sig.signal"))
        + sum(page.values("rrr_messages_published_total", family="cmd.order"))
        == published
    )
    assert page.value("rrr_strategy_quotes_total", service="strategy") == len(quotes)
    assert page.value("rrr_strategy_symbols", service="strategy") == 1
    assert page.value("rrr_bus_handled_total", service="strategy") == len(quotes)
    assert page.values("rrr_service_info", service="strategy", instance=strategy.instance) == [1]
    assert page.values("process_cpu_seconds_total")


async def test_a_metrics_page_is_served_at_slash_metrics_only(nats_url: str, heartbeats: Heartbeats) -> None:
    port = free_port()
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, metrics_port=port)
    async with running_service(strategy_app.run, config, heartbeats):
        status, headers, _ = await http_get(f"http://127.0.0.1:{port}/metrics")
        missing, _, body = await http_get(f"http://127.0.0.1:{port}/")

    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert missing == 404
    assert b"/metrics" in body


async def test_a_service_whose_metrics_port_is_taken_stops_saying_so(nats_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = StrategyConfig(nats_url=nats_url, metrics_port=port)
        with pytest.raises(MetricsAddressError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await strategy_app.run(config, asyncio.Event())
