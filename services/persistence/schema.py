"""Versioned SQL migrations, applied in order, each exactly once, by the database's owner only.

``rrr-stack up`` applies them as the owner (``rrr-persistence migrate``) and grants the service's own
role what it needs to write (``grant_writer``: SELECT, INSERT, UPDATE on the tables, EXECUTE on the functions
that write them, nothing else). The service checks the schema is current at start; connected as the owner it
applies what is missing itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from rrr.persistence.store import Connection
from rrr.shared.errors import RRRError

_log = logging.getLogger(__name__)
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# Any fixed number: concurrent persistence instances serialise their migrations on it.
_LOCK_KEY = 0x5252_5201


@dataclass(frozen=True, slots=True)
class Migration:
    """One ``NNNN_name.sql`` file."""

    version: int
    name: str
    sql: str


class MigrationError(RRRError):
    """The migrations on disk do not match the ones recorded in the database."""


class SchemaNotCurrentError(RRRError):
    """The database lacks migrations and the connected role may not apply them."""

    def __init__(self, role: str, applied: list[int], wanted: list[int]) -> None:
        self.role = role
        self.applied = applied
        self.wanted = wanted
        missing = sorted(set(wanted) - set(applied))
        super().__init__(
            f"the database schema lacks migrations {missing} (applied: {applied or 'none'}), and role {role!r} "
            "may not apply them: run `rrr-persistence migrate` once with the database owner's DSN in "
            "RRR_DATABASE_URL (`rrr-stack up` does), then start persistence again"
        )


class WriterNotGrantedError(RRRError):
    """The connected role lacks a right persistence writes with (granted by ``grant_writer``)."""

    def __init__(self, role: str, database: str, what: str) -> None:
        self.role = role
        super().__init__(
            f"role {role!r} may not {what} in database {database!r}: run `rrr-persistence migrate --grant-writer "
            f"{role}` once with the database owner's DSN in RRR_DATABASE_URL (`rrr-stack up` does), then start "
            "persistence again"
        )


async def ensure_writer(conn: Connection) -> None:
    """Raise WriterNotGrantedError unless ``conn``'s role has the rights ``grant_writer`` gives beyond its
    tables' (those the schema's check covers).

    Raises:
        WriterNotGrantedError: the role may not create temporary tables.
    """
    row = await conn.fetchrow(
        "SELECT current_user AS role, current_database() AS db, "
        "has_database_privilege(current_database(), 'TEMPORARY') AS temporary"
    )
    assert row is not None
    if not row["temporary"]:
        raise WriterNotGrantedError(row["role"], row["db"], "create temporary tables (quotes arrive by COPY in one)")


# The tables persistence writes; the migrations' own bookkeeping is only read.
_BOOKKEEPING = "schema_migrations"
# The functions persistence writes with (their migrations take EXECUTE from PUBLIC). They run with the
# caller's rights: EXECUTE lets the writer do nothing its table grants do not.
_WRITER_FUNCTIONS = ("write_order_events",)


def available() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in resources.files("rrr.persistence").joinpath("migrations").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3 ... without gaps, got {versions}")
    return found


async def migrate(conn: Connection) -> list[int]:
    """Apply the migrations the database lacks; return the versions applied now."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r["name"] for r in await conn.fetch("SELECT version, name FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                if done[migration.version] != migration.name:
                    raise MigrationError(
                        f"migration {migration.version} is {done[migration.version]!r} in the database "
                        f"but {migration.name!r} on disk"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration.version)
            _log.info("applied migration %04d_%s", migration.version, migration.name)
    return applied_now


async def applied(conn: Connection) -> list[int]:
    """The versions recorded in the database, in order; empty before the first migration."""
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    except asyncpg.UndefinedTableError:
        return []
    return [r["version"] for r in rows]


async def ensure_current(conn: Connection) -> list[int]:
    """Make sure every migration is applied before writing; return the versions applied now.

    A role that owns the schema applies what is missing; any other role (the service's own, which may
    only read and write rows) finds the schema current or stops.

    Raises:
        SchemaNotCurrentError: migrations are missing and the role may not apply them.
    """
    wanted = [m.version for m in available()]
    done = await applied(conn)
    if done == wanted:
        return []
    try:
        return await migrate(conn)
    except asyncpg.InsufficientPrivilegeError:
        role = await conn.fetchval("SELECT current_user")
        raise SchemaNotCurrentError(str(role), done, wanted) from None


async def grant_writer(conn: Connection, role: str) -> None:
    """Let ``role`` read and write the rows of every table, and call the functions that write them; nothing
    else: no DDL but the temporary tables of its own sessions (quotes arrive by COPY in one), no DELETE.

    Run after each migration (a new table needs its grant too).
    """
    name = _quote_ident(role)
    database = _quote_ident(await conn.fetchval("SELECT current_database()"))
    async with conn.transaction():
        await conn.execute(f"GRANT TEMPORARY ON DATABASE {database} TO {name}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        for table in await _tables(conn):
            privileges = "SELECT" if table == _BOOKKEEPING else "SELECT, INSERT, UPDATE"
            await conn.execute(f"GRANT {privileges} ON TABLE public.{_quote_ident(table)} TO {name}")
        for function in _WRITER_FUNCTIONS:
            await conn.execute(f"GRANT EXECUTE ON FUNCTION public.{_quote_ident(function)} TO {name}")


async def grant_reader(conn: Connection, role: str) -> None:
    """Let ``role`` read every table and view, and nothing else."""
    name = _quote_ident(role)
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        for table in [*await _tables(conn), *await _views(conn)]:
            await conn.execute(f"GRANT SELECT ON TABLE public.{_quote_ident(table)} TO {name}")


async def _tables(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return [r["tablename"] for r in rows]


async def _views(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY viewname")
    return [r["viewname"] for r in rows]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
