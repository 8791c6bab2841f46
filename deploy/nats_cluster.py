"""A cluster of nats-server nodes from the embedded binary: routes on one host, JetStream on every node.

Each node has its own data directory (its JetStream store, nats.conf, pid file and log), its client,
monitoring and route ports, and the same users and permissions (`rrr.deploy.nats_permissions`): what a role
may do, it may do on any node, and a client given every node's URL carries on through the loss of any one.
Streams and buckets are replicated on three nodes when the services run with `--stream-replicas 3`
(`RRR_STREAM_REPLICAS`); with three nodes one may fail and every stream keeps its quorum.

Example:
    with NatsCluster(data_dir=tmp_path, size=3, users=new_users()) as cluster:
        client = await nats.connect(cluster.url_for("admin").split(","))
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from rrr.deploy.credentials import new_password
from rrr.deploy.nats_permissions import ADMIN
from rrr.deploy.nats_server import ClusterSettings, NatsEndpoint, NatsServer, ServerTls
from rrr.deploy.processes import ServerStartError, free_ports, poll_until

__all__ = ["CLUSTER_NAME", "NatsCluster", "NodePorts", "join_urls"]

CLUSTER_NAME = "rrr"


def join_urls(urls: Sequence[str]) -> str:
    """One NATS URL setting for several servers, as the services and tools read it (comma-separated)."""
    return ",".join(urls)


class NodePorts(msgspec.Struct, frozen=True, kw_only=True):
    """The client, monitoring and route ports of one node (recorded in `.run/state.json`)."""

    client: int
    monitor: int
    cluster: int

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> NodePorts:
        """Three different ports nothing listens on now."""
        return cls.free_for(1, host)[0]

    @classmethod
    def free_for(cls, nodes: int, host: str = "127.0.0.1") -> list[NodePorts]:
        """The ports of ``nodes`` nodes, all different, nothing listening on any of them now."""
        ports = free_ports(3 * nodes, host)
        return [cls(client=ports[i], monitor=ports[i + 1], cluster=ports[i + 2]) for i in range(0, 3 * nodes, 3)]


class NatsCluster:
    """`size` nats-server nodes routed to one another on `host`, under `data_dir/node<i>`."""

    def __init__(
        self,
        *,
        data_dir: Path,
        size: int = 3,
        users: Mapping[str, str] | None = None,
        ports: Sequence[NodePorts] | None = None,
        route_password: str | None = None,
        host: str = "127.0.0.1",
        sync_always: bool = False,
        max_store_bytes: int | None = None,
        name: str = CLUSTER_NAME,
        tls: ServerTls | None = None,
    ) -> None:
        """Describe the cluster; nothing runs until `start`.

        Args:
            data_dir: Holds one directory per node (`node0`, `node1` ...).
            size: How many nodes; 3 lets one fail with every replicated stream keeping its quorum.
            users: Role name -> password, the same on every node (see `NatsServer`).
            ports: Each node's ports; free ones when None.
            route_password: What the nodes authenticate their routes with; a fresh one when None.
            host: Address every node listens on, routes included.
            sync_always: Every node flushes its store after each write (see `NatsServer`).
            max_store_bytes: Each node's JetStream file store limit.
            name: The cluster's name, the same on every node.
            tls: TLS for clients and routes on every node (see `NatsServer`).
        """
        if size < 1:
            raise ValueError(f"size: expected at least 1 node, got {size}")
        self.data_dir = data_dir.resolve()
        self.host = host
        self.name = name
        self.ports = list(ports) if ports is not None else NodePorts.free_for(size, host)
        if len(self.ports) != size:
            raise ValueError(f"ports: expected {size} nodes' ports, got {len(self.ports)}")
        self.route_password = route_password or new_password()
        self.users = dict(users) if users is not None else None
        self.nodes = [
            NatsServer(
                data_dir=self.node_dir(i),
                port=node.client,
                monitor_port=node.monitor,
                host=host,
                users=self.users,
                server_name=self.node_name(i),
                cluster=self._settings(i, node.cluster),
                sync_always=sync_always,
                max_store_bytes=max_store_bytes,
                tls=tls,
            )
            for i, node in enumerate(self.ports)
        ]

    def _settings(self, index: int, port: int) -> ClusterSettings:
        peers = tuple(node.cluster for i, node in enumerate(self.ports) if i != index)
        return ClusterSettings(name=self.name, port=port, peers=peers, password=self.route_password)

    def node_dir(self, index: int) -> Path:
        """The data directory of node `index`."""
        return self.data_dir / f"node{index}"

    def node_name(self, index: int) -> str:
        """The server name of node `index` (what JetStream names a stream's leader by)."""
        return f"rrr-nats-{index}"

    def index_of(self, server_name: str) -> int:
        """The index of the node named `server_name`.

        Raises:
            KeyError: no node has that name.
        """
        for i in range(len(self.nodes)):
            if self.node_name(i) == server_name:
                return i
        raise KeyError(server_name)

    @property
    def url(self) -> str:
        """Every node's client URL, without credentials."""
        return join_urls([node.url for node in self.nodes])

    def url_for(self, role: str) -> str:
        """Every node's URL as `role`, comma-separated: what a service or tool of that role is given."""
        return join_urls([node.url_for(role) for node in self.nodes])

    def endpoint(self) -> NatsEndpoint:
        """The cluster as the test fixtures hand out a server: admin's URL, and every role's."""
        urls = {role: self.url_for(role) for role in self.users or {}}
        return NatsEndpoint(url=urls.get(ADMIN, self.url), server=self.nodes[0], urls=urls)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node not running, then wait until the cluster is whole: a JetStream meta leader known
        to every node, and every node's `/healthz` at 200.

        A start that fails stops the nodes it started: nothing is left running that no one will stop (a
        `with` block's exit does not run when its entry fails).

        Raises:
            ServerStartError: a node did not start, or the cluster did not form before the deadline.
        """
        deadline = time.monotonic() + timeout_s
        started: list[NatsServer] = []
        try:
            for node in self.nodes:
                if not node.running:
                    started.append(node)
                    node.start(max(deadline - time.monotonic(), 1.0))
            self.wait_formed(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            for node in started:
                node.stop()
            raise

    def wait_formed(self, timeout_s: float, nodes: Sequence[int] | None = None) -> None:
        """Wait until the nodes (all by default) agree on a meta leader and answer `/healthz` with 200.

        Raises:
            ServerStartError: not before the deadline.
        """
        chosen = [self.nodes[i] for i in (range(len(self.nodes)) if nodes is None else nodes)]

        def formed() -> bool:
            return all(self.meta_leader(node) is not None and node.answers("/healthz") for node in chosen)

        if not poll_until(formed, timeout_s):
            seen = {node.server_name: self.meta_leader(node) for node in chosen}
            raise ServerStartError(
                "nats cluster",
                f"{len(chosen)} nodes with a JetStream meta leader and /healthz at 200",
                f"after {timeout_s:g} s the meta leader each node knows is {seen}",
                chosen[0].log_file,
                "",
            )

    def meta_leader(self, node: NatsServer) -> str | None:
        """The JetStream meta leader `node` knows of, or None (no quorum, or the node does not answer)."""
        try:
            with urllib.request.urlopen(f"{node.monitor_url}/jsz", timeout=1.0) as answer:  # noqa: S310 - http on loopback
                jsz = json.load(answer)
        except (OSError, ValueError):
            return None
        leader = (jsz.get("meta_cluster") or {}).get("leader")
        return str(leader) if leader else None

    def isolate(self, index: int) -> None:
        """Restart node ``index`` cut off from the others: its routes lead to ports nothing listens on, and it
        listens for routes on a new port the others do not know. Its clients may connect to it again."""
        node = self.nodes[index]
        settings = node.cluster
        assert settings is not None
        node.stop()
        port, *peers = free_ports(1 + len(settings.peers), self.host)
        node.cluster = dataclasses.replace(settings, port=port, peers=tuple(peers))
        node.start()

    def rejoin(self, index: int, timeout_s: float = 60.0) -> None:
        """Restart node ``index`` with its own routes again, and wait until the cluster is whole."""
        node = self.nodes[index]
        node.stop()
        node.cluster = self._settings(index, self.ports[index].cluster)
        node.start()
        self.wait_formed(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node that runs."""
        for node in self.nodes:
            node.stop(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsCluster(name={self.name!r}, nodes={[n.server_name for n in self.nodes]}, ports={self.ports!r})"
