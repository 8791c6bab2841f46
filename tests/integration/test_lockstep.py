"""The strategy and execution services in lockstep against a real nats-server: a strategy with resting orders gets
exactly the backtest's orders, cancels, replaces, fills and position, however the quotes are batched and whichever
service runs ahead; and what an attacker or a broken peer sends on the lockstep subjects changes nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest

from rrr.deploy import backtest
from rrr.execution import app as execution_app
from rrr.execution import lockstep as execution_lockstep
from rrr.execution.config import ExecutionConfig
from rrr.execution.market import MarketCopy
from rrr.market_data.feeds import replay_file
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import MatchedThrough, StrategyAt, encode
from rrr.strategy import app as strategy_app
from rrr.strategy.config import StrategyConfig
from tests.support import lockstep
from tests.support.factories import unique_symbol
from tests.support.services import Heartbeats, RunningService, running_service
from tests.support.streams import stream_messages
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


def _execution(nats_url: str) -> ExecutionConfig:
    return ExecutionConfig(
        nats_url=nats_url, heartbeat_ms=100, fee_bps=lockstep.FEE_BPS, slippage_bps=lockstep.SLIPPAGE_BPS
    )


def _strategy(nats_url: str, path: Path, batch_size: int = 512) -> StrategyConfig:
    env = lockstep.strategy_env(path)
    return StrategyConfig(
        nats_url=nats_url, heartbeat_ms=100, strategy=env["RRR_STRATEGY_STRATEGY"], params=env["RRR_STRATEGY_PARAMS"],
        strategy_id=env["RRR_STRATEGY_STRATEGY_ID"], batch_size=batch_size,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _maybe(
    run: bool, main: object, config: object, heartbeats: Heartbeats
) -> AsyncIterator[RunningService | None]:
    if not run:
        yield None
        return
    async with running_service(main, config, heartbeats) as service:  # type: ignore[arg-type]
        yield service


async def _same_as(bus: Bus, symbol: str, want: lockstep.Record, timeout_s: float = 90) -> lockstep.Record:
    """Wait until the streams hold for ``symbol`` what the backtest made; return what they hold."""
    got = lockstep.Record()

    async def _done() -> bool:
        nonlocal got
        got = await lockstep.from_streams(bus, symbol)
        return not want.differences(got)

    await wait_until(
        _done, timeout_s, f"the backtest's orders and fills of {symbol}", describe=lambda: want.differences(got),
        interval_s=0.3,
    )  # fmt: skip
    return got


@pytest.mark.parametrize(
    ("file", "order", "window", "batch_size"),
    [
        (lockstep.BTCUSDT, "together", 512, 512),
        (lockstep.BTCUSDT, "together", 1, 1),
        (lockstep.BTCUSDT, "strategy_late", 64, 512),
        (lockstep.BTCUSDT, "execution_late", 8, 16),
        (lockstep.EURUSD, "together", 512, 512),
    ],
    ids=["btcusdt", "btcusdt-one-quote-a-message", "btcusdt-strategy-late", "btcusdt-execution-late", "eurusd"],
)
async def test_a_strategy_with_resting_orders_gets_exactly_the_backtests_orders_and_fills_whatever_the_timing(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path, file: Path, order: str, window: int,
    batch_size: int,
) -> None:  # fmt: skip
    symbol = unique_symbol("LOCK")
    path = lockstep.renamed(file, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    execution = _execution(nats_url)
    strategy = _strategy(nats_url, path, batch_size)
    async with (
        _maybe(order != "execution_late", execution_app.run, execution, heartbeats) as first,
        _maybe(order != "strategy_late", strategy_app.run, strategy, heartbeats) as second,
    ):
        # With one of them not running yet, the whole day is published before it starts: it runs behind.
        await replay_file(bus, path, shards=1, window=window, skip_bad_rows=False)
        async with (
            _maybe(order == "strategy_late", strategy_app.run, strategy, heartbeats) as third,
            _maybe(order == "execution_late", execution_app.run, execution, heartbeats) as fourth,
        ):
            got = await _same_as(bus, symbol, want)
            running = [s for s in (first, second, third, fourth) if s is not None]
            counters = {s.instance: s.counters() for s in running}
    print(f"\n[{file.name} {order}, replay window {window}, strategy batch {batch_size}]\n{got.summary()}")
    assert not want.differences(got)
    assert got.copies == 0
    assert got.markers > 0
    assert got.progress > 0
    assert not any(c.get("lockstep_markers_refused", 0) for c in counters.values())


@pytest.mark.parametrize("order", ["execution_late", "together"])
async def test_a_strategy_behind_the_matchers_copy_is_matched_from_the_stream_read_back_a_chunk_at_a_time(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    # The matcher keeps the newest 8 messages here (4,096 in the service) and a gate reads the stream back three at
    # a time: execution started after the day was published, or the day at one quote a message with the matcher
    # running far ahead of the strategy, which waits for execution at every quote.
    monkeypatch.setattr(execution_lockstep, "_READ_AHEAD", 3)
    monkeypatch.setattr(MarketCopy.__init__, "__defaults__", (8, 16 * 1024 * 1024))
    symbol = unique_symbol("BACK")
    path = lockstep.renamed(lockstep.BTCUSDT, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    async with (
        running_service(strategy_app.run, _strategy(nats_url, path, batch_size=1), heartbeats),
        _maybe(order == "together", execution_app.run, _execution(nats_url), heartbeats) as first,
    ):
        await replay_file(bus, path, shards=1, window=1 if order == "together" else 4, skip_bad_rows=False)
        async with _maybe(order == "execution_late", execution_app.run, _execution(nats_url), heartbeats) as late:
            got = await _same_as(bus, symbol, want)
            execution = first or late
            assert execution is not None
            counters = execution.counters()
    assert not want.differences(got)
    assert counters.get("lockstep_read_failures", 0) == 0
    assert counters["market_messages_held"] <= 8
    assert counters["lockstep_read_back"] > 0


async def test_a_strategy_that_sends_and_forgets_sends_no_marker_and_never_waits(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    symbol = unique_symbol("SMA")
    path = lockstep.renamed(lockstep.EURUSD, tmp_path, symbol)
    strategy = StrategyConfig(nats_url=nats_url, heartbeat_ms=100)
    async with (
        running_service(execution_app.run, _execution(nats_url), heartbeats),
        running_service(strategy_app.run, strategy, heartbeats) as service,
    ):
        await replay_file(bus, path, shards=1, window=512, skip_bad_rows=False)
        counters = await service.wait_for_counter("quotes", 9500, timeout_s=60)
        want = backtest.run([path], [strategy.load()[1][0]])
        got = lockstep.Record()

        async def _all_sent() -> bool:
            nonlocal got
            got = await lockstep.from_streams(bus, symbol)
            return len(got.orders) >= len(want.orders)

        await wait_until(_all_sent, 30, f"{len(want.orders)} orders", describe=got.summary, interval_s=0.3)
    assert [o["id"] for o in got.orders] == [o.id for o in want.orders]
    assert got.markers == got.progress == 0
    assert counters.get("order_outcome_waits", 0) == counters.get("lockstep_markers", 0) == 0


# -- attackers and broken peers -----------------------------------------------------------------------------------


async def _publish_raw(nats_url: str, subject: str, payload: bytes) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(subject, payload)
    finally:
        await nc.close()


async def test_markers_naming_no_quote_of_the_shard_or_too_far_are_refused_with_the_reason_and_change_nothing(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    symbol = unique_symbol("ATK")
    path = lockstep.renamed(lockstep.BTCUSDT, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    async with running_service(execution_app.run, _execution(nats_url), heartbeats) as execution:
        report = await replay_file(bus, path, shards=1, window=64, skip_bad_rows=False)
        last = (await bus.js.stream_info("RRR_MD")).state.last_seq
        ts = lockstep.quote_rows_ts(path)
        forged = [
            # A sequence far ahead of the market data: nothing there.
            StrategyAt(id="f1", ts_event=ts[0], ts_init=1, shard=0, strategies=["rests"], quote_seq=last + 10**9),
            # A real message, but the wrong time: not a quote the strategy read.
            StrategyAt(id="f2", ts_event=ts[0] + 1, ts_init=1, shard=0, strategies=["rests"], quote_seq=last),
            # An index beyond the batch.
            StrategyAt(id="f3", ts_event=ts[-1], ts_init=1, shard=0, strategies=["rests"], quote_seq=last,
                       quote_index=4000),
        ]  # fmt: skip
        for marker in forged:
            await bus.publish_persistent(subjects.step(subjects.ORDER_COMMAND, 0), marker)
        # Garbage and a marker on another shard's subject: dead-lettered by the consumer, never handed over.
        await _publish_raw(nats_url, subjects.step(subjects.ORDER_COMMAND, 0), b"\xc1 not msgpack")
        await _publish_raw(
            nats_url,
            subjects.step(subjects.ORDER_COMMAND, 0),
            encode(msgspec.structs.replace(forged[0], id="f4", shard=3)),
        )
        counters = await execution.wait_for_counters(
            lambda c: c.get("lockstep_markers_refused", 0) >= 3 and c.get("mismatched", 0) + c.get("malformed", 0) >= 2,
            "the forged markers refused",
        )
        assert counters.get("lockstep_markers", 0) == 0
        assert counters.get("lockstep_gates", 0) == 0
        # The strategy, started now, trades the day exactly as the backtest says.
        async with running_service(strategy_app.run, _strategy(nats_url, path), heartbeats):
            got = await _same_as(bus, symbol, want)
    assert report.published == len(lockstep.quote_rows_ts(path))
    assert not want.differences(got)


async def test_a_marker_naming_another_strategy_or_a_stale_one_moves_nothing_it_should_not(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    # The strategy identity may speak for any strategy name (as it may send orders under any): a marker for a name
    # that holds no order opens a gate with nothing behind it; one for the running strategy's name that is behind
    # its gate is stale. Neither changes what the strategy gets.
    symbol = unique_symbol("OTH")
    path = lockstep.renamed(lockstep.BTCUSDT, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    async with running_service(execution_app.run, _execution(nats_url), heartbeats) as execution:
        await replay_file(bus, path, shards=1, window=64, skip_bad_rows=False)
        first = await bus.js.get_msg("RRR_MD", subject="md.quotes.0.replay", seq=1, next=True)
        ts = lockstep.quote_rows_ts(path)
        other = StrategyAt(id="o1", ts_event=ts[0], ts_init=1, shard=0, strategies=["someone_else"],
                           quote_seq=first.seq or 0)  # fmt: skip
        await bus.publish_persistent(subjects.step(subjects.ORDER_COMMAND, 0), other)
        await execution.wait_for_counter("lockstep_markers", 1)
        async with running_service(strategy_app.run, _strategy(nats_url, path), heartbeats):
            got = await _same_as(bus, symbol, want)
            stale = StrategyAt(id="o2", ts_event=ts[0], ts_init=1, shard=0, strategies=["rests"],
                               quote_seq=first.seq or 0)  # fmt: skip
            await bus.publish_persistent(subjects.step(subjects.ORDER_COMMAND, 0), stale)
            counters = await execution.wait_for_counter("lockstep_markers_stale", 1)
            again = await lockstep.from_streams(bus, symbol)
    assert not want.differences(got)
    assert not want.differences(again)
    assert counters["lockstep_gates"] == 2


async def test_a_forged_or_broken_progress_event_is_dead_lettered_or_ignored_by_the_strategy(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    # Only execution may publish on evt.order.> (tests/integration/test_security.py); here a peer with that right
    # misbehaves: garbage and a progress of another shard are dead-lettered, a progress for a strategy the
    # instance does not run is dropped, and the strategy still trades exactly.
    symbol = unique_symbol("PRG")
    path = lockstep.renamed(lockstep.BTCUSDT, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    progress = MatchedThrough(
        id="x1", ts_event=1, ts_init=1, shard=0, strategy="nobody", marker_seq=10**12, through_seq=10**12
    )
    await _publish_raw(nats_url, subjects.step(subjects.ORDER_EVENT, 0), b"\x93garbage")
    await _publish_raw(
        nats_url, subjects.step(subjects.ORDER_EVENT, 0), encode(msgspec.structs.replace(progress, shard=5))
    )
    await bus.publish_persistent(subjects.step(subjects.ORDER_EVENT, 0), progress)
    async with (
        running_service(execution_app.run, _execution(nats_url), heartbeats),
        running_service(strategy_app.run, _strategy(nats_url, path), heartbeats) as strategy,
    ):
        await replay_file(bus, path, shards=1, window=64, skip_bad_rows=False)
        got = await _same_as(bus, symbol, want)
        counters = await strategy.wait_for_counters(
            lambda c: c.get("malformed", 0) + c.get("mismatched", 0) >= 2, "the broken progress dead-lettered"
        )
    assert not want.differences(got)
    assert counters.get("strategies_failed", 0) == 0


async def test_oversized_and_malformed_commands_are_refused_and_the_strategy_trades_on(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, tmp_path: Path
) -> None:
    symbol = unique_symbol("BIG")
    path = lockstep.renamed(lockstep.BTCUSDT, tmp_path, symbol)
    want = lockstep.from_backtest(lockstep.expected(path))
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        # Beyond the stream's largest message: refused by JetStream to its publisher, at once.
        with pytest.raises(nats.js.errors.APIError, match="maximum"):
            await js.publish(subjects.order_command(symbol, 1), b"\x00" * (1024 * 1024 - 1024))
        # A cancel without an order id, a replace changing nothing, a marker naming 40 strategies.
        for bad in (
            {"type": "cancel_order.v1", "id": "c", "ts_event": 1, "ts_init": 1, "strategy": "rests", "symbol": symbol},
            {"type": "replace_order.v1", "id": "r", "ts_event": 1, "ts_init": 1, "strategy": "rests",
             "symbol": symbol, "client_order_id": "rests-x"},
        ):  # fmt: skip
            await js.publish(subjects.order_command(symbol, 1), msgspec.msgpack.encode(bad))
        await js.publish(
            subjects.step(subjects.ORDER_COMMAND, 0),
            msgspec.msgpack.encode(
                {"type": "strategy_at.v1", "id": "m", "ts_event": 1, "ts_init": 1, "shard": 0,
                 "strategies": [f"s{i}" for i in range(40)], "quote_seq": 1}
            ),
        )  # fmt: skip
    finally:
        await nc.close()
    async with (
        running_service(execution_app.run, _execution(nats_url), heartbeats) as execution,
        running_service(strategy_app.run, _strategy(nats_url, path), heartbeats),
    ):
        await replay_file(bus, path, shards=1, window=64, skip_bad_rows=False)
        got = await _same_as(bus, symbol, want)
        counters = await execution.wait_for_counter("malformed", 3)
    letters = await stream_messages(bus.js, "RRR_DLQ", "dlq.cmd.order.>")
    assert len(letters) >= 3
    assert not want.differences(got)
    assert counters.get("lockstep_markers_refused", 0) == 0
