"""Configuration of the market-data service."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from rrr.market_data.venues.symbols import parse_symbols
from rrr.shared.config import ServiceConfig
from rrr.shared.errors import ConfigError

SIM_SYMBOLS = ("SIMA", "SIMB", "SIMC", "SIMD")


class MarketDataConfig(ServiceConfig, frozen=True, kw_only=True):
    """Feed selection and its settings; env ``RRR_MARKET_DATA_<FIELD>``."""

    feed: Annotated[
        Literal["sim", "none", "live"], msgspec.Meta(description="feed: sim, none or live (public venues)")
    ] = "sim"
    symbols: Annotated[
        tuple[str, ...],
        msgspec.Meta(
            min_length=1,
            max_length=100_000,
            description="symbols, comma-separated: simulated ones, or live venue symbols (BTCUSDT, BTC-USD, BTC/USD; "
            "venue:SYMBOL when several venues run)",
        ),
    ] = SIM_SYMBOLS
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

    # -- the live feed (``feed=live``): see rrr.market_data.venues ---------------------------------------
    venues: Annotated[
        tuple[Literal["binance", "coinbase", "kraken"], ...],
        msgspec.Meta(
            min_length=1, max_length=3, description="live: venues, comma-separated (binance, coinbase, kraken)"
        ),
    ] = ("binance",)
    venue_urls: Annotated[
        tuple[str, ...],
        msgspec.Meta(max_length=3, description="live: venue=ws(s)://... replacing a venue's public endpoint"),
    ] = ()
    live_max_symbols: Annotated[
        int, msgspec.Meta(ge=1, le=100_000, description="live: refuse more symbols than this of one venue")
    ] = 2000
    live_symbols_per_connection: Annotated[
        int, msgspec.Meta(ge=0, le=1000, description="live: symbols a connection carries (0: the venue's limit)")
    ] = 0
    live_max_frame_bytes: Annotated[
        int, msgspec.Meta(ge=1024, le=1 << 20, description="live: a larger frame is refused and counted")
    ] = 64 * 1024
    live_connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300, description="live: connect timeout")] = 10.0
    live_ping_interval_s: Annotated[
        float, msgspec.Meta(gt=0, le=300, description="live: ping a quiet connection this often, drop it without pong")
    ] = 10.0
    live_stale_connection_s: Annotated[
        float, msgspec.Meta(gt=0, le=3600, description="live: reconnect a connection without a frame for this long")
    ] = 30.0
    live_stale_symbol_s: Annotated[
        float,
        msgspec.Meta(ge=0, le=86400, description="live: reconnect when a symbol had no data for this long (0: never)"),
    ] = 600.0
    live_backoff_initial_s: Annotated[
        float, msgspec.Meta(gt=0, le=60, description="live: first reconnect delay, doubling from there")
    ] = 0.5
    live_backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600, description="live: longest reconnect delay")] = (
        30.0
    )
    live_rollover_after_s: Annotated[
        float,
        msgspec.Meta(
            ge=0, description="live: replace a connection at this age (0: before the venue's own close, if any)"
        ),
    ] = 0.0
    record_max_mb: Annotated[int, msgspec.Meta(ge=1, le=1 << 20, description="record: stop writing past this")] = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feed != "live":
            return
        if self.symbols == SIM_SYMBOLS:
            raise ConfigError("symbols", "the venue symbols to subscribe (--symbols BTCUSDT,ETHUSDT)", "none")
        by_venue = parse_symbols(self.symbols, self.venues)
        for venue, symbols in by_venue.items():
            if len(symbols) > self.live_max_symbols:
                raise ConfigError(
                    "symbols", f"at most --live-max-symbols={self.live_max_symbols} of {venue}", len(symbols)
                )
        self.urls()

    def urls(self) -> dict[str, str]:
        """The endpoint overrides by venue."""
        urls: dict[str, str] = {}
        for spec in self.venue_urls:
            venue, sep, url = spec.partition("=")
            if not sep or venue not in self.venues or not url.startswith(("ws://", "wss://")):
                raise ConfigError("venue_urls", "venue=ws://... or venue=wss://... of a venue that runs", spec)
            urls[venue] = url
        return urls
