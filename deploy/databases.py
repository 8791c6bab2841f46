"""Databases on a PostgreSQL server: created, dropped, and temporary ones for a test or a bench run."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "create_database",
    "drop_database",
    "ensure_login_role",
    "reload_config",
    "scram_verifier",
    "set_password",
    "temporary_database",
    "with_database",
]

_SCRAM_ITERATIONS = 4096


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
        # Asked first rather than caught: a refused CREATE writes an ERROR line to the server's log at
        # every start of an existing system.
        if exist_ok and await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
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


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, as PostgreSQL stores it (RFC 5802, RFC 7677).

    A role's password is sent to the server as this verifier, never in clear: the server keeps it as it
    is, and nothing that logs the statement (an error, ``log_statement``) can show the password.
    """
    salt = salt if salt is not None else os.urandom(16)
    # SASLprep leaves the ASCII passwords of this project as they are.
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def set_password(admin_dsn: str, role: str, password: str) -> None:
    """Give ``role`` the password ``password`` (sent as its SCRAM verifier)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"ALTER ROLE {_quote_ident(role)} PASSWORD {_quote_literal(scram_verifier(password))}")
    finally:
        await conn.close()


async def ensure_login_role(admin_dsn: str, role: str, password: str, *, database: str) -> None:
    """Create ``role`` (LOGIN, nothing else) if missing, set its password, let it connect to ``database`` only.

    ``database`` stops accepting connections from roles not granted CONNECT on it (PUBLIC loses it), so
    each role reaches only the databases it was given.
    """
    conn = await asyncpg.connect(admin_dsn)
    try:
        verifier = _quote_literal(scram_verifier(password))
        name = _quote_ident(role)
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"ALTER ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {verifier}")
        else:
            await conn.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {verifier}")
        db = _quote_ident(database)
        await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {name}")
    finally:
        await conn.close()


async def reload_config(admin_dsn: str) -> None:
    """Have the server read its configuration files again (pg_hba.conf)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
