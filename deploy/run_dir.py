"""``.run/``: where the local system keeps its data, logs, pid files and the state its commands share.

``rrr-stack up`` writes ``state.json`` (the ports, the shard count, how each service instance was
started); the supervisor reads it to restart what died the way it was started, and writes its own
``supervisor.json``. Both are replaced atomically, so a reader never sees half a file. Whoever starts a
process of the system holds ``lock`` meanwhile, so that two of them never start the same one twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from rrr.deploy.nats_cluster import NodePorts
from rrr.deploy.processes import SERVICES
from rrr.shared.errors import RRRError

__all__ = [
    "SETTINGS_PREFIXES",
    "RunDir",
    "ServiceSpec",
    "StackState",
    "StateFileError",
    "instance",
    "read_state",
    "service_of",
    "settings",
    "write_atomic",
    "write_state",
]

# The environment variables that configure a service (the project's own, OpenTelemetry's): a service's
# spec records these, and a restart sets them again over the supervisor's environment.
SETTINGS_PREFIXES = ("RRR_", "OTEL_")


class StackError(RRRError):
    """The local system could not be brought up, or is not up."""


class StateFileError(RRRError):
    """A state file under ``.run/`` cannot be read."""

    def __init__(self, path: Path, seen: str) -> None:
        self.path = path
        self.seen = seen
        super().__init__(f"{path}: expected the state `rrr-stack up` writes, but {seen}; `just reset` starts over")


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How one service instance was started: its command line and its settings from the environment."""

    argv: list[str]
    env: dict[str, str]


class StackState(msgspec.Struct, frozen=True, kw_only=True):
    """What ``rrr-stack up`` chose once and keeps: ports (stable URLs), shard count, service specs."""

    nats_port: int
    nats_monitor_port: int
    pg_port: int
    shards: int
    supervise: bool = True
    # Added later, so with a default: a state written before it was recorded ran the simulator.
    feed: str = "sim"
    services: dict[str, ServiceSpec] = msgspec.field(default_factory=dict)
    # Where each service instance serves its metrics, and the servers' collector (0: none); added later.
    metrics_ports: dict[str, int] = msgspec.field(default_factory=dict)
    collector_port: int = 0
    # Each NATS node's ports when NATS runs as a cluster (`up --cluster N`, node 0's are the ports above); empty:
    # one server. Added later, as the next one.
    nats_nodes: list[NodePorts] = msgspec.field(default_factory=list)
    # `up --sync always`: every node flushes its JetStream store after each write.
    nats_sync_always: bool = False
    # `up --tls`: NATS takes TLS only, clients and routes, with the certificates in ``tls/``.
    nats_tls: bool = False
    # `up --standby`: a second instance of every service for every shard (``strategy-0b``).
    standby: bool = False
    # Where the dashboard serves its page (0: it is not run); added later.
    ui_port: int = 0
    ui_host: str = "127.0.0.1"

    @property
    def nats_ports(self) -> list[int]:
        """Every NATS node's client port (one, on a single server)."""
        return [node.client for node in self.nats_nodes] or [self.nats_port]


@dataclass(frozen=True, slots=True)
class RunDir:
    """Where ``.run/`` keeps everything."""

    root: Path

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def supervisor_state_file(self) -> Path:
        return self.root / "supervisor.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def tls_dir(self) -> Path:
        """The system's certificate authority and NATS certificates (``up --tls``)."""
        return self.root / "tls"

    @property
    def pg_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def supervisor_pid(self) -> Path:
        return self.pids / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def collector_pid(self) -> Path:
        return self.pids / "collector.pid"

    @property
    def collector_log(self) -> Path:
        return self.logs / "collector.log"

    @property
    def ui_pid(self) -> Path:
        return self.pids / "ui.pid"

    @property
    def ui_log(self) -> Path:
        return self.logs / "ui.log"

    @property
    def prometheus_targets(self) -> Path:
        """The scrape targets of the running system, for Prometheus' file discovery (deploy/prometheus/)."""
        return self.root / "prometheus" / "targets.json"

    def service_log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def service_pid(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def service_instances(self) -> list[str]:
        """The service instances that have a pid file, whether or not they still run."""
        if not self.pids.exists():
            return []
        return sorted(p.stem for p in self.pids.glob("*.pid") if service_of(p.stem) in SERVICES)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the lock of this run directory: only its holder starts processes of the system."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)


def instance(service: str, shard: int) -> str:
    """Name of the instance of ``service`` that owns ``shard`` (``strategy-0``)."""
    return f"{service}-{shard}"


def service_of(name: str) -> str:
    """The service of an instance name (``strategy-0`` -> ``strategy``)."""
    return name.rsplit("-", 1)[0]


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that configure a service (see ``SETTINGS_PREFIXES``)."""
    return {key: value for key, value in env.items() if key.startswith(SETTINGS_PREFIXES)}


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once: a reader sees the old file or the new one, never a mix."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def read_state(run: RunDir) -> StackState | None:
    """The state of the last ``rrr-stack up``, or None before the first one.

    Raises:
        StateFileError: The file is there but is not such a state.
    """
    try:
        data = run.state_file.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=StackState)
    except msgspec.DecodeError as exc:
        raise StateFileError(run.state_file, str(exc)) from None


def write_state(run: RunDir, state: StackState) -> None:
    """Write ``state.json`` atomically."""
    write_atomic(run.state_file, msgspec.json.encode(state))
