"""The stack heals itself: `rrr-stack up` brings a SIGKILLed nats-server back on its port, and the supervisor
restarts a SIGKILLed service or server, each mid-replay and with nobody restarting anything by hand. PostgreSQL is then
checked row for row against what the quote file implies, and each test prints how long recovery took."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import pytest

from rrr.deploy.pid_files import pid_alive, read_pid_file
from rrr.deploy.processes import KILL_WAIT_S, poll_until
from rrr.deploy.run_dir import RunDir, read_state
from rrr.deploy.supervisor import read_supervisor_state
from tests.support.checks import Comparison, wait_for_exact
from tests.support.services import Heartbeats
from tests.support.system import FAST_HEARTBEATS, finish
from tests.support.waiting import wait_until

EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"
BIN = Path(sys.executable).parent
# Quick heartbeats (recovery is timed by them) and a short ack wait (redeliveries after a crash), as in the
# rest of the fault suite.
STACK_ENV = {**FAST_HEARTBEATS, "RRR_ACK_WAIT_S": "2", "RRR_LOG_LEVEL": "INFO"}


class Stack:
    """`rrr-stack` on a run directory of its own, as a user runs it."""

    def __init__(self, root: Path) -> None:
        self.run = RunDir(root)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")} | STACK_ENV
        self.replays: list[subprocess.Popen[str]] = []

    def cli(self, *argv: str, timeout_s: float = 150) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "rrr-stack"), "--run-dir", str(self.run.root), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, env=self.env)

    def up(self, *flags: str) -> subprocess.CompletedProcess[str]:
        done = self.cli("up", "none", "--timeout-s", "120", *flags)
        assert done.returncode == 0, f"rrr-stack up failed:\n{done.stdout}\n{done.stderr}"
        return done

    def urls(self) -> dict[str, str]:
        pairs = (line.partition("=") for line in self.run.env_file.read_text().splitlines())
        return {key: value for key, sep, value in pairs if sep}

    def ports(self) -> tuple[int, int]:
        state = read_state(self.run)
        assert state is not None
        return state.nats_port, state.pg_port

    def server_pid_file(self, name: str) -> Path:
        return {"nats-server": self.run.nats_dir / "nats.pid", "postgres": self.run.pg_dir / "postgres.pid"}[name]

    def pid(self, name: str) -> int:
        servers = ("nats-server", "postgres")
        pid = read_pid_file(self.server_pid_file(name) if name in servers else self.run.service_pid(name))
        assert pid is not None, f"{name} is not running"
        return pid

    def status(self) -> str:
        return self.cli("status").stdout

    def status_rows(self) -> tuple[str, dict[str, list[str]]]:
        """`rrr-stack status` (which must report everything up), and the words of each row by process name."""
        done = self.cli("status")
        assert done.returncode == 0, done.stdout + done.stderr
        rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
        return done.stdout, {row[0]: row[1:] for row in rows}

    def replay(self) -> subprocess.Popen[str]:
        replay = subprocess.Popen(
            [
                *(str(BIN / "rrr-stack"), "--run-dir", str(self.run.root), "exec"),
                *(str(BIN / "rrr-market-data"), "replay", str(EURUSD), "--no-progress"),
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.replays.append(replay)
        return replay


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path / "run")
    try:
        yield running
    finally:
        for replay in running.replays:
            if replay.poll() is None:  # a failed test leaves it waiting for a broker that will not come
                replay.kill()
            replay.communicate()
        down = running.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        pids = [int(p.read_text().split()[0]) for p in running.run.root.rglob("*.pid")]
        assert not [p for p in pids if pid_alive(p)], "processes left running after down"


def _report(scenario: str, result: Comparison) -> None:
    print(f"\n[{scenario}]\n{result}")
    assert result.exact, f"{scenario}: PostgreSQL does not hold exactly what the file implies:\n{result}"


@dataclass
class MidReplay:
    """A system up with a replay under way, and the moment of the fault injected into it."""

    stack: Stack
    ports: tuple[int, int]
    urls: dict[str, str]
    services: dict[str, int]  # the pid of each service instance before the fault
    replay: subprocess.Popen[str]
    replaying_at_fault: bool = False
    fault_at: float = 0.0

    @classmethod
    async def start(cls, stack: Stack, *up_flags: str) -> MidReplay:
        """`rrr-stack up`, a replay of the EUR/USD day, and a wait until 1,000 of its quotes are stored."""
        stack.up(*up_flags)
        urls = stack.urls()
        services = {name: stack.pid(name) for name in stack.run.service_instances()}
        running = cls(stack, stack.ports(), urls, services, stack.replay())
        conn = await asyncpg.connect(urls["RRR_DATABASE_URL"])
        try:

            async def _midway() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM quotes") >= 1000)

            await wait_until(_midway, 60, "1000 quotes in PostgreSQL", interval_s=0.05)
        finally:
            await conn.close()
        return running

    def kill(self, *names: str) -> list[int]:
        """SIGKILL the named processes (none of them a child of this one); return their pids once all are gone."""
        pids = [self.stack.pid(name) for name in names]
        self.replaying_at_fault = self.replay.poll() is None
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.fault_at = time.monotonic()
        assert poll_until(lambda: not any(pid_alive(pid) for pid in pids), KILL_WAIT_S), f"{pids}: one survived SIGKILL"
        return pids

    def since_fault(self) -> float:
        return time.monotonic() - self.fault_at

    async def finish(self) -> tuple[Comparison, str]:
        """Wait for the replay to end by itself and for PostgreSQL to hold exactly what the file implies.

        Returns:
            The last comparison, and when each came after the fault.
        """
        await finish(self.replay)
        replay_s = self.since_fault()
        result = await wait_for_exact(self.urls["RRR_DATABASE_URL"], EURUSD, timeout_s=120)
        timings = f"the replay finished after {replay_s:.1f} s, PostgreSQL exact after {self.since_fault():.1f} s"
        return result, f"(replay still running at the fault: {self.replaying_at_fault}); {timings}"


async def test_nats_server_sigkilled_mid_replay_is_brought_back_on_its_port_by_up_alone(stack: Stack) -> None:
    # No supervisor: `rrr-stack up` alone must bring the server back, where every client still dials.
    run = await MidReplay.start(stack, "--no-supervise")
    run.kill("nats-server")

    again = stack.up("--no-supervise")
    up_s = run.since_fault()
    assert f"starting nats-server on port {run.ports[0]} ..." in again.stdout, again.stdout
    assert "starting postgres" not in again.stdout, again.stdout
    result, timings = await run.finish()
    # Every service reconnected by itself; none was restarted.
    assert {name: stack.pid(name) for name in run.services} == run.services
    print(f"\nnats-server SIGKILLed, back on its port: `rrr-stack up` returned after {up_s:.1f} s {timings}")
    _report("nats-server kill -9, restarted by `rrr-stack up`", result)

    # A plain down and up keeps both ports too, although the connections of the last run linger in TIME_WAIT.
    assert stack.cli("down").returncode == 0
    stack.up("--no-supervise")
    assert stack.ports() == run.ports
    assert stack.urls() == run.urls


async def test_strategy_sigkilled_mid_replay_is_restarted_by_the_supervisor_and_sends_no_order_twice(
    stack: Stack,
) -> None:
    run = await MidReplay.start(stack)
    nc = await nats.connect(run.urls["RRR_NATS_URL"])
    try:
        heartbeats = await Heartbeats.watch(nc)
        [killed] = run.kill("strategy-0")

        def _restarted() -> bool:
            return any(
                beat.service == "strategy" and beat.status == "ok" and beat.id.split(":")[-2] != str(killed)
                for beat in heartbeats.latest.values()
            )

        await wait_until(_restarted, 60, "a heartbeat from a restarted strategy", describe=stack.status)
        beat_s = run.since_fault()
    finally:
        await nc.close()
    result, timings = await run.finish()

    status, rows = stack.status_rows()
    print(
        f"\nstrategy SIGKILLed, restarted by the supervisor: first heartbeat after {beat_s:.1f} s {timings}\n{status}"
    )
    assert "restarts=1" in rows["strategy-0"], status
    assert str(stack.pid("strategy-0")) in rows["strategy-0"], status
    for name in ("nats-server", "postgres", "market_data-0", "execution-0", "persistence-0"):
        assert "restarts=0" in rows[name], status
    _report("strategy kill -9, restarted by the supervisor", result)


async def test_nats_server_and_postgresql_sigkilled_mid_replay_are_brought_back_on_their_ports_by_the_supervisor(
    stack: Stack,
) -> None:
    run = await MidReplay.start(stack)
    killed = ("nats-server", "postgres")
    run.kill(*killed)

    def _back() -> bool:
        # The supervisor records a restart once the server is ready (PostgreSQL: accepting connections).
        supervision = read_supervisor_state(stack.run.supervisor_state_file)
        return supervision is not None and all(
            (record := supervision.processes.get(name)) is not None and record.restarts >= 1 for name in killed
        )

    await wait_until(_back, 60, "the supervisor to restart both servers", describe=stack.status)
    back_s = run.since_fault()
    result, timings = await run.finish()

    status, rows = stack.status_rows()
    print(f"\nnats-server and PostgreSQL SIGKILLed, both back after {back_s:.1f} s {timings}\n{status}")
    assert stack.ports() == run.ports
    assert {name: stack.pid(name) for name in run.services} == run.services, "a service was restarted"
    for name in killed:
        assert "restarts=1" in rows[name], status
    _report("nats-server and PostgreSQL kill -9, restarted by the supervisor", result)
