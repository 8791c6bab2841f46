"""Configuration of the market-data service."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from rrr.shared.config import ServiceConfig


class MarketDataConfig(ServiceConfig, frozen=True, kw_only=True):
    """Feed selection and its settings; env ``RRR_MARKET_DATA_<FIELD>``."""

    feed: Annotated[Literal["sim", "none"], msgspec.Meta(description="live feed: sim or none")] = "sim"
    symbols: Annotated[
        tuple[str, ...], msgspec.Meta(min_length=1, description="simulated symbols, comma-separated")
    ] = ("SIMA", "SIMB", "SIMC", "SIMD")
    rate_hz: Annotated[
        float, msgspec.Meta(gt=0, le=1_000_000, description="simulated quotes per second, all symbols")
    ] = 20.0
    seed: Annotated[int, msgspec.Meta(description="simulator seed")] = 7
    trade_every: Annotated[int, msgspec.Meta(ge=0, description="simulate one trade every N quotes (0: none)")] = 10
    replay_window: Annotated[
        int, msgspec.Meta(ge=1, le=100_000, description="replay: publishes awaiting a stream ack at once")
    ] = 2048
    # Bounds on a replay file: beyond one it is refused before anything is published, rather than read into
    # memory (telling repeated rows costs 16 to 80 bytes a row and about 1.3 KB a symbol).
    replay_max_file_mb: Annotated[int, msgspec.Meta(ge=1, description="replay: refuse a larger file")] = 2048
    replay_max_rows: Annotated[int, msgspec.Meta(ge=1, description="replay: refuse a file of more data rows")] = (
        20_000_000
    )
    replay_max_symbols: Annotated[int, msgspec.Meta(ge=1, description="replay: refuse a file of more symbols")] = (
        100_000
    )
    cache_max_symbols: Annotated[int, msgspec.Meta(ge=1, description="latest-quote cache size")] = 100_000
