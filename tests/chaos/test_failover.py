"""Fault scenarios beyond one machine: a NATS cluster losing the node that leads the market-data stream, a node cut
off from the others, active instances SIGKILLed with standbys running, and an active instance frozen past its lease.
Each replays the EUR/USD day and checks PostgreSQL row for row against what the file implies (nothing lost, nothing
duplicated, the orders and fills of an uninterrupted run), and prints how long the fail-over took."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rrr.deploy.nats_cluster import NatsCluster
from rrr.shared.bus import Bus
from tests.support.checks import Comparison, wait_for_exact
from tests.support.system import FAST_HEARTBEATS, System, finish
from tests.support.waiting import wait_until

EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"
LEASE_TTL_MS = 2000
STANDBY_ENV = {**FAST_HEARTBEATS, "RRR_LEASE_TTL_MS": str(LEASE_TTL_MS)}
CLUSTER_ENV = {**FAST_HEARTBEATS, "RRR_STREAM_REPLICAS": "3"}


def _report(scenario: str, result: Comparison, system: System) -> None:
    print(f"\n[{scenario}]\n{result}")
    if not result.exact:
        # What each process counted and last logged: all a rare failure leaves to look at once the test is over.
        for name, process in system.procs.items():
            print(f"\n--- {name}: {system.counters(name)}\n{process.log_tail(30)}")
    assert result.exact, f"{scenario}: PostgreSQL does not hold exactly what the file implies:\n{result}"


async def _quotes_stored(system: System, rows: int) -> None:
    """Wait until the persistence instances report ``rows`` quotes written between them: mid-replay."""
    names = [name for name in system.procs if name.startswith("persistence-")]

    def stored() -> int:
        return sum(system.counters(name).get("rows_quotes", 0) for name in names if name in system.heartbeats.latest)

    await wait_until(lambda: stored() >= rows, 60, f"{rows} quotes stored", describe=stored)


@pytest.fixture
async def standby_system(
    nats_url: str, database_url: str, tmp_path: Path, nats_server: object
) -> AsyncIterator[System]:
    async with System(
        nats_url=nats_url,
        database_url=database_url,
        workdir=tmp_path / "services",
        env=STANDBY_ENV,
        role_urls=getattr(nats_server, "urls", {}),
        standby=True,
    ) as system:
        await system.start()
        yield system


@pytest.fixture
async def cluster_system(nats_cluster: NatsCluster, database_url: str, tmp_path: Path) -> AsyncIterator[System]:
    endpoint = nats_cluster.endpoint()
    async with System(
        nats_url=endpoint.url,
        database_url=database_url,
        workdir=tmp_path / "services",
        env=CLUSTER_ENV,
        role_urls=endpoint.urls,
    ) as system:
        await system.start()
        yield system


async def _stream_leader(url: str, stream: str) -> str | None:
    bus = await Bus.connect(url, service="test", name="leader-probe", timeout_s=10)
    try:
        info = await bus.js.stream_info(stream)
        return info.cluster.leader if info.cluster is not None else None
    finally:
        await bus.close()


async def test_the_market_data_streams_leader_node_sigkilled_mid_replay_loses_nothing(
    cluster_system: System, nats_cluster: NatsCluster
) -> None:
    system = cluster_system
    replay = system.replay(EURUSD)
    await _quotes_stored(system, 1000)
    leader = await _stream_leader(system.nats_url, "RRR_MD")
    assert leader is not None
    killed = nats_cluster.index_of(leader)
    killed_at = time.monotonic()
    await asyncio.to_thread(nats_cluster.nodes[killed].kill)
    survivors = ",".join(n.url_for("admin") for i, n in enumerate(nats_cluster.nodes) if i != killed)

    async def _new_leader() -> bool:
        try:
            return await _stream_leader(survivors, "RRR_MD") not in (None, leader)
        except Exception:
            return False

    await wait_until(_new_leader, 30, "a new leader of RRR_MD")
    elected_s = time.monotonic() - killed_at
    await finish(replay)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    print(
        f"\nRRR_MD's leader {leader} SIGKILLed mid-replay: a new leader in {elected_s:.2f} s, "
        f"PostgreSQL exact {time.monotonic() - killed_at:.1f} s after the kill"
    )
    _report("stream leader's node kill -9", result, system)


async def test_a_node_cut_off_from_the_others_mid_replay_and_back_loses_nothing(
    cluster_system: System, nats_cluster: NatsCluster
) -> None:
    system = cluster_system
    replay = system.replay(EURUSD)
    await _quotes_stored(system, 1000)
    leader = await _stream_leader(system.nats_url, "RRR_MD")
    assert leader is not None
    cut = nats_cluster.index_of(leader)
    cut_at = time.monotonic()
    # The node that leads the market-data stream, restarted with its routes leading nowhere: the other two elect
    # a leader and go on; the clients that dial it find a node without JetStream quorum until it rejoins.
    await asyncio.to_thread(nats_cluster.isolate, cut)
    await asyncio.sleep(5)  # the partition's length: a fault held for a while, not a synchronisation
    await asyncio.to_thread(nats_cluster.rejoin, cut)
    healed_s = time.monotonic() - cut_at
    await finish(replay)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    print(
        f"\nnode {leader} cut off from the others for 5 s mid-replay: whole again after {healed_s:.1f} s, "
        f"PostgreSQL exact {time.monotonic() - cut_at:.1f} s after the cut"
    )
    _report("node cut off", result, system)


async def test_active_strategy_and_execution_sigkilled_mid_replay_are_replaced_by_their_standbys_exactly(
    standby_system: System,
) -> None:
    system = standby_system
    replay = system.replay(EURUSD)
    await _quotes_stored(system, 1000)
    killed = {service: system.active(service) for service in ("strategy", "execution")}
    assert None not in killed.values(), killed
    killed_at = time.monotonic()
    for name in killed.values():
        assert name is not None
        system.procs[name].kill()
    took: dict[str, float] = {}

    def _taken_over() -> bool:
        for service, name in killed.items():
            now = system.active(service)
            if service not in took and now is not None and now != name:
                took[service] = time.monotonic() - killed_at
        return len(took) == len(killed)

    await wait_until(_taken_over, 30, "the standbys to take over", describe=lambda: took)
    await finish(replay)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    print(
        f"\nactive {killed['strategy']} and {killed['execution']} SIGKILLed mid-replay (lease {LEASE_TTL_MS} ms): "
        + ", ".join(f"{service} taken over in {seconds:.2f} s" for service, seconds in took.items())
    )
    _report("active strategy and execution kill -9, standbys running", result, system)


async def test_an_active_strategy_frozen_past_its_lease_is_replaced_and_on_waking_publishes_nothing(
    standby_system: System,
) -> None:
    system = standby_system
    replay = system.replay(EURUSD)
    await _quotes_stored(system, 1000)
    frozen = system.active("strategy")
    assert frozen is not None
    process = system.procs[frozen].process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    await wait_until(lambda: system.active("strategy") not in (None, frozen), 30, "the standby strategy to take over")
    took_s = time.monotonic() - frozen_at
    process.send_signal(signal.SIGCONT)
    # Woken, it learns that its lease lapsed before it publishes anything, and stops.
    code = await system.wait_exit(system.procs[frozen], 30)
    log = system.procs[frozen].log_tail(80)
    assert code == 1, log
    assert "lease strategy.0 lost" in log, log
    await finish(replay)
    result = await wait_for_exact(system.database_url, EURUSD, timeout_s=120)
    print(
        f"\nactive {frozen} frozen (SIGSTOP) mid-replay: the standby took over in {took_s:.2f} s "
        f"(lease {LEASE_TTL_MS} ms); woken (SIGCONT), it stopped with exit status {code}"
    )
    _report("active strategy frozen past its lease, then resumed", result, system)
