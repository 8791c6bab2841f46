"""Who may do what, proved against the real servers: each denial the permissions promise, one by one.

The test's nats-server has the system's users (`rrr.deploy.nats_permissions`); PostgreSQL asks every
connection for its password. Each test connects as one identity and is refused what its role does not
allow: connecting at all without credentials, publishing or subscribing outside its role, forging orders
and events. Where a refusal could hide behind a message that merely had not arrived yet, the identity
sends a permitted message after it on the same connection (NATS keeps a connection's order): once that
one arrived, the refused one never will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from rrr.deploy import control
from rrr.deploy.credentials import new_password, with_userinfo
from rrr.deploy.databases import ensure_login_role, temporary_database
from rrr.deploy.nats_permissions import ROLES, SERVICE_ROLES
from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.postgres_server import PostgresEndpoint
from rrr.deploy.processes import service_command
from rrr.execution import app as execution_app
from rrr.execution.config import ExecutionConfig
from rrr.persistence import app as persistence_app
from rrr.persistence.config import PersistenceConfig
from rrr.persistence.schema import SchemaNotCurrentError, WriterNotGrantedError, available, grant_writer, migrate
from rrr.shared import subjects
from rrr.shared.bus import Bus, NatsAuthorizationError, inbox_prefix, url_user
from rrr.shared.messages import (
    MatchedThrough,
    Message,
    OrderFilled,
    PositionUpdated,
    QuoteBatch,
    QuoteRow,
    StrategyAt,
    encode,
)
from tests.support.factories import (
    make_order,
    make_order_accepted,
    make_order_filled,
    make_quote,
    make_signal,
    unique_id,
    unique_symbol,
)
from tests.support.orders import publish_quote_of, submit_priced
from tests.support.services import Heartbeats, running_service
from tests.support.streams import count
from tests.support.waiting import wait_until

MAX_VERSION = 2**63 - 1


@pytest.fixture
def secured(nats_server: NatsEndpoint) -> NatsEndpoint:
    if not nats_server.secured or nats_server.server is None:
        pytest.skip("needs a nats-server of its own with the system's users (not RRR_NATS_URL or a container)")
    return nats_server


class Identity:
    """A plain NATS client as one user, recording every error the server sends it."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def refused(self, what: str, subject: str) -> None:
        """Wait for the server's "permissions violation for <what> to <subject>"."""
        expected = f'permissions violation for {what} to "{subject.lower()}"'
        await wait_until(lambda: any(expected in e for e in self.errors), 10, expected, describe=lambda: self.errors)


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Identity]:
    errors: list[str] = []

    async def _on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    user = url_user(url)
    nc = await nats.connect(
        url, error_cb=_on_error, max_reconnect_attempts=0, inbox_prefix=inbox_prefix(user or "anonymous")
    )
    try:
        yield Identity(nc, errors)
    finally:
        await nc.close()


