"""Pid files: how a command finds, checks and stops a detached process that an earlier command started.

`ManagedProcess` writes the pid file of a detached process; `rrr-stack down` and `status`, run later and
from another process, read it back here.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from rrr.deploy.processes import KILL_WAIT_S, ServerStopError, kill_group, poll_until

__all__ = ["pid_alive", "read_pid_file", "stop_pid_file", "stop_pid_files"]


def pid_alive(pid: int) -> bool:
    """Tell whether a process with this pid exists and has not exited.

    Args:
        pid: Process id.

    Returns:
        False for a missing process and for a zombie (exited, not yet reaped by its parent).
    """
    if pid <= 0:
        # os.kill would address a whole process group instead of one process.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0 until its parent reaps it; the parent of a detached server may
    # be this very process, or an init that reaps late.
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Without procfs (macOS) signal 0 is all there is; with it, the process has just gone.
        return not Path("/proc/self").exists()
    except OSError:
        return True
    state = proc_stat.rpartition(")")[2].split()[0]
    return state != "Z"


def read_pid_file(pid_file: Path, expect: str | None = None) -> int | None:
    """Return the pid recorded in `pid_file` if that process runs and is the one that was started.

    Args:
        pid_file: A pid file written by `ManagedProcess`.
        expect: Text the process's command line must contain (`nats-server`, `rrr-strategy`): after a
            reboot, a recorded pid may belong to something else entirely. None accepts any process.

    Returns:
        The pid, or None when there is no pid file, no such process, or a process that is not ours.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    if expect is None:
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid  # no procfs: trust the pid
    return pid if expect in cmdline else None


def stop_pid_file(pid_file: Path, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Stop the process whose pid is recorded in `pid_file`, from any process.

    Sends `sig`, waits up to `timeout_s` for the process to exit, then kills its whole process group
    (detached processes run in their own session, so the group is the process and its children). The
    pid file is removed once the process is gone.

    Args:
        pid_file: File holding the pid, as written by `ManagedProcess`.
        sig: Signal asking for a clean shutdown: SIGTERM for nats-server and the services, SIGINT (fast
            shutdown) for PostgreSQL.
        timeout_s: How long to wait for the clean shutdown before SIGKILL.

    Returns:
        True when a running process was stopped, False when there was no pid file or no such process.

    Raises:
        ServerStopError: When the pid file does not hold a pid, or the process survives SIGKILL.
    """
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        return False
    try:
        pid = int(text.split()[0])
    except (IndexError, ValueError):
        pid = 0
    # 0 and -1 would signal our own process group or every process we may signal; 1 is init.
    if pid <= 1:
        raise ServerStopError(str(pid_file), "a server's pid in the pid file", f"found {text[:80]!r}")
    if not pid_alive(pid):
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    if not poll_until(lambda: not pid_alive(pid), timeout_s):
        kill_group(pid)
        if not poll_until(lambda: not pid_alive(pid), KILL_WAIT_S):
            raise ServerStopError(
                str(pid_file), f"pid {pid} to exit after SIGKILL", f"it is alive after {KILL_WAIT_S:g} s"
            )
    pid_file.unlink(missing_ok=True)
    return True


def stop_pid_files(
    pid_files: Sequence[Path], sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0
) -> list[bool]:
    """Stop the processes of several pid files at once, as `stop_pid_file` stops one.

    All are signalled together, so the slowest clean shutdown bounds the wait, not their sum.

    Returns:
        For each pid file, in order, whether a running process was stopped.
    """
    if not pid_files:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(pid_files)) as pool:
        return list(pool.map(lambda pid_file: stop_pid_file(pid_file, sig, timeout_s), pid_files))
