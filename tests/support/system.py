"""The four services as separate processes against given servers, for end-to-end and fault tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
from nats.aio.client import Client

from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import SERVICES, ManagedProcess, log_tail, service_command
from tests.support.services import Heartbeats
from tests.support.waiting import wait_until

# Heartbeats every 100 ms: tests read the services' counters from them.
FAST_HEARTBEATS = {f"RRR_{s.upper()}_HEARTBEAT_MS": "100" for s in SERVICES}
# The key the services sign their dead letters with, for `rrr-dlq republish` to verify them.
DLQ_KEY = "dead-letters-of-the-test-system"

ServiceCommand = Callable[[str], list[str]]
"""Builds the command that runs a service, before its own arguments (``rrr.deploy.processes.service_command``)."""


def crashing(service: str, before_ack: int) -> list[str]:
    """The command of a service that SIGKILLs itself after ``before_ack`` messages (tests/support/crash.py)."""
    return [sys.executable, str(Path(__file__).with_name("crash.py")), service, "--before-ack", str(before_ack)]


class ServiceProcess:
    """One service instance as a child process, logging to a file."""

    def __init__(
        self,
        service: str,
        shard: int,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        command: ServiceCommand = service_command,
        nats_url: str | None = None,
        suffix: str = "",
    ) -> None:
        self.service = service
        self.shard = shard
        self.name = f"{service}-{shard}{suffix}"
        # Its own NATS user, as `rrr-stack up` gives it: the permissions of its role are exercised.
        self.env = {**env, **({f"RRR_{service.upper()}_NATS_URL": nats_url} if nats_url else {})}
        self.log = log_dir / f"{self.name}.log"
        self.command = command
        # The latest start's process; a restart replaces it.
        self.process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        """The running process's pid, or None."""
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the latest process has exited, else None."""
        return None if self.process is None else self.process.returncode

    def start(self, extra_env: Mapping[str, str] | None = None, crash_before_ack: int | None = None) -> None:
        """Start the process (it must not be running); with ``crash_before_ack``, through the crash launcher."""
        assert self.pid is None, f"{self.name} is already running"
        command = self.command(self.service) if crash_before_ack is None else crashing(self.service, crash_before_ack)
        self.process = ManagedProcess(
            self.name,
            [*command, "--shard", str(self.shard), "--instance", self.name],
            log_file=self.log,
            env={**self.env, **(extra_env or {})},
            detached=False,
        )
        self.process.start()

    def kill(self) -> None:
        """SIGKILL, as a crash; waits for the process to be gone."""
        if self.process is not None:
            self.process.kill()

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then wait up to ``timeout_s`` for the exit; return the exit code.

        Raises:
            subprocess.TimeoutExpired: the process did not exit in time (it is killed then).
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        if code is None:
            self.process.kill()
            raise subprocess.TimeoutExpired(self.process.argv, timeout_s)
        return code

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, over every start."""
        return log_tail(self.log, lines)


