"""The fault suite, orders that rest: execution SIGKILLed while limit and stop orders rest and partly filled, the
rest of a recorded day published while it is down, then restarted. Its open orders, their partial fills and the
position must come back exactly, and nothing may fill twice: checked against the independent computation of
what each order comes to (tests/support/order_scenarios.py).

Then the lockstep: a closed-loop strategy resting, moving and canceling orders (RestsLimits), and execution, each
SIGKILLed mid-replay and restarted: the orders, cancels, replaces, fills, rows and position are exactly the
backtest's, itself held to the independent reference (tests/support/lockstep.py)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import asyncpg
import pytest

from rrr.shared.bus import Bus
from rrr.shared.positions import to_decimal
from tests.support import lockstep
from tests.support import order_scenarios as scenario
from tests.support.services import client_bus
from tests.support.system import FAST_HEARTBEATS, System, finish
from tests.support.waiting import wait_until


@pytest.fixture
def system_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The scenarios' venue with execution's snapshot interval given, or a whole environment given."""
    if isinstance(request.param, dict):
        return request.param
    return {**FAST_HEARTBEATS, **scenario.VENUE_ENV, "RRR_EXECUTION_SNAPSHOT_EVERY_MS": request.param}


@pytest.fixture
async def bus(system: System) -> AsyncIterator[Bus]:
    async with client_bus(system.nats_url) as connected:
        yield connected


@pytest.mark.parametrize(
    "system_env", ["50", "600000"], ids=["from-a-snapshot-and-events", "from-the-events-alone"], indirect=True
)
async def test_execution_killed_with_resting_orders_brings_them_back_exactly_and_fills_nothing_twice(
    system: System, bus: Bus, system_env: dict[str, str], tmp_path: Path
) -> None:
    # The day in two files, the first 200 quotes and the rest: killed in between, with orders resting.
    first_part, second_part = scenario.split_day(tmp_path, 200)
    await system.start("execution-0", "persistence-0")
    # Four quotes a message: matched one message after the other.
    replay = system.replay(first_part, "--replay-window", "4")
    first = await scenario.first_quote(bus)
    await scenario.send_orders(bus, first, "kill")
    await finish(replay)
    sent = len(scenario.ORDERS)

    def _first_part_done() -> bool:
        # One heartbeat that has every order handled (open, or finished one way or another) and every message of
        # the first part matched: what it holds is then what execution holds when killed.
        c = system.counters("execution-0")
        handled = c.get("open_orders", 0) + sum(
            c.get(name, 0) for name in ("orders_filled", "orders_rejected", "orders_canceled", "orders_expired")
        )
        return c.get("market_messages", 0) >= 50 and handled == sent

    await wait_until(_first_part_done, 60, "every order handled and the first 200 quotes matched")
    fills_at_kill = await scenario.fill_events(bus, "kill")
    before = system.counters("execution-0")
    system.procs["execution-0"].kill()
    # The rest of the day is published while execution is down.
    await finish(system.replay(second_part, "--replay-window", "4"))
    await system.start("execution-0")
    restored = system.counters("execution-0")
    got, want = await scenario.wait_for_outcomes(system.database_url, "kill", timeout_s=60)

    fills = await scenario.fill_events(bus, "kill")
    expected_fills = sum(len(w.fills) for w in want.values())
    position = await _position(system.database_url)
    print(
        f"\n[execution kill -9 with resting orders, snapshot every {system_env['RRR_EXECUTION_SNAPSHOT_EVERY_MS']} ms]"
        f"\nwhen killed: {len(fills_at_kill)} fills, {before.get('open_orders', 0)} open orders; after the restart: "
        f"restored_events={restored.get('restored_events', 0)} open_orders={restored.get('open_orders', 0)}"
        f"\n{scenario.report(got, want)}"
        f"\nfill events on the stream: {len(fills)} (distinct {len({f.id for f in fills})}, expected {expected_fills})"
        f"\nposition stored {position}, from the fills in stream order {_on_the_wire(scenario.position_of(fills))}"
    )
    assert before.get("open_orders", 0) == restored.get("open_orders", 0) > 1
    assert got == want
    assert len(fills) == len({f.id for f in fills}) == expected_fills
    assert position == _on_the_wire(scenario.position_of(fills))


async def _position(dsn: str) -> tuple[Decimal, Decimal, Decimal, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT qty, avg_price, realized_pnl, version FROM positions WHERE symbol = $1", scenario.SYMBOL
        )
    finally:
        await conn.close()
    assert row is not None
    return row[0], row[1], row[2], int(row[3])


def _on_the_wire(position: tuple[Fraction, Fraction, Fraction, int]) -> tuple[Decimal, Decimal, Decimal, int]:
    """A position as its updates carry it (at most 12 decimal places, see rrr.shared.positions)."""
    qty, avg, realized, fills = position
    return to_decimal(qty), to_decimal(avg), to_decimal(realized), fills


# -- the lockstep: a strategy with resting orders, and execution, SIGKILLed mid-replay ------------------------------

ROOT = Path(__file__).parents[2]
LOCKSTEP_ENV = {
    **FAST_HEARTBEATS, **lockstep.VENUE_ENV, **lockstep.strategy_env(lockstep.BTCUSDT), "PYTHONPATH": str(ROOT),
}  # fmt: skip


