"""`just load` against a system that is not there: one line saying so, not a retry loop of tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rrr.deploy.processes import free_port

LOAD = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def test_the_load_harness_without_a_system_says_so_in_one_line_and_exits_2() -> None:
    pytest.importorskip("hdrh", reason="the load harness needs the bench extras: pip install -e '.[bench]'")
    port = free_port()
    env = {"RRR_NATS_URL": f"nats://127.0.0.1:{port}", "RRR_DATABASE_URL": f"postgresql://x@127.0.0.1:{port}/x"}
    done = subprocess.run(
        [sys.executable, str(LOAD), "--duration", "1", "--no-progress"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "just load: lost the system (NoServersError: nats: no servers available for connection); is it up? "
        "Start it with `just up none`."
    ]
    assert done.stdout == ""