class Watcher:
    """The admin, subscribed to a subject pattern, collecting what arrives."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def on(cls, url: str, pattern: str) -> AsyncIterator[Watcher]:
        watcher = cls()
        nc = await nats.connect(url)

        async def _on_msg(msg: Msg) -> None:
            watcher.seen.append(msg.subject)

        try:
            await nc.subscribe(pattern, cb=_on_msg)
            await nc.flush()
            yield watcher
        finally:
            await nc.close()


async def test_an_anonymous_client_is_refused(secured: NatsEndpoint) -> None:
    assert secured.server is not None
    with pytest.raises(NatsAuthorizationError, match="refused a connection without a user"):
        await Bus.connect(secured.server.url, service="test", name="anonymous", timeout_s=10)


async def test_a_wrong_password_is_refused_and_the_error_names_the_user_but_no_password(
    secured: NatsEndpoint,
) -> None:
    assert secured.server is not None
    wrong = new_password()
    url = with_userinfo(secured.server.url, "execution", wrong)
    with pytest.raises(NatsAuthorizationError, match="refused user 'execution'") as refused:
        await Bus.connect(url, service="execution", name="impostor", timeout_s=10)
    assert wrong not in str(refused.value)
    assert "***" in str(refused.value)


async def test_a_raw_tcp_pub_without_credentials_is_refused_and_nothing_reaches_the_command_stream(
    secured: NatsEndpoint, bus: Bus
) -> None:
    # What any local process can do without a client library: a bare CONNECT and PUB over TCP.
    assert secured.server is not None
    order = encode(make_order("EURUSD", side="buy", qty=1, quote_bid="0.000000000001", quote_ask="0.000000000001"))
    reader, writer = await asyncio.open_connection(secured.server.host, secured.server.port)
    try:
        info = await reader.readline()
        assert json.loads(info.removeprefix(b"INFO "))["auth_required"] is True
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        writer.write(b"PUB cmd.order.0.EURUSD %d\r\n%s\r\nPING\r\n" % (len(order), order))
        await writer.drain()
        answer = await asyncio.wait_for(_until_closed(reader), timeout=10)
    finally:
        writer.close()
    assert b"-ERR 'Authorization Violation'" in answer
    assert b"PONG" not in answer
    assert await count(bus.js, "RRR_CMD") == 0


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (or resets it: it may, after -ERR)."""
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while line := await reader.readline():
            answer += line
    return answer


@pytest.mark.parametrize(
    ("role", "forbidden"),
    [
        ("market_data", "cmd.order.0.EURUSD"),
        ("market_data", "evt.order.0.EURUSD"),
        ("strategy", "md.quote.0.EURUSD"),
        ("strategy", "evt.order.0.EURUSD"),
        ("execution", "cmd.order.0.EURUSD"),
        ("execution", "sig.signal.0.EURUSD"),
        ("persistence", "evt.position.0.EURUSD"),
        # A batch's positions travel in one envelope: only execution publishes it.
        ("strategy", "evt.position.0._batch"),
        ("persistence", "evt.position.0._batch"),
        ("persistence", "md.quote.0.EURUSD"),
        ("strategy", "ctl.heartbeat.execution.0"),
        ("execution", "retry.persistence.evt.order.0.EURUSD"),
        ("strategy", "$JS.API.STREAM.DELETE.RRR_CMD"),
        ("market_data", "$JS.API.CONSUMER.DELETE.RRR_CMD.execution-0"),
        # Only the operator's tool (and execution, for the day's loss) sets trading states.
        ("strategy", "$KV.RRR_TRADING.account"),
        ("persistence", "$KV.RRR_TRADING.account"),
        ("strategy", "$KV.RRR_RISK.shard.0"),
        # The lockstep: only a strategy marks how far it handled the quotes, only execution how far it matched.
        ("strategy", "evt.order.0._step"),
        ("market_data", "cmd.order.0._step"),
        ("execution", "cmd.order.0._step"),
        ("persistence", "evt.order.0._step"),
    ],
)
async def test_a_service_publishing_outside_its_role_is_refused_and_the_message_goes_nowhere(
    secured: NatsEndpoint, role: str, forbidden: str
) -> None:
    fence = f"ctl.heartbeat.{role}.fence"
    async with Watcher.on(secured.url, ">") as watcher, connected(secured.url_for(role)) as identity:
        await identity.nc.publish(forbidden, b"forged")
        await identity.nc.publish(fence, b"allowed")
        await identity.refused("publish", forbidden)
        await wait_until(lambda: fence in watcher.seen, 10, f"the permitted {fence} to arrive")
    assert forbidden not in watcher.seen


@pytest.mark.parametrize(
    ("role", "pattern"),
    [
        ("strategy", "cmd.>"),
        ("execution", "md.>"),
        ("market_data", "_INBOX_execution.>"),
        ("tap", "_INBOX_strategy.>"),
        ("status", "evt.>"),
        ("replay", "$KV.RRR_STRATEGY_STATE.>"),
    ],
)
async def test_a_subscription_outside_a_role_is_refused(secured: NatsEndpoint, role: str, pattern: str) -> None:
    async with connected(secured.url_for(role)) as identity:
        await identity.nc.subscribe(pattern)
        await identity.refused("subscription", pattern)


