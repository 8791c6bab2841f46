"""Scenarios with execution and persistence as processes, each as its own NATS user: limit and stop orders over a
recorded day checked against an independent computation, a strategy breaking each risk limit, and a halt under
load on four shards. Each prints what it measured."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from nats.aio.msg import Msg

from rrr.deploy import control
from rrr.deploy.nats_server import NatsEndpoint
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import (
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    Quote,
    SubmitOrder,
    order_event_decoder,
    trading_applied_decoder,
)
from tests.support import order_scenarios as scenario
from tests.support.factories import make_order, make_quote, unique_symbol
from tests.support.services import client_bus
from tests.support.streams import stream_messages
from tests.support.system import FAST_HEARTBEATS, System, assert_no_permission_violations, finish
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
async def bus(nats_server: NatsEndpoint) -> AsyncIterator[Bus]:
    async with client_bus(nats_server.url) as connected:
        yield connected


def _system(nats_server: NatsEndpoint, database_url: str, tmp_path: Path, shards: int = 1, **env: str) -> System:
    if nats_server.server is None:
        pytest.skip("these scenarios need a nats-server of their own (RRR_NATS_URL is set)")
    return System(
        nats_url=nats_server.url, database_url=database_url, workdir=tmp_path / "services", shards=shards,
        env={**FAST_HEARTBEATS, **scenario.VENUE_ENV, **env}, role_urls=nats_server.urls,
    )  # fmt: skip


async def test_limit_and_stop_orders_over_a_replayed_day_fill_as_an_independent_computation_says(
    nats_server: NatsEndpoint, database_url: str, tmp_path: Path, bus: Bus
) -> None:
    # The first 100 quotes, then the orders sent at the first one: execution has matched those 100 by the time it
    # handles them, and catches each order up on them first. Then the rest of the day, matched as it comes.
    first_part, second_part = scenario.split_day(tmp_path, 100)
    async with _system(nats_server, database_url, tmp_path) as system:
        await system.start("execution-0", "persistence-0")
        await finish(system.replay(first_part, "--replay-window", "8"))
        await wait_until(lambda: system.counters("execution-0").get("market_messages", 0) >= 13, 30, "100 quotes")
        first = await scenario.first_quote(bus)
        await scenario.send_orders(bus, first, "day")
        await finish(system.replay(second_part, "--replay-window", "8"))
        got, want = await scenario.wait_for_outcomes(system.database_url, "day", timeout_s=60)
        # All 57 messages of the day matched, as the heartbeat says.
        await wait_until(lambda: system.counters("execution-0").get("market_messages", 0) >= 57, 30, "57 messages")
        counters = system.counters("execution-0")
    print(f"\n[limit and stop orders over {scenario.BTCUSDT.name}]\n{scenario.report(got, want)}")
    print(
        f"orders caught up on quotes matched before they came: {counters.get('orders_caught_up', 0)}; "
        f"quotes matched as they came: {counters.get('quotes_matched', 0)}"
    )
    assert got == want
    assert counters["orders_caught_up"] == len(scenario.ORDERS)
    assert counters["quotes_matched"] > 0
    fills = await scenario.fill_events(bus, "day")
    assert len({f.id for f in fills}) == len(fills) == sum(len(w.fills) for w in want.values())
    assert_no_permission_violations(nats_server)


async def _outcome(bus: Bus, order: SubmitOrder) -> OrderAccepted | OrderRejected:
    found: list[OrderAccepted | OrderRejected] = []

    async def _decided() -> bool:
        msgs = await stream_messages(bus.js, "RRR_EVT", subjects.order_event(order.symbol, 1))
        events = [order_event_decoder.decode(m.data) for m in msgs]
        found[:] = [e for e in events if isinstance(e, OrderAccepted | OrderRejected) and e.client_order_id == order.id]
        return bool(found)

    await wait_until(_decided, 20, f"the acceptance or rejection of {order.id}")
    return found[0]


async def test_a_strategy_breaking_each_limit_gets_each_order_refused_with_its_reason_stored(
    nats_server: NatsEndpoint, database_url: str, tmp_path: Path, bus: Bus
) -> None:
    instruments = tmp_path / "instruments.toml"
    symbol = unique_symbol("LIM")
    instruments.write_text(f'[[instrument]]\nsymbol = "{symbol}"\ntick = "0.01"\nlot = "0.5"\nquote_currency = "USD"\n')
    limits = {
        "RRR_EXECUTION_INSTRUMENTS": str(instruments),
        "RRR_EXECUTION_MAX_ORDER_QTY": "10",
        "RRR_EXECUTION_MAX_NOTIONAL_QUOTE": "2000",
        "RRR_EXECUTION_PRICE_BAND_BPS": "500",
        "RRR_EXECUTION_MAX_POSITION_QTY": "8",
        "RRR_EXECUTION_MAX_STRATEGY_POSITION_QTY": "6",
        "RRR_EXECUTION_MAX_ORDERS_PER_S": "5",
        "RRR_EXECUTION_MAX_GROSS_EXPOSURE_QUOTE": "600",
        "RRR_EXECUTION_MAX_DAILY_LOSS_QUOTE": "20",
        "RRR_EXECUTION_FEE_BPS": "0",
        "RRR_EXECUTION_SLIPPAGE_BPS": "0",
    }
    quote = make_quote(symbol, bid="100", ask="100", ts_event=1_700_000_000_000_000_000)
    seq = (await bus.publish_persistent(subjects.quote(symbol, 1), quote)).seq
    sent: list[SubmitOrder] = []

    async def _order(
        qty: str, *, strategy: str = "greedy", side: str = "buy", limit: str | None = None, reduce_only: bool = False
    ) -> OrderAccepted | OrderRejected:
        order = make_order(
            symbol, strategy=strategy, side="buy" if side == "buy" else "sell", qty=qty, quote_bid="100",
            quote_ask="100", order_type="limit" if limit else "market", limit_price=limit, reduce_only=reduce_only,
        )  # fmt: skip
        # One order every 100 ms of event time.
        ts = quote.ts_event + (len(sent) + 1) * 100_000_000
        order = msgspec.structs.replace(order, quote_seq=seq, quote_ts=quote.ts_event, ts_event=ts)
        sent.append(order)
        await bus.publish_persistent(subjects.order_command(symbol, 1), order)
        return await _outcome(bus, order)

    async with _system(nats_server, database_url, tmp_path, **limits) as system:
        await system.start("execution-0", "persistence-0")
        outcomes = {
            "tick": await _order("1", limit="99.995"),
            "lot": await _order("0.7"),
            "max_order_qty": await _order("11"),
            "max_notional_quote": await _order("4", limit="501"),
            "price_band_bps": await _order("1", limit="94"),
            "reduce_only": await _order("1", side="sell", reduce_only=True),
            "max_strategy_position_qty": await _order("7"),
            "filled: other long 5": await _order("5", strategy="other"),
            "max_position_qty": await _order("3.5"),
            "filled: greedy long 1": await _order("1"),
            "max_gross_exposure_quote": await _order("1.5"),
        }
        # Five sells of strategy fast within half a second of event time: the sixth is one too many.
        for n in range(5):
            outcomes[f"filled: fast sells 0.5 ({n + 1})"] = await _order("0.5", side="sell", strategy="fast")
        outcomes["max_orders_per_s"] = await _order("0.5", side="sell", strategy="fast")
        # Long 3.5 at 100: a market at 94 is a loss of 21 today, beyond 20: the account halts itself.
        drop = make_quote(symbol, bid="94", ask="94", ts_event=quote.ts_event + 10 * 10**9)
        await bus.publish_persistent(subjects.quote(symbol, 1), drop)
        await wait_until(lambda: system.counters("execution-0").get("trading_halted", 0) >= 1, 20, "the halt")
        outcomes["max_daily_loss_quote"] = await _order("0.5", side="sell")

        conn = await asyncpg.connect(system.database_url)
        try:

            async def _rows() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM orders WHERE symbol = $1", symbol) == len(sent))

            await wait_until(_rows, 20, f"{len(sent)} order rows")
            rows = await conn.fetch("SELECT client_order_id, status, reason FROM orders WHERE symbol = $1", symbol)
        finally:
            await conn.close()

    print(f"\n[each limit broken by a strategy, on {symbol}]")
    for rule, outcome in outcomes.items():
        print(f"{rule:<28} {getattr(outcome, 'reason', 'accepted')}")
    day = drop.ts_event // (86_400 * 10**9)
    loss = f"daily loss 21 USD exceeds max_daily_loss_quote 20 (day {day}, across 1 shards)"
    assert {rule: getattr(o, "reason", None) for rule, o in outcomes.items()} == {
        "tick": f"limit_price 99.995 is not a multiple of {symbol}'s tick 0.01",
        "lot": f"qty 0.7 is not a whole number of {symbol}'s lots of 0.5",
        "max_order_qty": "qty 11 exceeds max_order_qty 10",
        "max_notional_quote": "notional 2004 exceeds max_notional_quote 2000",
        "price_band_bps": (
            "price band: limit_price 94 is 600 bps from the mid 100 of its quote, beyond price_band_bps 500"
        ),
        "reduce_only": f"reduce-only sell: the position in {symbol} is 0, nothing to reduce",
        "max_strategy_position_qty": (
            f"strategy greedy position in {symbol} would be 7 with this and its open orders filled, beyond "
            "max_strategy_position_qty 6"
        ),
        "filled: other long 5": None,
        "max_position_qty": (
            f"position in {symbol} would be 8.5 with this and its open orders filled, beyond max_position_qty 8"
        ),
        "filled: greedy long 1": None,
        "max_gross_exposure_quote": (
            "account gross exposure would be 750 USD across 1 shards, beyond max_gross_exposure_quote 600"
        ),
        **{f"filled: fast sells 0.5 ({n + 1})": None for n in range(5)},
        "max_orders_per_s": (
            f"order rate: strategy fast had 5 orders accepted in the second up to {sent[-2].ts_event}, "
            "max_orders_per_s 5"
        ),
        "max_daily_loss_quote": f"trading halted (account): {loss}",
    }
    # Every order is a row; every refusal is stored with its reason.
    stored = {r["client_order_id"]: (r["status"], r["reason"]) for r in rows}
    expected = {
        o.client_order_id: ("rejected", o.reason) if isinstance(o, OrderRejected) else ("filled", None)
        for o in outcomes.values()
    }
    assert stored == expected
    assert_no_permission_violations(nats_server)


async def test_a_halt_under_load_on_four_shards_is_obeyed_by_all_and_no_order_is_accepted_after_it(
    nats_server: NatsEndpoint, database_url: str, tmp_path: Path, bus: Bus
) -> None:
    shards, per_shard, rate_hz = 4, 4, 400
    symbols = [unique_symbol(f"L{k}", shard=k, shards=shards) for k in range(shards) for _ in range(per_shard)]
    quotes: dict[str, tuple[int, Quote]] = {}
    for symbol in symbols:
        quote = make_quote(symbol, bid="100", ask="100.5", ts_event=1_700_000_000_000_000_000)
        quotes[symbol] = ((await bus.publish_persistent(subjects.quote(symbol, shards), quote)).seq, quote)
    sent: list[tuple[int, SubmitOrder]] = []  # (when sent, the order)
    confirmations: dict[int, int] = {}  # shard: its clock when it applied the halt
    lags: list[int] = []

    async def _confirmed(msg: Msg) -> None:
        applied = trading_applied_decoder.decode(msg.data)
        if applied.state == "halted":
            confirmations.setdefault(applied.shard, applied.ts_init)

    async def _load(until: asyncio.Event) -> None:
        """One order per symbol per round, every 16 / rate_hz seconds: half market, half resting limits."""
        n = 0
        while not until.is_set():
            batch = []
            for symbol in symbols:
                n += 1
                seq, quote = quotes[symbol]
                limit = n % 2 == 0
                order = make_order(
                    symbol, id=f"load-{n}", strategy="load", qty=1, quote_bid="100", quote_ask="100.5",
                    order_type="limit" if limit else "market", limit_price="90" if limit else None,
                )  # fmt: skip
                order = msgspec.structs.replace(
                    order, quote_seq=seq, quote_ts=quote.ts_event, ts_event=quote.ts_event + n
                )
                batch.append(order)
            now = time.perf_counter_ns()
            await bus.publish_persistent_many([bus.prepare(subjects.order_command(o.symbol, shards), o) for o in batch])
            sent.extend((now, o) for o in batch)
            # How old another shard's holdings were when a shard read them, the oldest since its last heartbeat.
            lags.extend(system.counters(f"execution-{k}").get("risk_view_lag_max_us", 0) for k in range(shards))
            # A timer paces the load; nothing is waited for by it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), timeout=len(symbols) / rate_hz)

    async with _system(nats_server, database_url, tmp_path, shards=shards) as system:
        await system.start(*(f"execution-{k}" for k in range(shards)))
        await bus.nc.subscribe(subjects.TRADING_APPLIED_ALL, cb=_confirmed)
        operator = await Bus.connect(nats_server.url_for("control"), service="control", name="halt-under-load")
        stop_load = asyncio.Event()
        load = asyncio.create_task(_load(stop_load))
        try:
            await wait_until(lambda: len(sent) >= rate_hz, 30, "a second of load")
            halted = await control.set_state(operator, "halted", reason="drill under load", timeout_s=10)
            returned = time.perf_counter_ns()
            await wait_until(lambda: sum(1 for t, _ in sent if t > returned) >= rate_hz // 2, 30, "load after it")
        finally:
            stop_load.set()
            await load
            await operator.close()

        async def _handled() -> bool:
            total = sum(system.counters(f"execution-{k}").get("handled", 0) for k in range(shards))
            return total >= len(sent)

        await wait_until(_handled, 60, f"all {len(sent)} orders handled")

    decided: dict[str, OrderAccepted | OrderRejected] = {}
    canceled = 0
    for msg in await stream_messages(bus.js, "RRR_EVT", "evt.order.>"):
        event = order_event_decoder.decode(msg.data)
        if isinstance(event, OrderAccepted | OrderRejected):
            decided[event.client_order_id] = event
        elif isinstance(event, OrderCanceled) and event.reason == "trading halted (account): drill under load":
            canceled += 1
    shard_of = {symbol: subjects.shard_of(symbol, shards) for symbol in symbols}
    accepted_after_halt = [
        e for e in decided.values() if isinstance(e, OrderAccepted) and e.ts_init >= confirmations[shard_of[e.symbol]]
    ]
    after = [o for t, o in sent if t > returned]
    accepted_after_return = [o for o in after if isinstance(decided[o.id], OrderAccepted)]
    before = [o for t, o in sent if t <= returned]
    accepted_before = sum(isinstance(decided[o.id], OrderAccepted) for o in before)
    slowest = max(ms for ms, _ in halted.confirmed.values()) / 1e6
    per_shard = ", ".join(f"{k}: {halted.confirmed[k][0] / 1e6:.1f} ms" for k in sorted(halted.confirmed))
    print(
        f"\n[halt under load, {shards} shards, {len(symbols)} symbols, {rate_hz} orders/s]\n"
        f"orders sent before the halt returned: {len(before)}, accepted {accepted_before}\n"
        f"time to halt everywhere: {slowest:.1f} ms ({per_shard}); open orders canceled by it: {canceled}\n"
        f"orders sent after it: {len(after)}, accepted {len(accepted_after_return)}; "
        f"accepted by a shard after it applied the halt: {len(accepted_after_halt)}\n"
        f"account view: another shard's holdings were at most {max(lags) / 1000:.1f} ms old when read"
    )
    assert halted.missing == []
    assert set(confirmations) == set(range(shards))
    assert len(decided) == len(sent)
    assert accepted_after_halt == []
    assert accepted_after_return == []
    assert all(
        isinstance(decided[o.id], OrderRejected)
        and decided[o.id].reason == "trading halted (account): drill under load"  # type: ignore[union-attr]
        for o in after
    )
    assert canceled == sum(n for _, n in halted.confirmed.values()) > 0
    assert_no_permission_violations(nats_server)
