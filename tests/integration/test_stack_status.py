"""`rrr-stack status` against a real nats-server: a heartbeat proves health only when it comes from the
process the stack started, and nothing printed reaches the terminal raw."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import service_program
from rrr.deploy.run_dir import RunDir, StackState, write_state
from rrr.deploy.stack_view import status
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import Heartbeat, encode


@pytest.fixture
def run(nats_server: NatsEndpoint, tmp_path: Path) -> RunDir:
    """A run directory around the test's nats-server, as `rrr-stack up` leaves it."""
    if nats_server.server is None or nats_server.server.data_dir != tmp_path / "nats":
        pytest.skip("needs the test's own nats-server, whose data directory is the run directory's")
    run = RunDir(tmp_path)
    run.pids.mkdir()
    server = nats_server.server
    write_state(run, StackState(nats_port=server.port, nats_monitor_port=server.monitor_port, pg_port=0, shards=1))
    run.env_file.write_text(f"RRR_NATS_URL={nats_server.url}\n")
    return run


@contextlib.contextmanager
def _stand_in(service: str) -> Iterator[int]:
    """A live process whose command line names the service's program, as a started service's does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", service_program(service)], stdin=subprocess.PIPE
    )
    try:
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


@contextlib.asynccontextmanager
async def _forging(bus: Bus, beats: Sequence[tuple[str, int, int]]) -> AsyncIterator[None]:
    """Publish heartbeats of (service, shard, pid) every 50 ms, as anyone who can publish could."""
    stop = asyncio.Event()

    async def _forge() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            for service, shard, pid in beats:
                instance = f"{service}-{shard}@forger"
                now = time.time_ns()
                beat = Heartbeat(
                    id=f"{instance}:{pid}:{seq}", ts_event=now, ts_init=now, service=service, instance=instance,
                    shard=shard, shards=1, status="ok", counters={"handled": 7},
                )  # fmt: skip
                await bus.nc.publish(subjects.heartbeat(service, shard), encode(beat))
            # A periodic sender, not synchronisation: wake early when asked to stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)

    task = asyncio.create_task(_forge())
    try:
        yield
    finally:
        stop.set()
        await task


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.strip()}


async def test_status_counts_a_heartbeat_of_a_stopped_service_for_nothing(
    run: RunDir, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = _exited_pid()
    run.service_pid("strategy-0").write_text(f"{stopped}\n")
    with _stand_in("market_data") as running:
        run.service_pid("market_data-0").write_text(f"{running}\n")
        # Each beat names a pid in its id: market_data-0's that of its running process, strategy-0's that of
        # its process, which has exited.
        async with _forging(bus, [("market_data", 0, running), ("strategy", 0, stopped)]):
            code = await asyncio.to_thread(status, run, listen_s=5.0)

    rows = _rows(capsys.readouterr().out)
    assert code == 1
    assert "healthy" in rows["market_data-0"]
    assert "handled=7" in rows["market_data-0"]
    assert "stopped" in rows["strategy-0"]


async def test_status_counts_a_heartbeat_from_another_process_than_the_one_it_started_for_nothing(
    run: RunDir, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    with _stand_in("execution") as running, _stand_in("strategy") as other:
        run.service_pid("execution-0").write_text(f"{running}\n")
        async with _forging(bus, [("execution", 0, other)]):
            code = await asyncio.to_thread(status, run, listen_s=1.0)

    rows = _rows(capsys.readouterr().out)
    assert code == 1
    assert "running, no heartbeat" in rows["execution-0"]
    assert "handled=7" not in rows["execution-0"]


async def test_status_prints_names_and_values_escaped(run: RunDir, capsys: pytest.CaptureFixture[str]) -> None:
    (run.pids / "evil\x1b[2J\x07-0.pid").write_text(f"{_exited_pid()}\n")
    run.env_file.write_text(run.env_file.read_text() + "RRR_EXTRA=\x1b]0;owned\x07\n")

    await asyncio.to_thread(status, run, listen_s=0.5)

    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    # A pid file of no known service is not listed at all; a value from the env file is listed escaped.
    assert "evil" not in out
    assert "RRR_EXTRA=\\x1b]0;owned\\x07" in out