@pytest.mark.parametrize("role", sorted(set(ROLES) - {"execution", "admin", "dlq"}))
async def test_a_position_of_version_2_63_minus_1_from_any_identity_but_execution_cannot_be_published(
    secured: NatsEndpoint, role: str
) -> None:
    symbol = unique_symbol("FRZ")
    subject = subjects.position(symbol, 1)
    freeze = PositionUpdated(
        id=f"{symbol}:{MAX_VERSION}", ts_event=1, ts_init=1, symbol=symbol, qty=Decimal(1_000_000),
        avg_price=Decimal("0.000000000001"), realized_pnl=Decimal(0), version=MAX_VERSION,
    )  # fmt: skip
    async with Watcher.on(secured.url, "evt.>") as watcher, connected(secured.url_for(role)) as identity:
        await identity.nc.publish(subject, encode(freeze))
        await identity.refused("publish", subject)
    assert subject not in watcher.seen


@pytest.mark.parametrize(
    ("role", "message"),
    [(role, "marker") for role in sorted(set(ROLES) - {"strategy", "admin"})]
    + [(role, "progress") for role in sorted(set(ROLES) - {"execution", "admin"})],
)
async def test_a_lockstep_marker_from_anyone_but_the_strategy_or_a_progress_from_anyone_but_execution_goes_nowhere(
    secured: NatsEndpoint, role: str, message: str
) -> None:
    if message == "marker":
        subject = subjects.step(subjects.ORDER_COMMAND, 0)
        forged: Message = StrategyAt(id="m", ts_event=1, ts_init=1, shard=0, strategies=["rests"], quote_seq=10**9)
    else:
        subject = subjects.step(subjects.ORDER_EVENT, 0)
        forged = MatchedThrough(
            id="p", ts_event=1, ts_init=1, shard=0, strategy="rests", marker_seq=10**9, through_seq=10**9
        )
    async with Watcher.on(secured.url, ">") as watcher, connected(secured.url_for(role)) as identity:
        await identity.nc.publish(subject, encode(forged))
        await identity.refused("publish", subject)
    assert subject not in watcher.seen


async def test_the_tap_cannot_forge_an_order_a_fill_or_a_position_and_nothing_is_filled_or_stored(
    secured: NatsEndpoint, bus: Bus, database_url: str, db: asyncpg.Connection, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("FORGE")
    forged_order = await publish_quote_of(bus, make_order(symbol, side="buy", qty=1))
    forged_fill = OrderFilled(
        id="forged:1", ts_event=1, ts_init=1, client_order_id="forged", symbol=symbol, side="buy",
        qty=Decimal(1_000_000), price=Decimal("0.000000000001"), fee=Decimal(0), venue="paper",
    )  # fmt: skip
    forged_position = PositionUpdated(
        id=f"{symbol}:{MAX_VERSION}", ts_event=1, ts_init=1, symbol=symbol, qty=Decimal(1_000_000),
        avg_price=Decimal("0.000000000001"), realized_pnl=Decimal(0), version=MAX_VERSION,
    )  # fmt: skip
    forgeries = {
        subjects.order_command(symbol, 1): encode(forged_order),
        subjects.order_event(symbol, 1): encode(forged_fill),
        subjects.position(symbol, 1): encode(forged_position),
    }
    execution = ExecutionConfig(nats_url=secured.url_for("execution"), heartbeat_ms=100)
    persistence = PersistenceConfig(
        nats_url=secured.url_for("persistence"), database_url=database_url, heartbeat_ms=100, batch_max_ms=20
    )
    async with (
        running_service(execution_app.run, execution, heartbeats) as executing,
        running_service(persistence_app.run, persistence, heartbeats) as persisting,
    ):
        async with connected(secured.url_for("tap")) as tap:
            js = tap.nc.jetstream()
            for subject, payload in forgeries.items():
                await tap.nc.publish(subject, payload)
                with pytest.raises(nats.errors.TimeoutError):
                    await js.publish(subject, payload, timeout=0.5)
                await tap.refused("publish", subject)
        # The one honest order after them: once it is filled and stored, so would the forgeries have been.
        [honest] = await submit_priced(bus, make_order(symbol, side="sell", qty=1))
        await executing.wait_for_counter("orders_filled", 1)
        await persisting.wait_for_counter("rows_fills", 1)
        await wait_until(
            lambda: db.fetchval("SELECT count(*) FROM positions WHERE symbol = $1", symbol), 10, "the position row"
        )
    assert await count(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)) == 1
    assert await db.fetchval("SELECT count(*) FROM fills WHERE symbol = $1", symbol) == 1
    assert await db.fetchval("SELECT client_order_id FROM fills WHERE symbol = $1", symbol) == honest.id
    assert await db.fetchval("SELECT version FROM positions WHERE symbol = $1", symbol) == 1
    assert executing.counters()["orders_filled"] == 1


