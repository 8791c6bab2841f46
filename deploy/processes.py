"""The processes this project runs: spawned, awaited until ready, stopped, their output in log files.

Every process that `rrr-stack`, the tests and the benches start goes through `ManagedProcess`: the
embedded servers and the services. A *detached* process runs in its own session, so it outlives the
process that started it and a Ctrl-C sent to that terminal; its pid goes to a pid file, from which a later
command (`rrr-stack down`) stops it (`rrr.deploy.pid_files`). A *child* stays in the caller's process
group and is stopped by the object that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrr.shared.errors import RRRError

__all__ = [
    "KILL_WAIT_S",
    "SERVICES",
    "Identity",
    "ManagedProcess",
    "ServerStartError",
    "ServerStopError",
    "free_port",
    "free_ports",
    "kill_group",
    "log_tail",
    "poll_until",
    "port_free",
    "service_command",
    "service_program",
]

# In the order `rrr-stack up` starts them: each consumer is up before what feeds it.
SERVICES = ("persistence", "execution", "strategy", "market_data")

_POLL_INTERVAL_S = 0.02
_LOG_TAIL_LINES = 40
_TAIL_BLOCK_BYTES = 64 * 1024
# How long a process may take to vanish after SIGKILL before something is badly wrong.
KILL_WAIT_S = 10.0


class ServerStartError(RRRError):
    """A process did not come up: it exited, or it was not ready before the deadline."""

    def __init__(self, server: str, expected: str, seen: str, log_file: Path | None, log_tail: str) -> None:
        self.server = server
        self.expected = expected
        self.seen = seen
        self.log_file = log_file
        self.log_tail = log_tail
        message = f"{server} did not start: expected {expected}, but {seen}"
        if log_file is not None:
            message += f"\n--- last lines of {log_file} ---\n{log_tail}"
        super().__init__(message)


class ServerStopError(RRRError):
    """A process could not be stopped, or its pid file could not be read."""

    def __init__(self, server: str, expected: str, seen: str) -> None:
        self.server = server
        self.expected = expected
        self.seen = seen
        super().__init__(f"{server}: expected {expected}, but {seen}")


@dataclass(frozen=True, slots=True)
class Identity:
    """The user and group a process runs as, when it must not run as the caller (PostgreSQL as root)."""

    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """Return the `subprocess.Popen` arguments that switch to this identity."""
        # extra_groups=[] drops root's supplementary groups along with its uid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def service_program(service: str) -> str:
    """Return the console script of `service` (`market_data` -> `rrr-market-data`)."""
    return f"rrr-{service.replace('_', '-')}"


def service_command(service: str) -> list[str]:
    """Return the command that runs `service`, before its own arguments.

    Args:
        service: A name of `SERVICES`.

    Returns:
        The console script in the running interpreter's environment, else `python -m rrr.<service>`.
    """
    exe = Path(sys.executable).parent / service_program(service)
    return [str(exe)] if exe.exists() else [sys.executable, "-m", f"rrr.{service}"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing listens on right now.

    Args:
        host: Address to probe.

    Returns:
        A port number chosen by the kernel.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` different TCP ports on `host` that nothing listens on right now.

    Each is held until all are chosen: ports asked for one at a time may repeat (the kernel may hand out again
    a port given back a moment ago), and a server given the same port twice fails to start.

    Args:
        count: How many ports.
        host: Address to probe.

    Returns:
        Port numbers chosen by the kernel, all different.
    """
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a server could listen on `port` of `host` right now (a port remembered from last time may not).

    Probes with SO_REUSEADDR, as nats-server and PostgreSQL bind: the connections of a server that just
    died linger in TIME_WAIT for a minute and keep a plain bind out, but not theirs; a live listener does.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES, *, since: int = 0) -> str:
    """Return the last `lines` lines of a log file, reading no more of it than needed.

    Args:
        path: The log file.
        lines: How many lines.
        since: Byte offset before which nothing counts (where the current run's output starts).
    """
    try:
        with path.open("rb") as log:
            start = log.seek(0, os.SEEK_END)
            tail = b""
            # From the end backwards, until the tail holds more line breaks than lines wanted: its first,
            # maybe partial, line is then cut off below.
            while start > since and tail.count(b"\n") <= lines:
                block_start = max(since, start - _TAIL_BLOCK_BYTES)
                log.seek(block_start)
                tail = log.read(start - block_start) + tail
                start = block_start
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(tail.decode(errors="replace").splitlines()[-lines:])


