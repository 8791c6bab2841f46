"""Configuration of the persistence service."""

from __future__ import annotations

from typing import Annotated

import msgspec

from rrr.shared.config import ServiceConfig


class PersistenceConfig(ServiceConfig, frozen=True, kw_only=True):
    """Where and how to write; env ``RRR_PERSISTENCE_<FIELD>`` (the DSN also as ``RRR_DATABASE_URL``)."""

    database_url: Annotated[str, msgspec.Meta(min_length=1, description="PostgreSQL DSN")] = (
        "postgresql://postgres@127.0.0.1:5432/rrr"
    )
    batch_max_rows: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=100_000,
            description="messages per batch and rows per transaction, at most (a larger QuoteBatch alone)",
        ),
    ] = 2000
    quote_batch_max_rows: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=100_000,
            description="rows per transaction of market data, at most (a larger QuoteBatch alone): a quote row "
            "costs a tenth of a message row, so its transactions are larger",
        ),
    ] = 8192
    batch_max_ms: Annotated[
        int,
        msgspec.Meta(
            ge=1, le=60_000, description="longest wait for a batch to fill (acknowledged consumers: the retries)"
        ),
    ] = 100
    batch_linger_ms: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=1000,
            description="after a message arrives, how long to let more gather before writing (fewer, larger "
            "transactions; 0: write at once)",
        ),
    ] = 2
    pool_max_size: Annotated[int, msgspec.Meta(ge=1, le=100, description="PostgreSQL connections, at most")] = 6
