"""`rrr-stack` as a user runs it, on a run directory of its own: for the end-to-end and fault tiers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rrr.deploy.pid_files import read_pid_file
from rrr.deploy.run_dir import RunDir, read_state
from tests.support.system import FAST_HEARTBEATS

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
        """The pid file of ``nats-server``, of node ``nats-server-<i>`` of a cluster, or of ``postgres``."""
        if name.startswith("nats-server-"):
            return self.run.nats_dir / f"node{name.removeprefix('nats-server-')}" / "nats.pid"
        return {"nats-server": self.run.nats_dir / "nats.pid", "postgres": self.run.pg_dir / "postgres.pid"}[name]

    def pid(self, name: str) -> int:
        server = name.startswith("nats-server") or name == "postgres"
        pid = read_pid_file(self.server_pid_file(name) if server else self.run.service_pid(name))
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

    def replay(self, path: Path = EURUSD) -> subprocess.Popen[str]:
        replay = subprocess.Popen(
            [
                *(str(BIN / "rrr-stack"), "--run-dir", str(self.run.root), "exec"),
                *(str(BIN / "rrr-market-data"), "replay", str(path), "--no-progress"),
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.replays.append(replay)
        return replay
