"""Who each process of the local system is: its NATS user, its PostgreSQL role, and their secrets.

Every secret is generated once into ``.run/secrets/`` (the directory 0700, each file 0600) and read back
by every later command: ``rrr-stack up`` and the supervisor give nats-server its users and PostgreSQL its
superuser's password, and give each process it starts its own identity through the environment, never
the command line and never ``state.json``:

- each service its NATS user (``RRR_<SERVICE>_NATS_URL``), persistence its PostgreSQL role
  ``rrr_persistence`` (rows only: SELECT, INSERT, UPDATE), and the key that signs dead letters;
- the tools, through ``.run/env`` (0600) for ``rrr-stack exec``: the tap's read-only user as
  ``RRR_NATS_URL``, the replay's as ``RRR_MARKET_DATA_NATS_URL`` (what ``rrr-market-data replay`` reads),
  the dead-letter tool's as ``RRR_DLQ_NATS_URL``, the trading control's (``rrr-control``: halt, resume) as
  ``RRR_CONTROL_NATS_URL``, the dashboard's as ``RRR_UI_NATS_URL``, and ``rrr_reader`` (SELECT only) as
  ``RRR_DATABASE_URL``;
- the dashboard (``rrr-ui``) the ``ui`` NATS user and ``rrr_reader``, through its environment.

The PostgreSQL superuser is for migrations only: ``up`` applies them itself, as the owner, before it starts
persistence.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from rrr.deploy.credentials import SecretsDir, with_userinfo, write_private
from rrr.deploy.databases import ensure_login_role
from rrr.deploy.nats_permissions import ADMIN, ROLES
from rrr.deploy.postgres_server import PostgresServer
from rrr.deploy.run_dir import RunDir
from rrr.persistence.schema import grant_reader, grant_writer, migrate
from rrr.shared.config import env_name

__all__ = ["DATABASE", "PG_READER", "PG_WRITER", "Identities"]

HOST = "127.0.0.1"
# The system's database, as PostgresServer creates it.
DATABASE = "rrr"
PG_WRITER = "rrr_persistence"
PG_READER = "rrr_reader"
_PG_SUPERUSER_FILE = "postgres"
_DLQ_KEY_FILE = "dlq_key"
_NATS_ROUTE_FILE = "nats_route"
# One client port, or every node's of a cluster: a URL then names each node (comma-separated).
NatsPorts = int | Sequence[int]


class Identities:
    """The identities of the system in a run directory, their secrets in ``<run>/secrets``."""

    def __init__(self, run: RunDir, *, tls: bool = False) -> None:
        self.run = run
        self.secrets = SecretsDir(run.root / "secrets")
        # NATS takes TLS only: its URLs say so (tls://), and the clients verify it (RRR_NATS_TLS_*).
        self.tls = tls

    def status_url(self, nats_port: NatsPorts) -> str:
        """The URL `rrr-stack` watches heartbeats with: the status user's, which may only listen to ctl.>."""
        return self.nats_url("status", nats_port)

    def nats_users(self) -> dict[str, str]:
        """Every NATS user and its password, for nats.conf."""
        return {role: self.secrets.password(f"nats_{role}") for role in ROLES}

    def nats_url(self, role: str, port: NatsPorts) -> str:
        """The NATS URL of ``role``, with its password; with several ports, one URL per node, comma-separated."""
        password = self.secrets.password(f"nats_{role}")
        ports = [port] if isinstance(port, int) else port
        scheme = "tls" if self.tls else "nats"
        return ",".join(with_userinfo(f"{scheme}://{HOST}:{p}", role, password) for p in ports)

    def nats_route_password(self) -> str:
        """What the nodes of a NATS cluster authenticate their routes to one another with."""
        return self.secrets.password(_NATS_ROUTE_FILE)

    def has_nats_users(self) -> bool:
        """Whether this run directory's secrets were made (an older .run/ has none)."""
        return (self.secrets.directory / f"nats_{ADMIN}").exists()

    def pg_superuser_password(self) -> str:
        """The PostgreSQL superuser's password: migrations and administration only."""
        return self.secrets.password(_PG_SUPERUSER_FILE)

    def pg_url(self, role: str, pg_port: int) -> str:
        """The DSN of ``role`` on the system's database."""
        return with_userinfo(f"postgresql://{HOST}:{pg_port}/{DATABASE}", role, self.secrets.password(f"pg_{role}"))

    def service_env(self, service: str, nats_port: NatsPorts, pg_port: int) -> dict[str, str]:
        """The identity of one service process: its NATS user, and persistence's database role."""
        env = {
            env_name(service, "nats_url"): self.nats_url(service, nats_port),
            "RRR_DLQ_KEY": self.secrets.password(_DLQ_KEY_FILE),
        }
        if service == "persistence":
            env[env_name(service, "database_url")] = self.pg_url(PG_WRITER, pg_port)
        return env

    def ui_env(self, nats_port: NatsPorts, pg_port: int) -> dict[str, str]:
        """The identity of the dashboard: the ``ui`` NATS user, and the read-only database role."""
        return {
            "RRR_UI_NATS_URL": self.nats_url("ui", nats_port),
            "RRR_UI_DATABASE_URL": self.pg_url(PG_READER, pg_port),
        }

    def write_tools_env(
        self, nats_port: NatsPorts, pg_port: int, shards: int, settings: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Write ``.run/env`` (mode 0600) with the least identity each tool needs, and ``settings`` of the
        deployment the tools share with the services; return what it holds."""
        env = {
            "RRR_NATS_URL": self.nats_url("tap", nats_port),
            "RRR_MARKET_DATA_NATS_URL": self.nats_url("replay", nats_port),
            "RRR_DLQ_NATS_URL": self.nats_url("dlq", nats_port),
            "RRR_CONTROL_NATS_URL": self.nats_url("control", nats_port),
            "RRR_UI_NATS_URL": self.nats_url("ui", nats_port),
            "RRR_DLQ_KEY": self.secrets.password(_DLQ_KEY_FILE),
            "RRR_DATABASE_URL": self.pg_url(PG_READER, pg_port),
            "RRR_SHARDS": str(shards),
            **(settings or {}),
        }
        write_private(self.run.env_file, "".join(f"{key}={value}\n" for key, value in env.items()))
        return env

    async def provision_database(self, pg: PostgresServer) -> list[int]:
        """As the superuser: the roles with their passwords, the migrations, each role's grants.

        Idempotent, so every ``up`` runs it: a new migration and its grants are in place before persistence
        starts. Returns the migrations applied now.
        """
        for role in (PG_WRITER, PG_READER):
            await ensure_login_role(pg.admin_dsn, role, self.secrets.password(f"pg_{role}"), database=pg.database)
        conn = await asyncpg.connect(pg.dsn)
        try:
            applied = await migrate(conn)
            await grant_writer(conn, PG_WRITER)
            await grant_reader(conn, PG_READER)
        finally:
            await conn.close()
        return applied

    def __repr__(self) -> str:
        return f"Identities({self.secrets!r})"
