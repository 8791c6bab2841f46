"""Fixtures for every test tier: real PostgreSQL and NATS servers.

By default the servers run from the binaries in the virtual environment (`rrr.deploy.nats_server`,
`rrr.deploy.postgres_server`) on free ports: one PostgreSQL per session with a fresh database per test, one
nats-server per test.
`RRR_DATABASE_URL` and `RRR_NATS_URL` point the tests at servers run by someone else instead, and
`RRR_TEST_SERVERS=containers` starts them with testcontainers (needs Docker and `.[containers]`).

Security is on, as in `just up`: PostgreSQL asks every connection for its password (the tests' DSNs carry
the superuser's), and each nats-server has the system's users with their permissions; `nats_url` is the
admin user's (a test may do anything), `nats_server.url_for(role)` a role's own.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from rrr.deploy.credentials import new_password
from rrr.deploy.databases import temporary_database
from rrr.deploy.nats_cluster import NatsCluster
from rrr.deploy.nats_permissions import new_users
from rrr.deploy.nats_server import NatsEndpoint, NatsServer
from rrr.deploy.pid_files import pid_alive
from rrr.deploy.postgres_server import PostgresEndpoint, PostgresServer
from tests.support.stack import Stack

_SERVERS_ENV = "RRR_TEST_SERVERS"
_POSTGRES_IMAGE = "postgres:17"
_NATS_IMAGE = "nats:2"


def _use_containers() -> bool:
    mode = os.environ.get(_SERVERS_ENV, "local")
    if mode not in ("local", "containers"):
        raise pytest.UsageError(f"{_SERVERS_ENV}: expected 'local' or 'containers', got {mode!r}")
    return mode == "containers"


def _testcontainers(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(
            f"{_SERVERS_ENV}=containers needs testcontainers: pip install -e '.[containers]' ({exc})"
        ) from exc


@contextlib.contextmanager
def _tolerating_testcontainers_deprecations() -> Iterator[None]:
    # testcontainers' own modules call wait helpers it has deprecated; that is not ours to fix, and
    # `filterwarnings = error` would otherwise fail every test at start-up.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"testcontainers(\..*)?")
        yield


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresEndpoint]:
    """One PostgreSQL server for the whole session; tests get their own database from `database_url`."""
    external = os.environ.get("RRR_DATABASE_URL")
    if external:
        yield PostgresEndpoint(admin_dsn=external)
        return
    if _use_containers():
        postgres = _testcontainers("testcontainers.postgres")
        container = postgres.PostgresContainer(_POSTGRES_IMAGE, dbname="postgres", driver=None)
        with _tolerating_testcontainers_deprecations():
            container.start()
        try:
            yield PostgresEndpoint(admin_dsn=container.get_connection_url())
        finally:
            with _tolerating_testcontainers_deprecations():
                container.stop()
        return
    server = PostgresServer(data_dir=tmp_path_factory.mktemp("postgres"), password=new_password())
    server.start()
    try:
        yield PostgresEndpoint(admin_dsn=server.admin_dsn, server=server)
    finally:
        server.stop()


@pytest.fixture
async def database_url(pg_server: PostgresEndpoint) -> AsyncIterator[str]:
    """A database of its own for one test (`test_<hex>`), dropped afterwards."""
    async with temporary_database(pg_server.admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def _nats_container_url() -> Iterator[str]:
    # A container takes seconds to start, so the containers mode shares one server for the session,
    # which tests must tolerate anyway for RRR_NATS_URL.
    nats = _testcontainers("testcontainers.nats")
    container = nats.NatsContainer(_NATS_IMAGE).with_command("--jetstream --http_port 8222")
    with _tolerating_testcontainers_deprecations():
        container.start()
    try:
        yield container.get_conn_string()
    finally:
        with _tolerating_testcontainers_deprecations():
            container.stop()


@pytest.fixture
def nats_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsEndpoint]:
    """A nats-server with JetStream for one test; `.server` is set when the test may kill or restart it.

    With `RRR_NATS_URL` or in containers mode the server is shared by the session and `.server` is None.
    """
    external = os.environ.get("RRR_NATS_URL")
    if external:
        yield NatsEndpoint(url=external)
        return
    if _use_containers():
        yield NatsEndpoint(url=request.getfixturevalue("_nats_container_url"))
        return
    server = NatsServer(data_dir=tmp_path / "nats", users=new_users())
    server.start()
    try:
        yield NatsEndpoint.of(server)
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server nodes routed to one another, with the system's users, for one test."""
    if os.environ.get("RRR_NATS_URL") or _use_containers():
        pytest.skip("a cluster runs from the embedded binary only (RRR_NATS_URL or containers mode is set)")
    cluster = NatsCluster(data_dir=tmp_path / "nats-cluster", size=3, users=new_users())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_url(nats_server: NatsEndpoint) -> str:
    """URL of the test's nats-server, as the admin user."""
    return nats_server.url


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """`rrr-stack` on a run directory of the test's own; everything it started is stopped afterwards."""
    running = Stack(tmp_path / "run")
    try:
        yield running
    finally:
        for replay in running.replays:
            if replay.poll() is None:  # a failed test leaves it waiting for a broker that will not come
                replay.kill()
            replay.communicate()
        down = running.cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        pids = [int(p.read_text().split()[0]) for p in running.run.root.rglob("*.pid")]
        assert not [p for p in pids if pid_alive(p)], "processes left running after down"
