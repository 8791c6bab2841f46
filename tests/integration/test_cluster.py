"""A three-node NATS cluster from the embedded binary: streams replicated on every node, clients that carry on
through the loss of a node, and the same users and permissions on every node."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import msgspec
import pytest

from rrr.deploy.nats_cluster import NatsCluster, NodePorts
from rrr.deploy.processes import ServerStartError
from rrr.shared import subjects
from rrr.shared.bus import META_BUCKET, STREAMS, Bus
from rrr.shared.config import ServiceConfig
from tests.integration.test_security import Watcher, connected
from tests.support.factories import make_signal, unique_id
from tests.support.waiting import wait_until


async def _admin(cluster: NatsCluster) -> Bus:
    return await Bus.connect(cluster.url_for("admin"), service="test", name=unique_id("cluster-test"), timeout_s=10)


async def test_the_systems_streams_and_buckets_are_created_with_a_replica_on_each_of_three_nodes(
    nats_cluster: NatsCluster,
) -> None:
    bus = await _admin(nats_cluster)
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, replicas=3)
        await bus.check_shards(1)
        for name in [*(spec.name for spec in STREAMS), f"KV_{META_BUCKET}"]:
            info = await bus.js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None
            assert info.cluster.leader is not None, name
            nodes = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
            assert nodes == {nats_cluster.node_name(i) for i in range(3)}, name
    finally:
        await bus.close()


async def test_streams_of_one_replica_are_moved_to_three_when_a_service_asks_for_three(
    nats_cluster: NatsCluster,
) -> None:
    bus = await _admin(nats_cluster)
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s)
        assert (await bus.js.stream_info("RRR_CMD")).config.num_replicas == 1
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, replicas=3)
        assert (await bus.js.stream_info("RRR_CMD")).config.num_replicas == 3
    finally:
        await bus.close()


async def test_a_client_given_every_nodes_url_stores_everything_through_the_loss_of_its_own_node(
    nats_cluster: NatsCluster,
) -> None:
    bus = await _admin(nats_cluster)
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, replicas=3)
        stop = asyncio.Event()
        symbol = "EURUSD"
        subject = subjects.signal(symbol, 1)
        await bus.publish_persistent_many([bus.prepare(subject, make_signal(symbol)) for _ in range(50)])
        connected_to = bus.nc.connected_url
        assert connected_to is not None
        node = next(i for i, n in enumerate(nats_cluster.nodes) if n.port == connected_to.port)
        await asyncio.to_thread(nats_cluster.nodes[node].kill)
        # Published while the client moves to another node: retried with the same ids until stored.
        await bus.publish_persistent_many(
            [bus.prepare(subject, make_signal(symbol)) for _ in range(50)], retry_until=stop
        )
        await wait_until(lambda: bus.nc.connected_url is not None, 10, "the client on another node")
        assert bus.nc.connected_url is not None
        assert bus.nc.connected_url.port != nats_cluster.nodes[node].port
        info = await bus.js.stream_info("RRR_SIG")
        assert info.state.messages == 100
    finally:
        await bus.close()


@pytest.mark.parametrize("node", [0, 1, 2])
async def test_every_node_holds_the_same_users_and_refuses_what_a_role_may_not_publish(
    nats_cluster: NatsCluster, node: int
) -> None:
    # Connected to one node only, a role is held to its permissions there as on any other node, and what it
    # may publish reaches a watcher connected to another node, over the routes.
    server = nats_cluster.nodes[node]
    other = nats_cluster.nodes[(node + 1) % 3]
    fence = "ctl.heartbeat.strategy.fence"
    async with Watcher.on(other.url_for("admin"), ">") as watcher, connected(server.url_for("strategy")) as strategy:
        await strategy.nc.publish("evt.order.0.EURUSD", b"forged")
        await strategy.nc.publish(fence, b"allowed")
        await strategy.refused("publish", "evt.order.0.EURUSD")
        await wait_until(lambda: fence in watcher.seen, 10, f"{fence} to cross the routes")
    assert "evt.order.0.EURUSD" not in watcher.seen


def test_a_cluster_that_fails_to_start_stops_the_nodes_it_started(tmp_path: Path) -> None:
    # The last node's route port taken by someone else, as a port picked free and then taken meanwhile can be.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [NodePorts.free() for _ in range(2)]
        ports.append(msgspec.structs.replace(NodePorts.free(), cluster=taken.getsockname()[1]))
        cluster = NatsCluster(data_dir=tmp_path / "cluster", size=3, ports=ports)
        with pytest.raises(ServerStartError, match="address already in use"):
            cluster.start(timeout_s=30)
    assert [node.running for node in cluster.nodes] == [False, False, False]
    # No nats-server of this cluster is left on the machine, running or unreaped.
    assert _processes_naming(str(tmp_path)) == []


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            if text in line:
                found.append(f"{entry.name}: {line}")
    return found
