"""A strategy with resting orders, run by the services as separate processes (each as its own NATS user) over a
replayed day, gets exactly what the backtest gets: the same orders, cancels, replaces, events and fills, the same
rows in PostgreSQL and the same position, at full replay speed with the replay's batches, and one quote at a time
with the strategy reading one message per batch. Each prints what it stored and what the lockstep cost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rrr.deploy.nats_server import NatsEndpoint
from rrr.shared.bus import Bus
from tests.support import lockstep
from tests.support.services import client_bus
from tests.support.system import FAST_HEARTBEATS, System, assert_no_permission_violations, finish
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).parents[2]


async def _exact(bus: Bus, system: System, path: Path, symbol: str, timeout_s: float = 120) -> tuple[str, str]:
    """Wait until the streams and the database hold what the backtest of ``path`` says; return both reports."""
    result = lockstep.expected(path)
    want, want_rows = lockstep.from_backtest(result), lockstep.rows_of(result)
    got, got_rows = lockstep.Record(), lockstep.Rows()

    async def _done() -> bool:
        nonlocal got, got_rows
        got = await lockstep.from_streams(bus, symbol)
        got_rows = await lockstep.stored_rows(system.database_url, "rests", symbol)
        return not want.differences(got) and got_rows == want_rows

    def _seen() -> object:
        return want.differences(got) or (got_rows, want_rows)

    await wait_until(_done, timeout_s, "the backtest's orders, fills and rows", describe=_seen, interval_s=0.5)
    return got.summary(), f"rows: {len(got_rows.orders)} orders, {len(got_rows.fills)} fills, {got_rows.events} events"


@pytest.mark.parametrize(
    ("window", "batch_size"), [("512", "512"), ("1", "1")], ids=["full-speed", "one-quote-at-a-time"]
)
async def test_services_running_a_strategy_with_resting_orders_store_exactly_the_backtests_orders_and_fills(
    nats_server: NatsEndpoint, database_url: str, tmp_path: Path, window: str, batch_size: str
) -> None:
    if nats_server.server is None:
        pytest.skip("this scenario needs a nats-server of its own (RRR_NATS_URL is set)")
    path = lockstep.BTCUSDT
    env = {
        **FAST_HEARTBEATS, **lockstep.VENUE_ENV, **lockstep.strategy_env(path), "PYTHONPATH": str(ROOT),
        "RRR_STRATEGY_BATCH_SIZE": batch_size,
    }  # fmt: skip
    async with (
        System(
            nats_url=nats_server.url, database_url=database_url, workdir=tmp_path / "services", env=env,
            role_urls=nats_server.urls,
        ) as system,
        client_bus(nats_server.url) as bus,
    ):  # fmt: skip
        await system.start("execution-0", "strategy-0", "persistence-0")
        started = time.monotonic()
        await finish(system.replay(path, "--replay-window", window))
        stored, rows = await _exact(bus, system, path, "BTCUSDT")
        took = time.monotonic() - started
        await wait_until(lambda: system.counters("strategy-0").get("quotes", 0) >= 451, 30, "the strategy's heartbeat")
        strategy, execution = system.counters("strategy-0"), system.counters("execution-0")
        persistence = system.counters("persistence-0")
    waits, waited_ms = strategy.get("order_outcome_waits", 0), strategy.get("order_outcome_wait_ms", 0)
    print(
        f"\n[RestsLimits over {path.name}, replay window {window}, strategy batch {batch_size}]\n{stored}\n{rows}\n"
        f"lockstep: {strategy.get('lockstep_markers', 0)} markers, {waits} waits of {waited_ms / max(waits, 1):.2f} "
        f"ms on average; execution applied {execution.get('lockstep_markers', 0)} markers and published "
        f"{execution.get('lockstep_progress', 0)} progress events; persistence passed over "
        f"{persistence.get('progress_skipped', 0)} of them; the whole day stored in {took:.1f} s"
    )
    assert strategy.get("strategies_failed", 0) == 0
    assert execution.get("lockstep_markers_refused", 0) == 0
    assert persistence.get("progress_skipped", 0) > 0
    assert_no_permission_violations(nats_server)
