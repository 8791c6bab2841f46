"""The real servers the other tests stand on: they start, answer, keep their data, and stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType

from rrr.deploy.databases import temporary_database
from rrr.deploy.nats_server import NatsEndpoint, NatsServer
from rrr.deploy.pid_files import pid_alive, stop_pid_file
from rrr.deploy.postgres_server import PostgresEndpoint, PostgresServer
from rrr.deploy.processes import ServerStartError, free_ports, port_free


def _unique(prefix: str) -> str:
    # Tests may share a server (RRR_NATS_URL), so names must not collide.
    return f"{prefix}_{uuid.uuid4().hex}"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield client
    finally:
        await client.close()


async def test_nats_server_delivers_a_published_message_to_a_subscriber(nc: NatsClient) -> None:
    subject = _unique("test.roundtrip")
    sub = await nc.subscribe(subject)
    await nc.flush()

    await nc.publish(subject, b"hello")
    msg = await sub.next_msg(timeout=5)

    assert msg.subject == subject
    assert msg.data == b"hello"


async def test_nats_server_has_jetstream_enabled(nc: NatsClient) -> None:
    js = nc.jetstream()
    stream = _unique("TEST")
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE)
    try:
        ack = await js.publish(f"{stream}.one", b"payload")

        assert ack.stream == stream
        assert ack.seq == 1
    finally:
        await js.delete_stream(stream)


async def test_nats_server_keeps_jetstream_messages_across_restart(nats_server: NatsEndpoint) -> None:
    if nats_server.server is None:
        pytest.skip("restart needs a nats-server started by this test, not RRR_NATS_URL or a container")
    server = nats_server.server
    stream = _unique("TEST")
    client = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE)
    await js.publish(f"{stream}.kept", b"survives")
    await client.close()
    port_before = server.port

    server.restart()

    client = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        stored = await client.jetstream().get_msg(stream, 1)
        assert server.port == port_before
        assert stored.subject == f"{stream}.kept"
        assert stored.data == b"survives"
    finally:
        await client.close()


def test_nats_server_start_on_a_busy_port_reports_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = NatsServer(data_dir=tmp_path, port=busy.getsockname()[1])

        with pytest.raises(ServerStartError, match="address already in use") as caught:
            server.start(timeout_s=10)

    assert caught.value.server == "nats-server"
    assert "exited" in caught.value.seen
    assert server.pid is None
    assert not server.pid_file.exists()


def test_a_nats_server_given_one_port_twice_starts_on_other_ports(tmp_path: Path) -> None:
    server = NatsServer(data_dir=tmp_path)
    # What choosing its ports one at a time could do: the kernel handed the client port out again.
    server.monitor_port = server.port
    try:
        server.start(timeout_s=30)
        assert server.port != server.monitor_port
        assert server.answers("/healthz")
    finally:
        server.stop()


def test_a_monitoring_port_that_answers_in_another_protocol_is_not_healthy_and_raises_nothing(
    tmp_path: Path,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def speak_nats() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b'INFO {"server_id":"other","port":4222}\r\n')

        talker = threading.Thread(target=speak_nats, daemon=True)
        talker.start()
        server = NatsServer(data_dir=tmp_path, monitor_port=listener.getsockname()[1])
        assert not server.answers("/healthz")
        talker.join(timeout=10)
        assert not talker.is_alive()


def test_free_ports_are_all_different_and_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    assert all(port_free(port) for port in ports)


def test_a_port_whose_last_server_died_is_free_despite_its_connections_in_time_wait() -> None:
    # Listening with SO_REUSEADDR as nats-server and PostgreSQL do, then closing first on the server side:
    # the connection stays in TIME_WAIT on the server's port.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            assert not port_free(port), "a live listener holds its port"
            accepted.close()
            assert client.recv(1) == b""  # the server side closed first
    assert port_free(port)


async def test_postgres_server_answers_a_query(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert (await conn.fetchval("SELECT current_database()")).startswith("test_")
    finally:
        await conn.close()


async def test_each_test_database_is_isolated_and_dropped_afterwards(
    database_url: str, pg_server: PostgresEndpoint
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE only_here (id int)")
    finally:
        await conn.close()

    async with temporary_database(pg_server.admin_dsn) as other_url:
        other = await asyncpg.connect(other_url)
        try:
            other_name = await other.fetchval("SELECT current_database()")
            assert await other.fetchval("SELECT to_regclass('only_here')") is None
        finally:
            await other.close()

    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", other_name) == 0
    finally:
        await admin.close()


async def test_postgres_server_keeps_committed_rows_across_a_crash(tmp_path: Path) -> None:
    server = PostgresServer(data_dir=tmp_path)
    server.start()
    try:
        conn = await asyncpg.connect(server.dsn)
        await conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
        await conn.close()

        server.kill()
        server.start()

        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT id FROM kept") == 42
        finally:
            await conn.close()
    finally:
        server.stop()


async def test_postgres_server_moves_a_cluster_that_trusted_everyone_to_passwords(tmp_path: Path) -> None:
    # A cluster made by an earlier version, initialised with --auth=trust: its next start requires passwords.
    server = PostgresServer(data_dir=tmp_path)
    server.start()
    server.stop()
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    without_password = f"postgresql://postgres@{server.host}:{server.port}/postgres"

    server.start()
    try:
        assert "trust" not in [
            line.split()[-1] for line in hba.read_text().splitlines() if line.split()[:1] != ["#"] and line.split()
        ]
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(without_password, password="")
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT current_user") == "postgres"
        finally:
            await conn.close()
    finally:
        server.stop()


_START_DETACHED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rrr.deploy.nats_server import NatsServer
    from rrr.deploy.postgres_server import PostgresServer

    kind, data_dir = sys.argv[1], Path(sys.argv[2])
    server = NatsServer(data_dir=data_dir) if kind == "nats" else PostgresServer(data_dir=data_dir)
    server.start()
    print(server.pid)
    """
)


@pytest.mark.parametrize(
    ("server_cls", "pid_name", "stop_signal"),
    [(NatsServer, "nats.pid", signal.SIGTERM), (PostgresServer, "postgres.pid", signal.SIGINT)],
)
def test_stop_pid_file_stops_a_server_started_by_another_process(
    tmp_path: Path, server_cls: type[NatsServer | PostgresServer], pid_name: str, stop_signal: signal.Signals
) -> None:
    pid_file = tmp_path / pid_name
    kind = "nats" if server_cls is NatsServer else "postgres"
    started = subprocess.run(
        [sys.executable, "-c", _START_DETACHED, kind, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stderr
        pid = int(started.stdout.split()[-1])
        assert pid_alive(pid), "the server should outlive the process that started it"
        assert int(pid_file.read_text()) == pid

        assert stop_pid_file(pid_file, stop_signal, timeout_s=30)

        assert not pid_alive(pid)
        assert not pid_file.exists()
        assert not server_cls.stop_detached(tmp_path)
    finally:
        stop_pid_file(pid_file, signal.SIGKILL, timeout_s=5)