async def _lockstep_exact(bus: Bus, system: System) -> tuple[lockstep.Record, lockstep.Rows, lockstep.Rows]:
    """Wait until the streams and PostgreSQL hold what the backtest says of RestsLimits over the BTC/USDT day (held
    itself to the independent reference); return what they hold, and the rows expected."""
    result = lockstep.expected(lockstep.BTCUSDT)
    lockstep.check_against_reference(
        result, lockstep.reference(lockstep.BTCUSDT, str(lockstep.FEE_BPS), str(lockstep.SLIPPAGE_BPS)),
        lockstep.BTCUSDT,
    )  # fmt: skip
    want, want_rows = lockstep.from_backtest(result), lockstep.rows_of(result)
    got, rows = lockstep.Record(), lockstep.Rows()

    async def _done() -> bool:
        nonlocal got, rows
        got = await lockstep.from_streams(bus, "BTCUSDT")
        rows = await lockstep.stored_rows(system.database_url, "rests", "BTCUSDT")
        return not want.differences(got) and rows == want_rows

    await wait_until(
        _done, 120, "the backtest's orders, fills and rows", describe=lambda: want.differences(got) or rows,
        interval_s=0.5,
    )  # fmt: skip
    return got, rows, want_rows


def _lockstep_report(scenario_name: str, got: lockstep.Record, rows: lockstep.Rows, want: lockstep.Rows) -> str:
    missing = len(set(want.fills) - set(rows.fills)) + len(set(want.orders) - set(rows.orders))
    unexpected = len(set(rows.fills) - set(want.fills)) + len(set(rows.orders) - set(want.orders))
    return (
        f"\n[{scenario_name}]\nstreams: {got.summary()} (copies of a message held twice: {got.copies})"
        f"\nrows: orders stored={len(rows.orders)} expected={len(want.orders)}, fills stored={len(rows.fills)} "
        f"expected={len(want.fills)}, order events stored={rows.events} expected={want.events}; missing={missing} "
        f"unexpected={unexpected}\nposition stored={rows.position} expected={want.position}"
    )


@pytest.mark.parametrize("system_env", [LOCKSTEP_ENV], ids=["lockstep"], indirect=True)
async def test_a_strategy_with_resting_orders_killed_mid_replay_sends_and_gets_exactly_an_uninterrupted_runs(
    system: System, bus: Bus
) -> None:
    await system.start("execution-0", "persistence-0")
    # A snapshot every 10 ms and one message a batch; killed after 300 messages handled (quotes, four a message,
    # and its orders' events and execution's progress): about a third into the day, with orders resting.
    crashing = {"RRR_STRATEGY_SNAPSHOT_EVERY_MS": "10", "RRR_STRATEGY_BATCH_SIZE": "1"}
    await system.start("strategy-0", extra_env=crashing, crash_before_ack=300)
    replay = system.replay(lockstep.BTCUSDT, "--replay-window", "4")
    assert await system.wait_exit(system.procs["strategy-0"], 60) == -signal.SIGKILL
    at_kill = system.counters("execution-0")
    await system.start("strategy-0")
    await finish(replay)
    got, rows, want = await _lockstep_exact(bus, system)
    counters = system.counters("strategy-0")
    print(
        _lockstep_report("strategy with resting orders kill -9", got, rows, want)
        + f"\nwhen killed: execution held {at_kill.get('open_orders', 0)} open orders; restarted strategy: "
        f"markers={counters.get('lockstep_markers', 0)} events delivered={counters.get('order_events_delivered', 0)} "
        f"stale={counters.get('order_events_stale', 0)}; execution: stale markers="
        f"{system.counters('execution-0').get('lockstep_markers_stale', 0)}"
    )
    assert rows == want
    assert counters.get("strategies_failed", 0) == 0


@pytest.mark.parametrize(
    "system_env",
    [{**LOCKSTEP_ENV, "RRR_EXECUTION_SNAPSHOT_EVERY_MS": every} for every in ("50", "600000")],
    ids=["from-a-snapshot-and-events", "from-the-events-alone"],
    indirect=True,
)
async def test_execution_killed_mid_replay_with_a_lockstep_strategys_orders_resting_fills_exactly_once(
    system: System, bus: Bus, system_env: dict[str, str]
) -> None:
    await system.start("strategy-0", "persistence-0")
    # Killed after 200 commands handled (orders, cancels, replaces and markers): the strategy waits meanwhile, the
    # rest of the day is published, and the restarted execution takes its gates back from its snapshot and its
    # progress events.
    await system.start("execution-0", crash_before_ack=200)
    replay = system.replay(lockstep.BTCUSDT, "--replay-window", "4")
    assert await system.wait_exit(system.procs["execution-0"], 60) == -signal.SIGKILL
    await system.start("execution-0")
    restored = system.counters("execution-0")
    await finish(replay)
    got, rows, want = await _lockstep_exact(bus, system)
    print(
        _lockstep_report(
            "execution kill -9 under a lockstep strategy, snapshot every "
            f"{system_env['RRR_EXECUTION_SNAPSHOT_EVERY_MS']} ms", got, rows, want,
        )
        + f"\nrestarted execution: restored_events={restored.get('restored_events', 0)} "
        f"open_orders={restored.get('open_orders', 0)} gates={restored.get('lockstep_gates', 0)}; then "
        f"duplicate_orders={system.counters('execution-0').get('duplicate_orders', 0)} "
        f"stale markers={system.counters('execution-0').get('lockstep_markers_stale', 0)}"
    )  # fmt: skip
    assert rows == want
    assert restored.get("lockstep_gates", 0) == 1