async def test_the_persistence_role_writes_rows_but_cannot_run_programs_create_tables_or_migrate(
    secured: NatsEndpoint, pg_server: PostgresEndpoint, heartbeats: Heartbeats, bus: Bus
) -> None:
    role, password = f"rrr_persistence_{unique_id('t').replace('-', '_').lower()}", new_password()
    try:
        await _persistence_role_writes_only(secured, pg_server, heartbeats, bus, role, password)
    finally:
        # After its database is gone: nothing is left that the role holds rights on.
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


async def _persistence_role_writes_only(
    secured: NatsEndpoint, pg_server: PostgresEndpoint, heartbeats: Heartbeats, bus: Bus, role: str, password: str
) -> None:
    async with temporary_database(pg_server.admin_dsn) as owner_dsn:
        database = owner_dsn.rsplit("/", 1)[1]
        await ensure_login_role(pg_server.admin_dsn, role, password, database=database)
        role_dsn = with_userinfo(owner_dsn, role, password)
        # Before the migrations: the role may not apply them, and says what to run instead.
        config = PersistenceConfig(nats_url=secured.url_for("persistence"), database_url=role_dsn)
        with pytest.raises(SchemaNotCurrentError, match="rrr-persistence migrate"):
            await persistence_app.run(config, asyncio.Event())

        owner = await asyncpg.connect(owner_dsn)
        try:
            await migrate(owner)
            await grant_writer(owner, role)
            # Quote batches arrive by COPY in a temporary table of the session: without that right the service
            # says so, and how to grant it, instead of refusing every batch.
            await owner.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM "{role}"')
            with pytest.raises(WriterNotGrantedError, match=f"--grant-writer {role}`"):
                await persistence_app.run(config, asyncio.Event())
            await grant_writer(owner, role)
        finally:
            await owner.close()

        quote = make_quote(unique_symbol("LP"))
        signal = make_signal(quote.symbol)
        order = make_order(quote.symbol)
        row = QuoteRow(id=f"{quote.symbol}:b1", symbol=quote.symbol, ts_event=1, bid=110_000, ask=110_002, places=5)
        batch = QuoteBatch(id=unique_id("b"), ts_event=1, ts_init=1, source="test", quotes=[row])
        await bus.publish_persistent(subjects.quote_batch(0, "test"), batch)
        await bus.publish_persistent(subjects.quote(quote.symbol, 1), quote)
        await bus.publish_persistent(subjects.signal(quote.symbol, 1), signal)
        for event in (make_order_accepted(order), make_order_filled(order)):
            await bus.publish_persistent(subjects.order_event(quote.symbol, 1), event)
        config = msgspec.structs.replace(config, heartbeat_ms=100, batch_max_ms=20)
        async with running_service(persistence_app.run, config, heartbeats) as persisting:
            await persisting.wait_for_counter("rows_quotes", 2)
            await persisting.wait_for_counter("rows_signals", 1)
            await persisting.wait_for_counter("rows_fills", 1)

        conn = await asyncpg.connect(role_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM quotes WHERE id = $1", quote.id) == 1
            assert await conn.fetchval("SELECT bid::text FROM quotes WHERE id = $1", row.id) == "1.10000"
            # Signals and order events go through their one-statement writes, with the role's grants alone.
            assert await conn.fetchval("SELECT count(*) FROM signals WHERE id = $1", signal.id) == 1
            status = await conn.fetchval("SELECT status FROM orders WHERE client_order_id = $1", order.id)
            assert status == "filled"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE evil (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM quotes")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE fills")
        finally:
            await conn.close()


async def test_postgresql_refuses_a_wrong_password_and_no_password(pg_server: PostgresEndpoint) -> None:
    if pg_server.server is None:
        pytest.skip("needs the PostgreSQL the fixtures started")
    server = pg_server.server
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(server.dsn_for("postgres", new_password(), "postgres"))
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.ClientCannotConnectError)):
        await asyncpg.connect(f"postgresql://postgres@{server.host}:{server.port}/postgres", password="")


