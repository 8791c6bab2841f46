"""The local system's NATS, as ``.run/state.json`` records it: one nats-server, or a cluster of nodes.

One server keeps its files in ``.run/nats/`` and is called ``nats-server``; the nodes of a cluster
(``rrr-stack up --cluster 3``) keep theirs in ``.run/nats/node<i>/`` and are called ``nats-server-<i>``.
``up``, the supervisor, ``status`` and ``down`` all see the same processes through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rrr.deploy.certificates import TlsFiles
from rrr.deploy.identities import Identities
from rrr.deploy.nats_cluster import NatsCluster, NodePorts
from rrr.deploy.nats_server import NatsServer, ServerTls
from rrr.deploy.run_dir import RunDir, StackState

__all__ = ["LocalNats", "from_state", "local_nats", "nats_processes", "stream_replicas"]


def stream_replicas(nodes: int) -> int:
    """Copies of each stream on a cluster of ``nodes``: three where there are three or more (one node may
    fail), else one per node."""
    return min(nodes, 3)


@dataclass(frozen=True, slots=True)
class LocalNats:
    """The NATS servers of a run directory: each with the name ``status`` shows it under."""

    servers: tuple[tuple[str, NatsServer], ...]
    # Set when they form a cluster: it knows when the nodes agree.
    cluster: NatsCluster | None

    @property
    def first(self) -> NatsServer:
        """Node 0, or the only server: its ports are the system's ``nats_port`` and ``nats_monitor_port``."""
        return self.servers[0][1]

    @property
    def ports(self) -> list[int]:
        """Every node's client port."""
        return [server.port for _, server in self.servers]

    def node_ports(self) -> list[NodePorts]:
        """Every node's ports, as recorded (empty for one server)."""
        if self.cluster is None:
            return []
        return [
            NodePorts(client=server.port, monitor=server.monitor_port, cluster=ports.cluster)
            for (_, server), ports in zip(self.servers, self.cluster.ports, strict=True)
        ]


def local_nats(
    run: RunDir,
    identities: Identities,
    *,
    nodes: int,
    port: int | None,
    monitor_port: int | None,
    cluster_ports: Sequence[NodePorts] = (),
    sync_always: bool = False,
    tls: ServerTls | None = None,
) -> LocalNats:
    """The system's NATS: one server on ``port`` (free when None), or ``nodes`` routed to one another.

    A cluster's node 0 takes ``port`` and ``monitor_port`` when given; the other ports are ``cluster_ports``
    (those of last time) or free ones. With ``tls``, clients and routes take TLS only.
    """
    users = identities.nats_users()
    if nodes == 1:
        server = NatsServer(
            data_dir=run.nats_dir, port=port, monitor_port=monitor_port, users=users, sync_always=sync_always, tls=tls
        )
        return LocalNats(servers=((NatsServer.name, server),), cluster=None)
    ports = list(cluster_ports) or NodePorts.free_for(nodes)
    if port is not None or monitor_port is not None:
        first = ports[0]
        ports[0] = NodePorts(
            client=port if port is not None else first.client,
            monitor=monitor_port if monitor_port is not None else first.monitor,
            cluster=first.cluster,
        )
    cluster = NatsCluster(
        data_dir=run.nats_dir,
        size=nodes,
        users=users,
        ports=ports,
        route_password=identities.nats_route_password(),
        sync_always=sync_always,
        tls=tls,
    )
    named = tuple((f"{NatsServer.name}-{i}", node) for i, node in enumerate(cluster.nodes))
    return LocalNats(servers=named, cluster=cluster)


def from_state(run: RunDir, state: StackState, identities: Identities) -> LocalNats:
    """The NATS of a system that was up once, on the ports it ran on."""
    return local_nats(
        run,
        identities,
        nodes=max(len(state.nats_nodes), 1),
        port=state.nats_port,
        monitor_port=state.nats_monitor_port,
        cluster_ports=state.nats_nodes,
        sync_always=state.nats_sync_always,
        tls=TlsFiles(run.tls_dir).server() if state.nats_tls else None,
    )


def nats_processes(run: RunDir, state: StackState | None) -> list[tuple[str, Path]]:
    """Each NATS server's name and data directory (where its pid file is), as ``state`` records them."""
    if state is None or not state.nats_nodes:
        return [(NatsServer.name, run.nats_dir)]
    return [(f"{NatsServer.name}-{i}", run.nats_dir / f"node{i}") for i in range(len(state.nats_nodes))]
