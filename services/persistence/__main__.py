"""``rrr-persistence``: write market data, signals, orders, fills and positions to PostgreSQL.

``rrr-persistence migrate`` applies the schema's migrations as the database's owner and grants the
service's own role what it needs, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from rrr.persistence.app import SERVICE, service
from rrr.persistence.config import PersistenceConfig
from rrr.persistence.schema import grant_reader, grant_writer, migrate
from rrr.shared import runner
from rrr.shared.config import parse_config, redact
from rrr.shared.errors import RRRError


async def _migrate(database_url: str, writers: Sequence[str], readers: Sequence[str]) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        done = await migrate(conn)
        for role in writers:
            await grant_writer(conn, role)
        for role in readers:
            await grant_reader(conn, role)
        return done
    finally:
        await conn.close()


def migrate_main(argv: Sequence[str]) -> int:
    """``rrr-persistence migrate``: apply the migrations the database lacks, as its owner."""
    parser = argparse.ArgumentParser(
        prog="rrr-persistence migrate",
        description="Apply the schema's migrations as the database's owner (the DSN from RRR_DATABASE_URL, "
        "RRR_PERSISTENCE_DATABASE_URL or --database-url), then grant roles their rights.",
    )
    parser.add_argument("--grant-writer", action="append", default=[], metavar="ROLE",
                        help="a role that may read and write rows (persistence's own), nothing else")  # fmt: skip
    parser.add_argument("--grant-reader", action="append", default=[], metavar="ROLE",
                        help="a role that may read rows, nothing else")  # fmt: skip
    config, args = parse_config(PersistenceConfig, SERVICE, argv, parser=parser)
    runner.setup_logging(config.log_level)
    try:
        done = asyncio.run(_migrate(config.database_url, args.grant_writer, args.grant_reader))
    except (OSError, asyncpg.PostgresError, RRRError) as exc:
        print(f"rrr-persistence migrate: error at {redact(config.database_url)}: {exc}", file=sys.stderr)
        return 1
    print(f"migrations applied now: {done or 'none, the schema was current'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-persistence``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["migrate"]:
        return migrate_main(args[1:])
    return runner.main(service, args)


if __name__ == "__main__":
    sys.exit(main())
