"""A new user's mistakes, tried as one would make them: each gets one clear line, loses nothing, and leaves
no state that only `just reset` repairs."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from rrr.deploy.processes import free_port, service_command


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> list[str]:
    """Read the process's output until a line contains ``needle``; return the lines read."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no line with {needle!r} within {timeout_s:g} s:\n{''.join(lines)}")


def test_a_service_started_with_no_nats_stops_at_once_on_ctrl_c_with_an_honest_line(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.Popen(
        [*service_command("strategy"), "--nats-url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        seen = _wait_for_line(proc, "nats:", 30)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        proc.kill()
    output = "".join(seen) + out
    assert proc.returncode == 0, output
    assert f"stopped before NATS at {url} could be reached" in output
    assert "redelivered" not in output
    # One line about the unreachable broker, not one per attempt.
    assert output.count("Connect call failed") <= 1, output
    print(f"\nstopped {took:.2f} s after SIGINT")