def test_the_nats_configuration_holding_passwords_is_readable_by_its_owner_only(secured: NatsEndpoint) -> None:
    assert secured.server is not None
    config: Path = secured.server.config_file
    assert config.stat().st_mode & 0o777 == 0o600
    for role in SERVICE_ROLES:
        assert f'"user": "{role}"' in config.read_text()


async def test_rrr_persistence_migrate_applies_the_migrations_as_the_owner_with_the_dsn_from_the_environment(
    pg_server: PostgresEndpoint,
) -> None:
    role = f"rrr_writer_{unique_id('t').replace('-', '_').lower()}"
    try:
        async with temporary_database(pg_server.admin_dsn) as owner_dsn:
            database = owner_dsn.rsplit("/", 1)[1]
            await ensure_login_role(pg_server.admin_dsn, role, new_password(), database=database)
            # The owner's DSN in the environment, as the service reads it: no password on the command line.
            env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")} | {"RRR_DATABASE_URL": owner_dsn}
            argv = [*service_command("persistence"), "migrate", "--grant-writer", role]
            done = await asyncio.to_thread(
                subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60, check=False
            )
            assert done.returncode == 0, done.stderr
            # Every migration the package ships, 1 to the newest.
            assert f"migrations applied now: {[m.version for m in available()]}" in done.stdout
            assert "migrations applied now: [1, 2, 3" in done.stdout
            assert owner_dsn.split("@")[0].rsplit(":", 1)[1] not in done.stdout + done.stderr  # no password shown
            conn = await asyncpg.connect(owner_dsn)
            try:
                grants = await conn.fetch(
                    "SELECT table_name, privilege_type FROM information_schema.role_table_grants WHERE grantee = $1",
                    role,
                )
            finally:
                await conn.close()
            privileges = {(g["table_name"], g["privilege_type"]) for g in grants}
            assert {p for t, p in privileges if t == "fills"} == {"SELECT", "INSERT", "UPDATE"}
            assert {p for t, p in privileges if t == "consumer_positions"} == {"SELECT", "INSERT", "UPDATE"}
            assert {p for t, p in privileges if t == "schema_migrations"} == {"SELECT"}
    finally:
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


async def test_the_control_identity_halts_and_resumes_an_execution_that_runs_as_its_own_user(
    secured: NatsEndpoint, bus: Bus, heartbeats: Heartbeats
) -> None:
    execution = ExecutionConfig(nats_url=secured.url_for("execution"), heartbeat_ms=100)
    async with running_service(execution_app.run, execution, heartbeats):
        operator = await Bus.connect(secured.url_for("control"), service="control", name=unique_id("control"))
        try:
            halted = await control.set_state(operator, "halted", symbol="EURUSD", reason="drill")
            during = await control.status(operator)
            resumed = await control.set_state(operator, "active", symbol="EURUSD")
        finally:
            await operator.close()
    assert (halted.missing, resumed.missing) == ([], [])
    assert during["trading"] == {"symbol.EURUSD": {"state": "halted", "reason": "drill", "source": "operator"}}
    assert "0" in during["shards"]
