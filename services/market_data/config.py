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
    cache_max_symbols: Annotated[int, msgspec.Meta(ge=1, description="latest-quote cache size")] = 100_000
