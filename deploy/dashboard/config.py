"""The dashboard's settings: ``RRR_UI_*`` environment variables and ``rrr-ui`` flags."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from rrr.shared.config import redact
from rrr.shared.errors import ConfigError

__all__ = ["NAME", "UiConfig", "url_of"]

# The dashboard's name in its settings (RRR_UI_*), its NATS user and its log.
NAME = "ui"


class UiConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What ``rrr-ui`` serves, where, and how much it may take from the system and give each browser."""

    nats_url: Annotated[str, msgspec.Meta(description="NATS URL of the dashboard's user")] = "nats://127.0.0.1:4222"
    database_url: Annotated[str, msgspec.Meta(description="PostgreSQL DSN of a role that may read (rrr_reader)")] = ""
    host: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=255,
            description="address to serve the page on; another than 127.0.0.1 shows it (and its halt button) to "
            "whoever reaches that address",
        ),
    ] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="port to serve the page on; 0: a free one")] = 0
    allowed_hosts: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9.-]{1,253}\Z")]],
        msgspec.Meta(
            max_length=16,
            description="host names the page may be asked for besides IP addresses and localhost (comma-separated)",
        ),
    ] = []
    push_hz: Annotated[float, msgspec.Meta(ge=0.2, le=10, description="most updates a second sent to one browser")] = (
        4.0
    )
    max_clients: Annotated[int, msgspec.Meta(ge=1, le=256, description="most browsers connected at once")] = 16
    refresh_ms: Annotated[
        int,
        msgspec.Meta(
            ge=200,
            le=60_000,
            description="how often the database is read; slower by itself so that reading takes at most a tenth "
            "of the time",
        ),
    ] = 1000
    rows: Annotated[int, msgspec.Meta(ge=1, le=200, description="latest orders and fills shown")] = 20
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], msgspec.Meta(description="log level")] = "INFO"

    def __post_init__(self) -> None:
        if not self.database_url:
            raise ConfigError(
                "--database-url", "the DSN of a role that may read the database (RRR_UI_DATABASE_URL)", ""
            )

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={redact(getattr(self, name))!r}" for name in self.__struct_fields__)
        return f"{type(self).__name__}({fields})"


def url_of(host: str, port: int) -> str:
    """The page's address."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
