"""The fault suite: real processes killed, restarted and starved mid-replay, then PostgreSQL checked
row for row against what the quote file implies. Each test prints its exact counts."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import asyncpg
import nats
import pytest

from rrr.deploy.dlq import NotRepublishableError, read_dead_letters, republish
from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.postgres_server import PostgresServer
from rrr.shared.bus import Bus
from rrr.shared.messages import Quote, Signal, encode
from tests.support.checks import Comparison, wait_for_exact
from tests.support.reference import follows_fills_expectations, timed_momentum_expectations
from tests.support.system import DLQ_KEY, FAST_HEARTBEATS, System, assert_no_permission_violations, finish
from tests.support.waiting import wait_until

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parents[1] / "data"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"
USDJPY = DATA / "usdjpy_quotes_2013-01-01.csv"


def _report(scenario: str, result: Comparison) -> None:
    print(f"\n[{scenario}]\n{result}")
    assert result.exact, f"{scenario}: PostgreSQL does not hold exactly what the file implies:\n{result}"


async def _stored_quotes_reach(system: System, rows: int) -> None:
    """Wait until persistence reports ``rows`` quotes written: a point in the middle of the replay."""
    await wait_until(
        lambda: system.counters("persistence-0").get("rows_quotes", 0) >= rows,
        60,
        f"persistence to store {rows} quotes",
        describe=lambda: system.counters("persistence-0"),
    )


async def test_1_persistence_killed_mid_replay_stores_every_quote_order_and_fill_once(system: System) -> None:
    # SIGKILL once 3,000 messages were written and committed with the consumers' positions: the restarted
    # service resumes after them, and the rest of the replay is published while it is down.
    await system.start("market_data-0", "strategy-0", "execution-0")
    await system.start("persistence-0", crash_before_ack=3000)
    replay = system.replay(EURUSD)
    assert await system.wait_exit(system.procs["persistence-0"], 60) == -signal.SIGKILL
    await finish(replay)
    await system.start("persistence-0")
    _report("persistence kill -9", await wait_for_exact(system.database_url, EURUSD, timeout_s=120))


async def test_2_execution_killed_between_consuming_and_acknowledging_fills_no_order_twice(system: System) -> None:
    await system.start("persistence-0", "market_data-0", "strategy-0")
    # Execution's position in RRR_CMD is in its snapshot. With none taken during the run (only the empty one
    # at start), the restart rebuilds from the events and handles every command again: those killed before
    # the position moved past them, and all the others, must each be recognised as filled already.
    snapshots = {"RRR_EXECUTION_SNAPSHOT_EVERY_MS": "600000"}
    await system.start("execution-0", extra_env=snapshots, crash_before_ack=100)
    replay = system.replay(EURUSD)
    assert await system.wait_exit(system.procs["execution-0"], 60) == -signal.SIGKILL
    await system.start("execution-0", extra_env=snapshots)
    restored_events = system.counters("execution-0").get("restored_events", 0)
    await finish(replay)
    await wait_until(
        lambda: system.counters("execution-0").get("duplicate_orders", 0) >= 1,
        60,
        "the commands handled before the crash to be handled again",
        describe=lambda: system.counters("execution-0"),
    )
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    counters = system.counters("execution-0")
    print(
        f"\nrestarted execution: restored_events={restored_events} (after its snapshot) "
        f"duplicate_orders={counters.get('duplicate_orders', 0)} "
        f"orders_resumed={counters.get('orders_resumed', 0)} orders_filled={counters.get('orders_filled', 0)}"
    )
    _report("execution kill -9 before ack", result)


async def test_3_strategy_killed_mid_replay_sends_the_orders_of_an_uninterrupted_run(system: System) -> None:
    await system.start("persistence-0", "market_data-0", "execution-0")
    # The replay sends the file's 9,500 quotes in batches of 512: killed after 8 batches, about 4,000 quotes.
    await system.start("strategy-0", extra_env={"RRR_STRATEGY_SNAPSHOT_EVERY_MS": "100"}, crash_before_ack=8)
    replay = system.replay(EURUSD)
    assert await system.wait_exit(system.procs["strategy-0"], 60) == -signal.SIGKILL
    await system.start("strategy-0")
    await finish(replay)
    # The reference is the uninterrupted run: every order and fill of it, no other, and its position.
    _report("strategy kill -9", await wait_for_exact(system.database_url, EURUSD, timeout_s=120))
    print(f"restarted strategy: {system.counters('strategy-0')}")


async def _user_strategy_killed_mid_replay(
    system: System, strategy: str, params: str, strategy_id: str, crash_before_ack: int
) -> None:
    """Replay EURUSD with a user's strategy (a module of the tests) that is SIGKILLed mid-replay with a snapshot
    every 10 ms and one message per fetch, then restarted; return once the replay is done."""
    user = {
        "RRR_STRATEGY_STRATEGY": f"tests.support.strategies:{strategy}",
        "RRR_STRATEGY_PARAMS": params,
        "RRR_STRATEGY_STRATEGY_ID": strategy_id,
        "PYTHONPATH": str(ROOT),
    }
    await system.start("persistence-0", "market_data-0", "execution-0")
    crashing = {**user, "RRR_STRATEGY_SNAPSHOT_EVERY_MS": "10", "RRR_STRATEGY_BATCH_SIZE": "1"}
    await system.start("strategy-0", extra_env=crashing, crash_before_ack=crash_before_ack)
    replay = system.replay(EURUSD)
    assert await system.wait_exit(system.procs["strategy-0"], 60) == -signal.SIGKILL
    await system.start("strategy-0", extra_env=user)
    await finish(replay)


async def test_3b_a_user_strategy_killed_mid_replay_sends_the_orders_of_an_uninterrupted_run(system: System) -> None:
    # A strategy that is not built in, from a module of the tests (as a user's own), with what sma_cross does not
    # use: event-time timers, its own position, state in a msgspec Struct. Its reference is computed apart.
    # One message (a batch of up to 512 quotes) per fetch: killed after 8 of the replay's 19, about 4,000 quotes in,
    # however fast the replay published, so the restarted strategy surely has the rest to handle.
    await _user_strategy_killed_mid_replay(system, "TimedMomentum", '{"every_ms": 30000}', "momentum", 8)
    expected = timed_momentum_expectations(EURUSD, every_ms=30_000)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120, strategy="momentum", expected=expected)
    await wait_until(
        lambda: system.counters("strategy-0").get("handled", 0) >= 11,
        30,
        "the restarted strategy to report the messages after the crash point",
        describe=lambda: system.counters("strategy-0"),
    )
    _report("user strategy kill -9", result)
    print(f"restarted strategy: {system.counters('strategy-0')}")


async def test_3c_a_closed_loop_strategy_killed_mid_replay_sends_the_orders_of_an_uninterrupted_run(
    system: System,
) -> None:
    # A user's strategy that decides on its orders' outcomes (its real fills, its rejections: every third order
    # is beyond execution's order limit), delivered before the next quote. Killed while orders and their events
    # are in flight; restarted, it reads the events again from its snapshot's position.
    # Messages handled count quotes (a batch of up to 512 per message) and order events (two per order, an
    # order every 25 quotes): about 42 per batch of quotes, so 300 is about 7 of the replay's 19 batches in.
    await _user_strategy_killed_mid_replay(system, "FollowsFills", '{"every": 25}', "follows", 300)
    expected = follows_fills_expectations(EURUSD, every=25)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120, strategy="follows", expected=expected)
    _report("closed-loop strategy kill -9", result)
    counters = system.counters("strategy-0")
    print(f"restarted strategy: {counters}")
    assert counters.get("strategies_failed", 0) == 0
    # The strategy's own account in the database: its fills' position, and PnL at the latest mid.
    conn = await asyncpg.connect(system.database_url)
    try:
        row = await conn.fetchrow("SELECT qty, fills, mark, pnl FROM strategy_positions WHERE strategy = 'follows'")
    finally:
        await conn.close()
    ref = expected.position
    assert row is not None
    assert (Fraction(row["qty"]), row["fills"]) == (ref.qty, ref.fills)
    assert Fraction(row["pnl"]) == ref.realized_pnl + (Fraction(row["mark"]) - ref.avg_price) * ref.qty


async def test_4_nats_server_restarted_mid_replay_loses_nothing_acknowledged(
    system: System, nats_server: NatsEndpoint
) -> None:
    assert nats_server.server is not None
    await system.start()
    pids = {name: proc.pid for name, proc in system.procs.items()}
    replay = system.replay(EURUSD)
    await _stored_quotes_reach(system, 1000)
    await asyncio.to_thread(nats_server.server.restart)
    await finish(replay)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    # Every service reconnected by itself: none of them was restarted.
    assert {name: proc.pid for name, proc in system.procs.items()} == pids
    _report("nats-server restart", result)


async def test_5_postgresql_stopped_for_20_s_mid_replay_is_waited_out_without_loss(
    nats_server: NatsEndpoint, tmp_path: Path
) -> None:
    pg = PostgresServer(data_dir=tmp_path / "pg")
    await asyncio.to_thread(pg.start)
    try:
        async with System(
            nats_url=nats_server.url,
            database_url=pg.dsn,
            workdir=tmp_path / "services",
            env=FAST_HEARTBEATS,
            role_urls=nats_server.urls,
        ) as system:
            await system.start()
            persistence_pid = system.procs["persistence-0"].pid
            replay = system.replay(EURUSD)
            await _stored_quotes_reach(system, 1000)
            outage_start = asyncio.get_running_loop().time()
            await asyncio.to_thread(pg.stop)
            await finish(replay)
            # Another file published while the database is down, so persistence surely has work in hand
            # during the outage however fast it wrote the first one.
            await finish(system.replay(USDJPY))
            await wait_until(
                lambda: system.counters("persistence-0").get("transient_errors", 0) >= 1,
                30,
                "persistence to notice PostgreSQL is gone",
            )
            # The rest of the outage itself: what the scenario is about, not a way to wait for something.
            await asyncio.sleep(max(20 - (asyncio.get_running_loop().time() - outage_start), 0))
            await asyncio.to_thread(pg.start)
            results = [await wait_for_exact(pg.dsn, path, timeout_s=120) for path in (EURUSD, USDJPY)]
            assert system.procs["persistence-0"].pid == persistence_pid, "persistence restarted"
            print(f"\npersistence retried: transient_errors={system.counters('persistence-0').get('transient_errors')}")
            _report("PostgreSQL down 20 s: EURUSD, published around the stop", results[0])
            _report("PostgreSQL down 20 s: USDJPY, published during the outage", results[1])
        assert_no_permission_violations(nats_server)
    finally:
        await asyncio.to_thread(pg.stop)


async def test_6_poison_messages_on_every_consumed_subject_are_dead_lettered_and_the_rest_flows(
    system: System,
) -> None:
    await system.start()
    # A poison the database refuses although it decodes: a trigger stands in for any such refusal.
    conn = await asyncpg.connect(system.database_url)
    try:
        await conn.execute(
            """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.id LIKE 'poison%' THEN RAISE EXCEPTION 'refusing %', NEW.id; END IF; RETURN NEW; END $$;
               CREATE TRIGGER refuse_poison BEFORE INSERT ON quotes FOR EACH ROW EXECUTE FUNCTION refuse_poison();"""
        )
    finally:
        await conn.close()

    one = Decimal(1)
    poison_quote = Quote(id="poison-1", ts_event=1, ts_init=1, symbol="EURUSD", bid=one, ask=Decimal(2))
    wrong_type = Signal(
        id="wrong-1", ts_event=1, ts_init=1, strategy="x", symbol="EURUSD", quote_id="q", direction="up",
        fast=one, slow=one, target=one,
    )  # fmt: skip
    garbage = b"\xc1 not msgpack"
    sent = {
        "md.quote.0.EURUSD": [garbage, encode(wrong_type), encode(poison_quote)],
        "sig.signal.0.EURUSD": [garbage, encode(poison_quote)],
        "cmd.order.0.EURUSD": [garbage, encode(poison_quote)],
        "evt.order.0.EURUSD": [garbage, encode(poison_quote)],
    }
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()
        for subject, payloads in sent.items():
            for payload in payloads:
                await js.publish(subject, payload)
    finally:
        await nc.close()

    # The rest of the streams keeps flowing: a whole replay goes through exactly.
    await finish(system.replay(USDJPY))
    _report("after poison", await wait_for_exact(system.database_url, USDJPY, timeout_s=120))

    # Garbage and wrong types: dead-lettered at once by every consumer of the subject (market-data reads
    # md.quote on core NATS too). The poison quote: persistence retried it up to the bound, 5 deliveries.
    expected = {
        ("market_data", "md.quote.0.EURUSD"): 2,
        ("strategy", "md.quote.0.EURUSD"): 2,
        ("persistence", "md.quote.0.EURUSD"): 3,
        ("persistence", "sig.signal.0.EURUSD"): 2,
        ("execution", "cmd.order.0.EURUSD"): 2,
        ("persistence", "evt.order.0.EURUSD"): 2,
    }
    bus = await Bus.connect(system.nats_url, service="test", name="test")
    try:

        async def _all_dead_lettered() -> bool:
            return len(await read_dead_letters(bus)) >= sum(expected.values())

        await wait_until(_all_dead_lettered, 60, f"{sum(expected.values())} dead letters")
        letters = await read_dead_letters(bus)
    finally:
        await bus.close()
    got: dict[tuple[str, str], int] = {}
    for letter in letters:
        got[(letter.service, letter.subject)] = got.get((letter.service, letter.subject), 0) + 1
    print("\ndead letters (service, subject): count", got)
    assert got == expected
    poison = [
        x
        for x in letters
        if x.service == "persistence" and x.subject == "md.quote.0.EURUSD" and x.describe() == "Quote id=poison-1"
    ]
    assert [x.deliveries for x in poison] == ["5"]
    assert all(proc.pid is not None for proc in system.procs.values()), "a service stopped"

    # After the fix, `rrr-dlq republish` hands the poison back to persistence alone; the strategy, which
    # processed it fine, does not see it again. A strategy's dead letter is not taken back.
    conn = await asyncpg.connect(system.database_url)
    try:
        await conn.execute("DROP TRIGGER refuse_poison ON quotes")
    finally:
        await conn.close()
    bus = await Bus.connect(system.nats_url, service="test", name="test")
    try:
        market_data_before = (await bus.js.stream_info("RRR_MD")).state.messages
        assert await republish(bus, poison, key=DLQ_KEY.encode()) == 1
        with pytest.raises(NotRepublishableError):
            await republish(bus, [x for x in letters if x.service == "strategy"][:1], key=DLQ_KEY.encode())
        # It went to persistence's retries, not back onto the quote stream the strategy reads.
        assert (await bus.js.stream_info("RRR_MD")).state.messages == market_data_before
    finally:
        await bus.close()

    async def _poison_stored() -> bool:
        conn = await asyncpg.connect(system.database_url)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM quotes WHERE id = 'poison-1'") == 1)
        finally:
            await conn.close()

    await wait_until(_poison_stored, 30, "the republished quote to be stored")


async def test_8_sigterm_under_load_drains_and_exits_0_and_nothing_is_lost(system: System) -> None:
    await system.start()
    replay = system.replay(EURUSD)
    await _stored_quotes_reach(system, 1000)
    codes = await asyncio.gather(*(asyncio.to_thread(proc.terminate, 30.0) for proc in system.procs.values()))
    print(f"\nexit codes after SIGTERM: {dict(zip(system.procs, codes, strict=True))}")
    assert codes == [0, 0, 0, 0]
    await finish(replay)
    await system.start()
    _report("SIGTERM under load", await wait_for_exact(system.database_url, EURUSD, timeout_s=120))
