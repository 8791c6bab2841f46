"""Databases on a PostgreSQL server: created, dropped, and temporary ones for a test or a bench run."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = ["create_database", "drop_database", "temporary_database", "with_database"]


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
