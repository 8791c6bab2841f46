"""NATS service discovery ($SRV.PING, INFO, STATS) against a real nats-server with the system's users: each
service answers as its own user, `rrr-stack status`'s user asks, and nats-py's own micro client reads it."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import free_port
from rrr.deploy.stack_view import discover
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.strategy import app as strategy_app
from rrr.strategy.config import StrategyConfig
from tests.support.factories import make_quote, unique_symbol
from tests.support.services import Heartbeats, running_service
from tests.support.system import assert_no_permission_violations


@pytest.fixture
def secured(nats_server: NatsEndpoint) -> NatsEndpoint:
    if not nats_server.secured:
        pytest.skip("needs a nats-server with the system's users")
    return nats_server


async def _ask(bus: Bus, subject: str) -> dict[str, Any]:
    reply = await bus.nc.request(subject, b"", timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_a_service_answers_ping_info_and_stats_with_and_without_its_name_and_id(
    secured: NatsEndpoint, bus: Bus, heartbeats: Heartbeats
) -> None:
    port = free_port()
    config = StrategyConfig(nats_url=secured.url_for("strategy"), heartbeat_ms=100, metrics_port=port)
    symbol = unique_symbol("EURUSD")
    quotes = [make_quote(symbol, ts_event=i + 1) for i in range(5)]
    await bus.publish_persistent_many([bus.prepare(subjects.quote(symbol, 1), q) for q in quotes])
    status = await Bus.connect(secured.url_for("status"), service="status", name="test-status")
    try:
        async with running_service(strategy_app.run, config, heartbeats) as strategy:
            await strategy.wait_for_counter("handled", len(quotes))
            found = await discover(secured.url_for("status"), expected=1, window_s=10)
            assert len(found) == 1
            ping = found[0]
            by_name = ServicePing.from_dict(await _ask(status, subjects.discovery("PING", "rrr-strategy")))
            info = ServiceInfo.from_dict(await _ask(status, subjects.discovery("INFO", "rrr-strategy", ping.id)))
            stats = ServiceStats.from_dict(await _ask(status, subjects.discovery("STATS")))
            assert ServiceStats.from_dict(await _ask(status, subjects.discovery("STATS", "rrr-strategy"))).id == ping.id
    finally:
        await status.close()

    assert ping.name == by_name.name == info.name == stats.name == "rrr-strategy"
    assert ping.id == by_name.id == info.id == stats.id
    assert ping.metadata == {
        "instance": strategy.instance,
        "shard": "0",
        "shards": "1",
        "pid": str(os.getpid()),
        "metrics": f"http://127.0.0.1:{port}/metrics",
    }
    assert info.description.startswith("Strategy")
    (endpoint,) = info.endpoints
    assert endpoint.subject == "md.*.0.*"
    assert endpoint.name.startswith("strategy-")
    (counted,) = stats.endpoints
    assert counted.num_requests == len(quotes)
    assert counted.processing_time > 0
    assert counted.data["pending"] == 0
    assert_no_permission_violations(secured)


async def test_a_discovery_request_whose_reply_subject_is_no_inbox_gets_no_answer(
    secured: NatsEndpoint, bus: Bus, heartbeats: Heartbeats
) -> None:
    config = StrategyConfig(nats_url=secured.url_for("strategy"), heartbeat_ms=100)
    landed: list[Msg] = []

    async def _on(msg: Msg) -> None:
        landed.append(msg)

    # A reply subject inside the system's own: an answer there would go into a stream.
    target = f"md.quote.0.{unique_symbol('X')}"
    await bus.nc.subscribe(target, cb=_on)
    async with running_service(strategy_app.run, config, heartbeats):
        await bus.nc.publish(subjects.discovery("PING"), b"", reply=target)
        # Then a proper request, answered: the one before it was handled first, and refused.
        assert (await _ask(bus, subjects.discovery("PING", "rrr-strategy")))["name"] == "rrr-strategy"
        await bus.nc.flush()

    assert landed == []


async def test_the_tap_may_not_ask_services_to_describe_themselves(secured: NatsEndpoint) -> None:
    tap = await Bus.connect(secured.url_for("tap"), service="tap", name="test-tap")
    try:
        # nats-server drops the request (a "Publish Violation" in its log): nobody answers.
        with pytest.raises(nats.errors.TimeoutError):
            await tap.nc.request(subjects.discovery("PING"), b"", timeout=1)
    finally:
        await asyncio.wait_for(tap.close(), timeout=10)
