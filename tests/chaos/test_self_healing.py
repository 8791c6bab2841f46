"""The stack heals itself: `rrr-stack up` brings a SIGKILLed nats-server back on its port, and the supervisor
restarts a SIGKILLed service or server, each mid-replay and with nobody restarting anything by hand. PostgreSQL is then
checked row for row against what the quote file implies, and each test prints how long recovery took."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats

from rrr.deploy.pid_files import pid_alive
from rrr.deploy.processes import KILL_WAIT_S, poll_until
from rrr.deploy.supervisor import read_supervisor_state
from tests.support.checks import Comparison, wait_for_exact
from tests.support.services import Heartbeats
from tests.support.stack import Stack
from tests.support.system import finish
from tests.support.waiting import wait_until

EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"


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
