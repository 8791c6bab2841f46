"""The strategy's quote handler: a quote it cannot compute exactly is refused on its own, nothing else lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import nats.aio.client
from nats.aio.msg import Msg
from opentelemetry import trace

from rrr.shared.bus import Bus, Delivery
from rrr.shared.messages import Quote
from rrr.shared.watermark import Watermark
from rrr.strategy import handlers, loading, snapshots
from rrr.strategy.engine import Engine
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams

PARAMS = SmaCrossParams(fast=1, slow=2)


def _delivery(nc: nats.aio.client.Client, seq: int, bid: str, ask: str) -> Delivery[Quote]:
    quote = Quote(id=f"q{seq}", ts_event=seq, ts_init=seq, symbol="EURUSD", bid=Decimal(bid), ask=Decimal(ask))
    # The reply subject JetStream gives a consumer's message: it carries the stream sequence.
    msg = Msg(nc, subject="md.quote.0.EURUSD", reply=f"$JS.ACK.RRR_MD.strategy.1.{seq}.{seq}.0.0", data=b"")
    return Delivery(msg, quote)


async def test_a_quote_beyond_the_fixed_point_bounds_is_dead_lettered_alone_and_leaves_the_means_as_they_were() -> None:
    nc = nats.aio.client.Client()  # never connected: nothing below publishes or saves
    bus = Bus(nc, service="strategy", tracer=trace.NoOpTracer())
    engine = Engine([loading.spec("sma_cross", "sma_cross", {"fast": PARAMS.fast, "slow": PARAMS.slow})])
    strategies = handlers.Strategies(engine=engine, shards=1)
    saver = snapshots.Saver(bus, "strategy-test", "test", every_s=3600)
    # 20 digits: a valid quote.v1 price, but more digits than fixed-point prices have.
    batch = [
        _delivery(nc, 1, "1.1", "1.2"),
        _delivery(nc, 2, "1.0000000000000000001", "1.1"),
        _delivery(nc, 3, "1.1", "1.3"),
    ]

    rejected = await handlers.on_quotes(strategies, bus, saver, asyncio.Event(), batch)

    assert [(r.delivery, r.reason, r.retry) for r in rejected] == [
        (
            batch[1],
            "strategy: cannot compute q2 exactly: "
            "bid: expected at most 10**18 units of 10**-19, got 1.0000000000000000001",
            False,
        )
    ]
    expected = SmaCross(PARAMS)
    expected.on_quote(11, 12, 1)
    expected.on_quote(11, 13, 1)
    assert engine.runner("sma_cross").strategy.books["EURUSD"].state() == expected.state()  # type: ignore[attr-defined]
    assert strategies.watermarks["EURUSD"] == Watermark(ts=3, ids=["q3"])
    assert strategies.seq == 3
    assert strategies.published
