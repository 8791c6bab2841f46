"""Risk against a real nats-server: trading states set by ``rrr-control`` and obeyed by every shard, the
account-wide limits across shards, and the day's loss halting the account by itself."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rrr.deploy import control
from rrr.execution import app
from rrr.execution.config import ExecutionConfig
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import (
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderUpdate,
    SubmitOrder,
    order_event_decoder,
    shard_risk_decoder,
    trading_state_decoder,
)
from tests.support.factories import make_order, make_quote, unique_symbol
from tests.support.services import Heartbeats, running_service
from tests.support.streams import decode_all, stream_messages
from tests.support.waiting import wait_until

D = Decimal
T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


@pytest.fixture
def config(nats_url: str) -> ExecutionConfig:
    return ExecutionConfig(nats_url=nats_url, heartbeat_ms=100, max_order_qty=D(1000), max_notional_quote=D(10**7))


async def _quote(bus: Bus, symbol: str, bid: str, ask: str, n: int, shards: int = 1) -> int:
    quote = make_quote(symbol, bid=bid, ask=ask, ts_event=T0 + n * SECOND)
    return (await bus.publish_persistent(subjects.quote(symbol, shards), quote)).seq


async def _send(
    bus: Bus, symbol: str, seq: int, n: int, shards: int = 1, quote_n: int | None = None, **fields: Any
) -> SubmitOrder:
    """Send the ``n``-th order (event time T0 + n s), naming the quote at ``seq`` (the ``quote_n``-th; n)."""
    order = make_order(symbol, quote_bid="100", quote_ask="100.5", **fields)
    quote_ts = T0 + (n if quote_n is None else quote_n) * SECOND
    order = msgspec.structs.replace(order, quote_seq=seq, quote_ts=quote_ts, ts_event=T0 + n * SECOND + 1)
    await bus.publish_persistent(subjects.order_command(symbol, shards), order)
    return order


async def _events(bus: Bus, symbol: str, shards: int = 1) -> list[OrderUpdate]:
    msgs = await stream_messages(bus.js, "RRR_EVT", subjects.order_event(symbol, shards))
    return decode_all(msgs, order_event_decoder)


async def _outcome(bus: Bus, order: SubmitOrder, shards: int = 1) -> OrderUpdate:
    """Wait for ``order``'s acceptance or rejection; return it."""
    found: list[OrderUpdate] = []

    async def _decided() -> bool:
        found[:] = [
            e
            for e in await _events(bus, order.symbol, shards)
            if e.client_order_id == order.id and isinstance(e, OrderAccepted | OrderRejected)
        ]
        return bool(found)

    await wait_until(_decided, 10, f"the acceptance or rejection of {order.id}")
    return found[0]


async def _canceled(bus: Bus, order: SubmitOrder) -> OrderCanceled:
    found: list[OrderCanceled] = []

    async def _done() -> bool:
        found[:] = [
            e
            for e in await _events(bus, order.symbol)
            if isinstance(e, OrderCanceled) and e.client_order_id == order.id
        ]
        return bool(found)

    await wait_until(_done, 10, f"the cancel of {order.id}")
    return found[0]