def poll_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Call `condition` until it is true or `timeout_s` passed; return whether it came true.

    The conditions are states of other processes (a port answering, a pid gone) that nothing notifies.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid`, or the process alone when it leads none."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not a group leader (any more): kill the process alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class ManagedProcess:
    """One run of a program, its output appended to a log file.

    Example:
        process = ManagedProcess("nats-server", argv, log_file=log, pid_file=pid_file)
        process.start()
        process.wait_ready(healthy, "/healthz to answer 200", time.monotonic() + 20)
        ...
        process.stop(timeout_s=10)
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path,
        pid_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        identity: Identity | None = None,
        detached: bool = True,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        """Describe the process; nothing runs until `start`.

        Args:
            name: What error messages call it (`nats-server`, `strategy-0`).
            argv: Program and arguments.
            log_file: Where stdout and stderr go, appended.
            pid_file: Where the pid is written while the process runs, for `rrr.deploy.pid_files`.
            env: The whole environment; the caller's when None.
            cwd: Working directory, created when missing.
            identity: User and group to run as; the caller's when None.
            detached: Run in a session of its own (outlives the caller, stopped with its process group);
                else a child in the caller's process group.
            stop_signal: What `stop` sends to ask for a clean shutdown.
        """
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.pid_file = pid_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.identity = identity
        self.detached = detached
        self.stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        """Pid of the process while it runs, else None."""
        if self._popen is None or self._popen.poll() is not None:
            return None
        return self._popen.pid

    @property
    def running(self) -> bool:
        """Whether the process started by this object is still running."""
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has exited (minus the signal number if one killed it), else None."""
        return None if self._popen is None else self._popen.poll()

    def start(self) -> int:
        """Spawn the process with its output going to the log file; write the pid file.

        Returns:
            The pid.

        Raises:
            ServerStartError: When this object's process is still running.
        """
        if self.running:
            raise ServerStartError(self.name, "a stopped process to start", f"it runs as pid {self.pid}", None, "")
        if self.cwd is not None:
            self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        identity = self.identity.popen_kwargs() if self.identity is not None else {}
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
                **identity,
            )
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self._popen.pid}\n")
        return self._popen.pid

    def wait_ready(self, ready: Callable[[], bool], expected: str, deadline: float) -> None:
        """Poll `ready` until it is true; fail early when the process exits, kill it at the deadline.

        Args:
            ready: Whether the process serves (a port answers); called every few milliseconds.
            expected: What readiness means, for the error message ("/healthz to answer 200").
            deadline: `time.monotonic()` value by which it must be ready.

        Raises:
            ServerStartError: The process exited, or was not ready by the deadline (it is killed then);
                carries the last lines its run logged.
        """
        popen = self._require_started()

        def ready_or_exited() -> bool:
            code = popen.poll()
            if code is not None:
                self._forget()
                raise self._start_error(expected, f"the process exited with code {code}")
            return ready()

        if not poll_until(ready_or_exited, max(deadline - time.monotonic(), 0.0)):
            self.kill()
            raise self._start_error(expected, "it was not ready before the deadline")

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the process, unless it has exited."""
        self._require_started().send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the process to exit.

        Returns:
            The exit code, or None when it still runs.
        """
        try:
            code = self._require_started().wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._forget()
        return code

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the process to exit with `stop_signal`; SIGKILL it (and its group, if detached) after `timeout_s`.

        Returns:
            The exit code, or None when it was never started.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        if self._popen is None:
            return None
        self._popen.send_signal(self.stop_signal)
        code = self.wait(timeout_s)
        return self.kill() if code is None else code

    def kill(self) -> int | None:
        """Kill the process with SIGKILL, as a crash would: its whole group when detached.

        Returns:
            The exit code, or None when it was never started.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            if self.detached:
                kill_group(popen.pid)
            else:
                # A child shares the caller's process group: only the process itself may be killed.
                popen.kill()
        code = self.wait(KILL_WAIT_S)
        if code is None:
            raise ServerStopError(
                self.name, f"pid {popen.pid} to exit after SIGKILL", f"it is alive after {KILL_WAIT_S:g} s"
            )
        return code

    def release(self) -> None:
        """Stop tracking a detached process meant to outlive this one; its pid file stays."""
        if self._popen is not None:
            # Nobody here will wait for it; marking it done keeps Popen from warning about that.
            self._popen.returncode = 0
            self._popen = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines this run of the process logged."""
        return log_tail(self.log_file, lines, since=self._log_offset)

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise ServerStopError(self.name, "a started process", "it was never started")
        return self._popen

    def _forget(self) -> None:
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def _start_error(self, expected: str, seen: str) -> ServerStartError:
        return ServerStartError(self.name, expected, seen, self.log_file, self.log_tail())

    def __repr__(self) -> str:
        return f"ManagedProcess(name={self.name!r}, pid={self.pid}, log_file={str(self.log_file)!r})"