class System:
    """NATS and PostgreSQL given; the four services started, watched, killed and restarted here."""

    def __init__(
        self,
        *,
        nats_url: str,
        database_url: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        shards: int = 1,
        command: ServiceCommand = service_command,
        role_urls: Mapping[str, str] | None = None,
        standby: bool = False,
    ) -> None:
        """Describe the system; nothing runs until `start`.

        Args:
            nats_url: The NATS server, as a user that may do anything (the test's own connections).
            database_url: The database persistence writes to.
            workdir: Where each instance's log goes.
            env: Environment variables added to (or replacing) the defaults below.
            shards: Instances of each service.
            command: Builds the command that runs a service, for every instance and for `replay`; a
                test may wrap the services in a launcher of its own.
            role_urls: The URL of each NATS user (`rrr.deploy.nats_permissions`): each service runs as its
                own, `replay` as the replay tool's. Without them every process uses `nats_url`.
            standby: A second instance of every service for every shard (``strategy-0b``), as `up --standby`
                runs them; give ``RRR_LEASE_TTL_MS`` in ``env``.
        """
        self.nats_url = nats_url
        self.database_url = database_url
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")}
        base.update(
            {
                "RRR_NATS_URL": nats_url,
                "RRR_DATABASE_URL": database_url,
                "RRR_SHARDS": str(shards),
                "RRR_MARKET_DATA_FEED": "none",
                "RRR_LOG_LEVEL": "INFO",
                # Redeliveries after a crash come after the ack wait: keep it short so the suite is quick.
                "RRR_ACK_WAIT_S": "2",
                "RRR_DLQ_KEY": DLQ_KEY,
                **(env or {}),
            }
        )
        self.env = base
        self.role_urls = dict(role_urls or {})
        self.command = command
        self.procs = {
            p.name: p
            for p in (
                ServiceProcess(s, k, base, workdir, command=command, nats_url=self.role_urls.get(s), suffix=suffix)
                for s in SERVICES
                for k in range(shards)
                for suffix in ("", "b")[: 2 if standby else 1]
            )
        }
        self.heartbeats = Heartbeats()
        self._nc: Client | None = None

    async def __aenter__(self) -> Self:
        # Every node of a cluster, when the URL names several.
        self._nc = await nats.connect(self.nats_url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        self.heartbeats = await Heartbeats.watch(self._nc)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs.values():
            proc.kill()
        if self._nc is not None:
            await self._nc.close()

    async def start(
        self,
        *names: str,
        extra_env: Mapping[str, str] | None = None,
        crash_before_ack: int | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Start the named instances (all by default) and wait for a heartbeat from each new process.

        With ``crash_before_ack``, each SIGKILLs itself once it handled that many messages, before
        acknowledging them (see tests/support/crash.py).
        """
        chosen = [self.procs[n] for n in names] if names else list(self.procs.values())
        for proc in chosen:
            proc.start(extra_env, crash_before_ack)
        for proc in chosen:
            await self.wait_healthy(proc, timeout_s)

    async def wait_healthy(self, proc: ServiceProcess, timeout_s: float = 60.0) -> None:
        """Wait for an ``ok`` heartbeat sent by the current process of ``proc``."""

        def _beating() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{proc.name} exited with {proc.returncode}:\n{proc.log_tail()}")
            beat = self.heartbeats.latest.get(proc.name)
            return beat is not None and beat.status == "ok" and beat.id.split(":")[-2] == str(proc.pid)

        await wait_until(_beating, timeout_s, f"a heartbeat from {proc.name}", describe=proc.log_tail)

    def counters(self, name: str) -> dict[str, int]:
        """The counters of the latest heartbeat of instance ``name``."""
        return self.heartbeats.counters(name)

    def active(self, service: str, shard: int = 0) -> str | None:
        """Which instance of ``service`` acts for ``shard`` (holds its lease), by the newest heartbeat that says so
        from a running process (a frozen one's last heartbeat still says it did)."""
        acting = []
        for suffix in ("", "b"):
            proc = self.procs.get(f"{service}-{shard}{suffix}")
            beat = None if proc is None else self.heartbeats.latest.get(proc.name)
            if proc is None or beat is None or beat.id.split(":")[-2] != str(proc.pid):
                continue
            if beat.counters.get("lease_active") == 1:
                acting.append((beat.ts_init, proc.name))
        return max(acting)[1] if acting else None

    def replay(self, path: Path, *args: str) -> subprocess.Popen[str]:
        """Start ``rrr-market-data replay`` of ``path``; the caller waits for it."""
        replay_url = self.role_urls.get("replay")
        return subprocess.Popen(
            [*self.command("market_data"), "replay", str(path), "--no-progress", *args],
            env={**self.env, **({"RRR_MARKET_DATA_NATS_URL": replay_url} if replay_url else {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def wait_exit(self, proc: ServiceProcess, timeout_s: float) -> int:
        """Wait for ``proc`` to end by itself (a fault injection, say); return its exit code."""
        process = proc.process
        assert process is not None
        await wait_until(
            lambda: process.returncode is not None, timeout_s, f"{proc.name} to exit", describe=proc.log_tail
        )
        code = process.returncode
        assert code is not None
        return code


async def finish(replay: subprocess.Popen[str], timeout_s: float = 120.0) -> str:
    """Wait for a replay process to end; return its output, failing if it failed."""
    out, err = await asyncio.to_thread(replay.communicate, timeout=timeout_s)
    assert replay.returncode == 0, f"replay failed ({replay.returncode}):\n{err}"
    return out


_VIOLATION = re.compile(r"(Publish|Subscription) Violation")


def permission_violations(log_file: Path) -> list[str]:
    """The lines of a nats-server log where a user was refused a publish or a subscription."""
    if not log_file.exists():
        return []
    return [line for line in log_file.read_text(errors="replace").splitlines() if _VIOLATION.search(line)]


def assert_no_permission_violations(nats: NatsEndpoint) -> None:
    """Fail if any user of the test's nats-server was refused anything: each role has all it needs."""
    if nats.server is not None:
        refused = permission_violations(nats.server.log_file)
        assert not refused, "nats-server refused a service something its role needs:\n" + "\n".join(refused[:20])


def names(shards: int = 1, services: Sequence[str] = SERVICES) -> list[str]:
    """Instance names of ``services`` for ``shards`` shards."""
    return [f"{s}-{k}" for s in services for k in range(shards)]