async def test_a_halt_cancels_the_open_orders_refuses_new_ones_and_a_resume_lets_them_through(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("HALT")
    async with running_service(app.run, config, heartbeats) as execution:
        seq = await _quote(bus, symbol, "100", "100.5", 0)
        resting = await _send(bus, symbol, seq, 0, qty=2, order_type="limit", limit_price="99")
        assert isinstance(await _outcome(bus, resting), OrderAccepted)

        halted = await control.set_state(bus, "halted", reason="fat finger on the desk")
        canceled = await _canceled(bus, resting)
        refused = await _outcome(bus, await _send(bus, symbol, seq, 1, quote_n=0, qty=1))
        await execution.wait_for_counters(lambda c: c.get("trading_halted") == 1, "the halt in the heartbeat")

        resumed = await control.set_state(bus, "active")
        accepted = await _outcome(bus, await _send(bus, symbol, seq, 2, quote_n=0, qty=1))

    assert (halted.key, halted.state, halted.missing) == ("account", "halted", [])
    assert halted.confirmed[0][1] == 1  # its one open order canceled
    assert "halted account (revision" in halted.describe()
    assert canceled.reason == "trading halted (account): fat finger on the desk"
    assert isinstance(refused, OrderRejected)
    assert refused.reason == "trading halted (account): fat finger on the desk"
    assert resumed.missing == []
    assert isinstance(accepted, OrderAccepted)


async def test_reducing_a_strategy_lets_through_only_what_reduces_its_position_as_reduce_only(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("RED")
    async with running_service(app.run, config, heartbeats):
        seq = await _quote(bus, symbol, "100", "100.5", 0)
        bought = await _outcome(bus, await _send(bus, symbol, seq, 0, qty=3, strategy="desk"))
        adding = await _send(
            bus, symbol, seq, 1, quote_n=0, qty=1, strategy="desk", order_type="limit", limit_price="99"
        )
        exiting = await _send(
            bus, symbol, seq, 2, quote_n=0, qty=1, strategy="desk", side="sell", order_type="limit",
            limit_price="105", reduce_only=True,
        )  # fmt: skip
        assert isinstance(await _outcome(bus, exiting), OrderAccepted)

        reducing = await control.set_state(bus, "reducing", strategy="desk", reason="end of day")
        canceled = await _canceled(bus, adding)
        more = await _outcome(bus, await _send(bus, symbol, seq, 3, quote_n=0, qty=1, strategy="desk"))
        less = await _outcome(bus, await _send(bus, symbol, seq, 4, quote_n=0, qty=2, strategy="desk", side="sell"))
        other = await _outcome(bus, await _send(bus, symbol, seq, 5, quote_n=0, qty=1, strategy="other"))

    assert isinstance(bought, OrderAccepted)
    assert (reducing.key, reducing.confirmed[0][1]) == ("strategy.desk", 1)
    assert canceled.reason == "trading reducing (strategy.desk): end of day"
    assert isinstance(more, OrderRejected)
    assert more.reason == (
        f"trading reducing (strategy.desk): a buy of 1 does not reduce the position ({symbol} 3, strategy desk 3): "
        "end of day"
    )
    assert isinstance(less, OrderAccepted)
    assert less.reduce_only
    assert isinstance(other, OrderAccepted)
    assert not [
        e for e in await _events(bus, symbol) if isinstance(e, OrderCanceled) and e.client_order_id == exiting.id
    ]


async def test_the_account_wide_gross_exposure_limit_holds_across_shards(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    first, second = unique_symbol("GA", shard=0, shards=2), unique_symbol("GB", shard=1, shards=2)
    configs = [
        ExecutionConfig(
            nats_url=nats_url, heartbeat_ms=100, shard=shard, shards=2, max_gross_exposure_quote=D(1000),
            max_order_qty=D(1000), max_notional_quote=D(10**7),
        )
        for shard in (0, 1)
    ]  # fmt: skip
    async with (
        running_service(app.run, configs[0], heartbeats),
        running_service(app.run, configs[1], heartbeats) as other,
    ):
        seq = await _quote(bus, first, "100", "100", 0, shards=2)
        assert isinstance(
            await _outcome(bus, await _send(bus, first, seq, 0, shards=2, qty=8), shards=2), OrderAccepted
        )
        # Shard 0's holdings in the account view, then read by shard 1.
        kv = await bus.js.key_value(subjects.RISK_BUCKET)
        revision = 0

        async def _held() -> bool:
            nonlocal revision
            entry = await kv.get(subjects.risk_key(0))
            revision = entry.revision or 0
            return any(c.gross == 800 for c in shard_risk_decoder.decode(entry.value or b"").currencies)

        await wait_until(_held, 10, "shard 0's gross exposure of 800 in the account view")
        await other.wait_for_counters(lambda c: c.get("account_view_revision", 0) >= revision, "shard 1 to read it")
        seq = await _quote(bus, second, "100", "100", 1, shards=2)
        too_much = await _outcome(bus, await _send(bus, second, seq, 1, shards=2, qty=3), shards=2)
        enough = await _outcome(bus, await _send(bus, second, seq, 2, shards=2, quote_n=1, qty=2), shards=2)

    assert isinstance(too_much, OrderRejected)
    assert too_much.reason == (
        "account gross exposure would be 1100 quote across 2 shards, beyond max_gross_exposure_quote 1000"
    )
    assert isinstance(enough, OrderAccepted)


async def test_a_loss_today_beyond_its_limit_halts_the_account_by_itself(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    config = msgspec.structs.replace(config, max_daily_loss_quote=D(5))
    symbol = unique_symbol("LOSS")
    async with running_service(app.run, config, heartbeats) as execution:
        seq = await _quote(bus, symbol, "100", "100.5", 0)
        assert isinstance(await _outcome(bus, await _send(bus, symbol, seq, 0, qty=10)), OrderAccepted)
        resting = await _send(bus, symbol, seq, 1, quote_n=0, qty=1, order_type="limit", limit_price="90")
        await _outcome(bus, resting)
        # Long 10 at 100.5, marked at the mid: 100.25 is a loss of 2.5; then 99.25, a loss of 12.5.
        await _quote(bus, symbol, "99", "99.5", 2)
        canceled = await _canceled(bus, resting)
        refused = await _outcome(bus, await _send(bus, symbol, seq, 3, quote_n=0, qty=1, side="sell"))
        counters = await execution.wait_for_counter("daily_loss_halts", 1)

    state = trading_state_decoder.decode((await (await bus.js.key_value("RRR_TRADING")).get("account")).value or b"")
    day = (T0 + 2 * SECOND) // (86_400 * SECOND)
    reason = f"daily loss 12.5 quote exceeds max_daily_loss_quote 5 (day {day}, across 1 shards)"
    assert (state.state, state.source, state.reason) == ("halted", "daily_loss", reason)
    assert canceled.reason == f"trading halted (account): {reason}"
    assert isinstance(refused, OrderRejected)
    assert refused.reason == f"trading halted (account): {reason}"
    assert counters["daily_loss_halts"] == 1


async def test_a_shard_started_after_a_halt_obeys_it_before_it_handles_any_order(
    config: ExecutionConfig, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("LATER")
    halted = await control.set_state(bus, "halted", symbol=symbol, reason="maintenance", timeout_s=0.2)
    assert halted.missing == [0]  # no shard runs: it is kept for when one starts
    assert "not confirmed by shard 0" in halted.describe()
    seq = await _quote(bus, symbol, "100", "100.5", 0)
    order = await _send(bus, symbol, seq, 0, qty=1)

    async with running_service(app.run, config, heartbeats):
        refused = await _outcome(bus, order)

    assert isinstance(refused, OrderRejected)
    assert refused.reason == f"trading halted (symbol.{symbol}): maintenance"
