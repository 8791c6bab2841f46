"""Each service's /metrics, scraped over HTTP while it runs against a real nats-server."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal

import pytest

from rrr.deploy.processes import free_port
from rrr.execution import app as execution_app
from rrr.execution.config import ExecutionConfig
from rrr.persistence import app as persistence_app
from rrr.persistence.config import PersistenceConfig
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.service import MetricsAddressError
from rrr.strategy import app as strategy_app
from rrr.strategy.config import StrategyConfig
from tests.support.factories import make_order, make_quote, unique_symbol
from tests.support.metrics import http_get, scrape
from tests.support.orders import submit_priced
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
    assert page.values("rrr_service_info", service="strategy", name=strategy.instance) == [1]
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


async def test_execution_exports_orders_by_state_and_rejection_reason_and_its_realized_pnl(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    port = free_port()
    config = ExecutionConfig(
        nats_url=nats_url, heartbeat_ms=100, max_order_qty=Decimal(10), max_notional_quote=Decimal(1000),
        metrics_port=port,
    )  # fmt: skip
    symbol = unique_symbol("RISK")
    await submit_priced(
        bus,
        make_order(symbol, side="buy", qty=11, quote_bid="1", quote_ask="1.01"),  # over max_order_qty
        make_order(symbol, side="buy", qty=5, quote_bid="199", quote_ask="200.01"),  # over max_notional_quote
        make_order(symbol, side="buy", qty=2, quote_bid="99", quote_ask="100"),
        make_order(symbol, side="sell", qty=1, quote_bid="110", quote_ask="111"),
    )

    async with running_service(execution_app.run, config, heartbeats) as execution:
        await execution.wait_for_counter("handled", 4)
        page = await scrape(f"http://127.0.0.1:{port}/metrics")

    labels = {"service": "execution", "shard": "0"}
    assert page.value("rrr_orders_total", state="filled", **labels) == 2
    assert page.value("rrr_orders_total", state="rejected", **labels) == 2
    assert page.value("rrr_orders_rejected_total", reason="max_order_qty", **labels) == 1
    assert page.value("rrr_orders_rejected_total", reason="max_notional_quote", **labels) == 1
    assert page.value("rrr_positions_open", **labels) == 1
    # Bought 2 at the ask 100, sold 1 at the bid 110: 10 realized (the paper venue's default fees are none).
    assert page.value("rrr_realized_pnl", **labels) == pytest.approx(10)
    assert page.value("rrr_execution_orders_filled_total", **labels) == 2


async def test_the_strategy_exports_each_strategys_positions_and_pnl(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    port = free_port()
    config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100, metrics_port=port, fast=2, slow=3)
    symbol = unique_symbol("EURUSD")
    # Rising then falling: sma_cross goes long, then reverses to short.
    mids = [10, 10, 10, 11, 12, 13, 12, 11, 10, 9]
    quotes = [make_quote(symbol, bid=m - 0.5, ask=m + 0.5, ts_event=i + 1) for i, m in enumerate(mids)]
    await bus.publish_persistent_many([bus.prepare(subjects.quote(symbol, 1), q) for q in quotes])

    async with running_service(strategy_app.run, config, heartbeats) as strategy:
        await strategy.wait_for_counter("handled", len(quotes))
        engine_page = await scrape(f"http://127.0.0.1:{port}/metrics")

    labels = {"service": "strategy", "shard": "0", "strategy": "sma_cross"}
    assert engine_page.value("rrr_strategy_running", **labels) == 1
    assert engine_page.value("rrr_strategy_open_positions", **labels) == 1
    # Long 1 at the ask 11.5 (the up-cross at mid 11), then 2 sold at the bid 10.5 (the down-cross at mid 11):
    # 1 realized loss of 1, and a short of 1 at 10.5 marked at the last mid 9: +1.5.
    assert engine_page.value("rrr_strategy_realized_pnl", **labels) == pytest.approx(-1)
    assert engine_page.value("rrr_strategy_unrealized_pnl", **labels) == pytest.approx(1.5)


async def test_persistence_exports_its_write_times_and_rows_per_table(
    nats_url: str, database_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    port = free_port()
    config = PersistenceConfig(
        nats_url=nats_url, database_url=database_url, heartbeat_ms=100, batch_max_ms=20, metrics_port=port
    )
    symbol = unique_symbol("EURUSD")
    quotes = [make_quote(symbol, ts_event=i + 1) for i in range(30)]
    await bus.publish_persistent_many([bus.prepare(subjects.quote(symbol, 1), q) for q in quotes])

    async with running_service(persistence_app.run, config, heartbeats) as persistence:
        await persistence.wait_for_counter("rows_quotes", len(quotes))
        page = await scrape(f"http://127.0.0.1:{port}/metrics")

    labels = {"service": "persistence", "shard": "0"}
    assert page.value("rrr_db_rows_written_total", table="quotes", **labels) == len(quotes)
    assert page.value("rrr_db_rows_written_total", table="fills", **labels) == 0
    writes = page.value("rrr_db_write_duration_seconds_count", plane="md", **labels)
    assert 1 <= writes <= len(quotes)
    assert page.value("rrr_db_write_duration_seconds_sum", plane="md", **labels) > 0
    assert page.value("rrr_consumer_batch_messages_sum", consumer="persistence-md-0", **labels) == len(quotes)
