"""Exactly-once at any distance in time, and a full store: the fault suite's scenarios past JetStream's
de-duplication window (made 1 s here instead of 2 minutes) and with a JetStream store that runs out.

Each compares PostgreSQL row for row with what the quote file implies, as the other scenarios do."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from rrr.deploy.nats_permissions import new_users
from rrr.deploy.nats_server import NatsEndpoint, NatsServer
from tests.support.checks import Comparison, wait_for_exact
from tests.support.system import FAST_HEARTBEATS, System, assert_no_permission_violations, finish
from tests.support.waiting import wait_until

EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"
WINDOW_S = 1.0
SHORT_WINDOW = {**FAST_HEARTBEATS, "RRR_DUPLICATE_WINDOW_S": str(WINDOW_S)}


def _report(scenario: str, result: Comparison, recovered_s: float) -> None:
    print(f"\n[{scenario}] recovered in {recovered_s:.1f} s\n{result}")
    assert result.exact, f"{scenario}: PostgreSQL does not hold exactly what the file implies:\n{result}"


async def _at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


def _published(output: str) -> int:
    match = re.search(r"published=(\d+)", output)
    assert match, output
    return int(match.group(1))


async def _window_passes() -> None:
    # The passing of time is the scenario itself: JetStream must have forgotten every message id.
    await asyncio.sleep(2 * WINDOW_S)


@pytest.fixture
def system_env() -> dict[str, str]:
    return SHORT_WINDOW


async def test_9_replay_interrupted_and_resumed_after_the_duplicate_window_trades_nothing_twice(
    system: System,
) -> None:
    await system.start()
    # One quote in flight at a time, each in a batch of its own: slow enough to be interrupted part of the way
    # through, and the stream's message count is its count of quotes.
    first = system.replay(EURUSD, "--replay-window", "1")
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()

        async def _quotes_in_stream() -> int:
            return int((await js.stream_info("RRR_MD")).state.messages)

        await wait_until(lambda: _at_least(_quotes_in_stream(), 3000), 60, "3,000 quotes in the stream")
    finally:
        await nc.close()
    first.send_signal(signal.SIGINT)
    out, err = await asyncio.to_thread(first.communicate, timeout=60)
    # Ctrl-C ends the replay with a one-line summary and how to resume, and the shell's status for it.
    assert first.returncode == 130, f"replay exited {first.returncode}:\n{out}\n{err}"
    stored = re.search(r"(\d+) of 9500 rows stored", out)
    assert stored, out
    assert int(stored.group(1)) < 9500, f"not interrupted part of the way through: {out}"
    assert "run the same command again to resume" in out, out
    assert "Traceback" not in err, err
    await _window_passes()
    resumed_at = time.monotonic()
    again = await finish(system.replay(EURUSD))
    # The window passed: JetStream took every quote of the file again, the stored half included.
    assert _published(again) == 9500, again
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    print(f"\nfirst run: {out.strip()}\nstrategy: {system.counters('strategy-0')}")
    _report("replay interrupted, resumed after the window", result, time.monotonic() - resumed_at)


async def test_10_the_same_file_replayed_again_after_the_duplicate_window_trades_nothing_twice(
    system: System,
) -> None:
    await system.start()
    await finish(system.replay(EURUSD))
    assert (await wait_for_exact(system.database_url, EURUSD, timeout_s=120)).exact
    await _window_passes()
    again_at = time.monotonic()
    again = await finish(system.replay(EURUSD))
    assert _published(again) == 9500, again
    # Every quote reached the strategy a second time, and each was recognised as already applied.
    await wait_until(
        lambda: system.counters("strategy-0").get("stale_skipped", 0) >= 9500,
        60,
        "the strategy to skip the second copy of every quote",
        describe=lambda: system.counters("strategy-0"),
    )
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    _report("same file replayed again after the window", result, time.monotonic() - again_at)


async def _fill_store(url: str, leave_bytes: int) -> None:
    """Fill the JetStream store with a ballast stream, then free about ``leave_bytes`` of it again."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BALLAST", subjects=["ballast"], storage=StorageType.FILE))
        chunk = b"x" * (256 * 1024)
        seqs = []
        while True:
            try:
                seqs.append((await js.publish("ballast", chunk)).seq)
            except nats.js.errors.ServiceUnavailableError:
                break  # the store is full
        for seq in seqs[: max(leave_bytes // len(chunk), 1)]:
            await js.delete_msg("BALLAST", seq)
    finally:
        await nc.close()


async def _drop_ballast(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream("BALLAST")
    finally:
        await nc.close()


async def test_11_a_full_jetstream_store_for_30_s_mid_replay_is_back_pressure_and_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    server = NatsServer(data_dir=tmp_path / "nats", max_store_bytes=64 * 1024 * 1024, users=new_users())
    await asyncio.to_thread(server.start)
    nats_server = NatsEndpoint.of(server)
    try:
        # The streams' budget must fit the 64 MB store (nats-server reserves it); the ballast takes the rest.
        env = {**FAST_HEARTBEATS, "RRR_STORE_MAX_BYTES": str(32 * 1024 * 1024)}
        async with System(
            nats_url=nats_server.url,
            database_url=database_url,
            workdir=tmp_path / "services",
            env=env,
            role_urls=nats_server.urls,
        ) as system:
            await system.start()
            pids = {name: proc.pid for name, proc in system.procs.items()}
            # About 256 KB left: the replay (about 450 KB of quote batches) runs out of store part of the way
            # through the file.
            await _fill_store(nats_server.url, leave_bytes=256 * 1024)
            replay = system.replay(EURUSD)
            # The first quotes reach the strategy: it handles them, or waits with their orders for space.
            await wait_until(
                lambda: any(system.counters("strategy-0").get(c, 0) >= 1 for c in ("handled", "store_full")),
                60,
                "the first quotes to reach the strategy",
            )
            full_at = time.monotonic()
            # The 30 s of a full store are the scenario itself.
            await asyncio.sleep(30)
            assert replay.poll() is None, "the replay finished although the store was full"
            await _drop_ballast(nats_server.url)
            out, err = await asyncio.to_thread(replay.communicate, timeout=120)
            assert replay.returncode == 0, err
            assert "store is full" in err, err
            result = await wait_for_exact(database_url, EURUSD, timeout_s=120)
            assert {name: proc.pid for name, proc in system.procs.items()} == pids, "a service stopped"
            print(f"\nreplay: {out.strip()}")
            _report("JetStream store full for 30 s", result, time.monotonic() - full_at - 30)
        assert_no_permission_violations(nats_server)
    finally:
        await asyncio.to_thread(server.stop)
