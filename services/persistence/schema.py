"""Versioned SQL migrations, applied in order at start-up, each exactly once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

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
