"""Consumers that own their stream position (no acknowledgements): nothing skipped, nothing handled twice."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from nats.aio.msg import Msg

from rrr.deploy.nats_server import NatsEndpoint, NatsServer
from rrr.shared import subjects
from rrr.shared.bus import DLQ_SUBJECT, MARKET_DATA_STREAM, Bus, Consumer, Delivery, Rejected
from rrr.shared.errors import TransientError
from rrr.shared.messages import MarketData, QuoteBatch, QuoteRow, market_data_decoder
from tests.support.factories import unique_id, unique_symbol
from tests.support.streams import stream_messages
from tests.support.waiting import wait_until


async def test_a_slow_owner_behind_a_backlog_handles_each_message_once_in_stream_order_and_drops_none(
    bus: Bus,
) -> None:
    source = unique_id("slow").replace("-", "_").lower()[:30]
    symbol = unique_symbol("SLOW")
    subject = subjects.quote_batch(0, source)
    sent = []
    for n in range(300):
        batch = QuoteBatch(
            id=f"{source}:{n}",
            ts_event=n,
            ts_init=n,
            source=source,
            quotes=[QuoteRow(f"{source}:{n}", symbol, n, 1, 2, 0)],
        )
        sent.append((await bus.publish_persistent(subject, batch)).seq)
    seen: list[int] = []

    async def _handle(batch: Sequence[Delivery[MarketData]]) -> None:
        seen.extend(d.seq for d in batch)
        # A slow handler (a busy database, say): the backlog waits on the client, held back by flow control.
        await asyncio.sleep(0.005)

    consumer: Consumer[MarketData] = Consumer(
        MARKET_DATA_STREAM, f"slow-{source}", subject, market_data_decoder, _handle,
        batch_size=4, start_seq=sent[0], shards=1, acks=False,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(consumer, stop))
    try:
        await wait_until(
            lambda: len(set(seen)) >= len(sent), 60, "every message handled", watch=[task],
            describe=lambda: f"{len(seen)} handled, {len(set(seen))} distinct",
        )  # fmt: skip
    finally:
        stop.set()
        await task
    assert seen == sent
    assert bus.counters.slow_consumer_drops == 0


class _DeadLetterOutageBus(Bus):
    """A bus whose first dead letter meets an outage of the dead-letter stream (TransientError)."""

    failures = 1

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("the dead-letter stream is away (a test's outage)")
        await super().dead_letter(msg, reason)


async def test_a_refusal_stored_after_an_outage_never_runs_the_handler_twice(nats_url: str, bus: Bus) -> None:
    source = unique_id("dlq").replace("-", "_").lower()[:30]
    symbol = unique_symbol("DLQO")
    subject = subjects.quote_batch(0, source)
    row = QuoteRow(f"{source}:1", symbol, 1, 1, 2, 0)
    seq = (await bus.publish_persistent(subject, QuoteBatch(id=f"{source}:1", ts_event=1, ts_init=1,
                                                            source=source, quotes=[row]))).seq  # fmt: skip
    calls: list[int] = []

    async def _refuse_all(batch: Sequence[Delivery[MarketData]]) -> list[Rejected]:
        calls.extend(d.seq for d in batch)
        return [Rejected(d, "refused by the test", retry=False) for d in batch]

    consumer: Consumer[MarketData] = Consumer(
        MARKET_DATA_STREAM, f"dlqo-{source}", subject, market_data_decoder, _refuse_all,
        start_seq=seq, shards=1, acks=False,
    )  # fmt: skip
    owner = await _DeadLetterOutageBus.connect(nats_url, service="test", name=unique_id("dlqo"))
    stop = asyncio.Event()
    task = asyncio.create_task(owner.consume(consumer, stop))
    try:
        await wait_until(lambda: owner.counters.dead_lettered >= 1, 30, "the dead letter stored", watch=[task])
    finally:
        stop.set()
        await task
        await owner.close()
    assert calls == [seq]
    assert (owner.counters.transient_errors, owner.counters.handler_rejected) == (1, 1)
    letters = [m for m in await stream_messages(bus.js, "RRR_DLQ") if m.headers.get(DLQ_SUBJECT) == subject]
    assert len(letters) == 1


async def test_each_owner_reads_on_a_connection_of_its_own_so_backlogs_never_share_the_servers_bound(
    nats_server: NatsEndpoint, bus: Bus
) -> None:
    # nats-server holds at most 64 MiB unread for a client and lets a flow-controlled consumer's window grow to
    # 32 MiB: two owners behind a backlog on one connection would fill it, and the server would drop it.
    if nats_server.server is None:
        pytest.skip("the server's monitoring endpoint is known only for a server this process started")
    source = unique_id("own").replace("-", "_").lower()[:30]
    symbol = unique_symbol("OWN")
    families = [f"{source}a", f"{source}b"]
    firsts, handled = {}, dict.fromkeys(families, 0)
    for family in families:
        for n in range(50):
            batch = QuoteBatch(id=f"{family}:{n}", ts_event=n, ts_init=n, source=family,
                               quotes=[QuoteRow(f"{family}:{n}", symbol, n, 1, 2, 0)])  # fmt: skip
            seq = (await bus.publish_persistent(subjects.quote_batch(0, family), batch)).seq
            firsts.setdefault(family, seq)

    def _handler(family: str) -> Callable[[Sequence[Delivery[MarketData]]], Awaitable[None]]:
        async def _handle(batch: Sequence[Delivery[MarketData]]) -> None:
            handled[family] += len(batch)

        return _handle

    name = unique_id("owner")
    owner = await Bus.connect(nats_server.url, service="test", name=name)
    consumers = [
        Consumer(MARKET_DATA_STREAM, f"own-{family}", subjects.quote_batch(0, family), market_data_decoder,
                 _handler(family), start_seq=firsts[family], shards=1, acks=False)
        for family in families
    ]  # fmt: skip
    stop = asyncio.Event()
    tasks = [asyncio.create_task(owner.consume(consumer, stop)) for consumer in consumers]
    try:
        await wait_until(lambda: all(n >= 50 for n in handled.values()), 30, "both backlogs handled", watch=tasks)
        connections = await asyncio.to_thread(_connections, nats_server.server)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await owner.close()
    delivered = {conn["name"]: conn["out_msgs"] for conn in connections if conn.get("name", "").startswith(name)}
    assert delivered[f"{name}/own-{families[0]}"] >= 50
    assert delivered[f"{name}/own-{families[1]}"] >= 50
    # The bus's own connection carried its requests' replies only, none of the deliveries.
    assert delivered[name] < 50
    assert handled == dict.fromkeys(families, 50)


def _connections(server: NatsServer) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection(server.host, server.monitor_port, timeout=5)
    try:
        conn.request("GET", "/connz?limit=1024")
        connections: list[dict[str, Any]] = json.load(conn.getresponse())["connections"]
    finally:
        conn.close()
    return connections
