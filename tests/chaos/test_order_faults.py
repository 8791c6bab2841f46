"""The fault suite, orders that rest: execution SIGKILLed while limit and stop orders rest and partly filled, the
rest of a recorded day published while it is down, then restarted. Its open orders, their partial fills and the
position must come back exactly, and nothing may fill twice: checked against the independent computation of
what each order comes to (tests/support/order_scenarios.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import asyncpg
import pytest

from rrr.shared.bus import Bus
from rrr.shared.positions import to_decimal
from tests.support import order_scenarios as scenario
from tests.support.services import client_bus
from tests.support.system import FAST_HEARTBEATS, System, finish
from tests.support.waiting import wait_until


@pytest.fixture
def system_env(request: pytest.FixtureRequest) -> dict[str, str]:
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
    await wait_until(
        lambda: system.counters("execution-0").get("market_messages", 0) >= 50, 60, "the first 200 quotes matched"
    )
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
