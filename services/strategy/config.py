"""Configuration of the strategy service."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from rrr.shared.config import ServiceConfig
from rrr.shared.errors import ConfigError
from rrr.shared.universe import DEFAULT_MAX_SYMBOLS, MaxSymbols, SymbolList, Universe, configured


class StrategyConfig(ServiceConfig, frozen=True, kw_only=True):
    """Which strategy runs and with what parameters; env ``RRR_STRATEGY_<FIELD>``."""

    strategy: Annotated[Literal["sma_cross"], msgspec.Meta(description="built-in strategy to run")] = "sma_cross"
    fast: Annotated[int, msgspec.Meta(ge=1, description="sma_cross: quotes in the fast mean")] = 5
    slow: Annotated[int, msgspec.Meta(ge=2, description="sma_cross: quotes in the slow mean")] = 20
    qty: Annotated[Decimal, msgspec.Meta(description="sma_cross: target position size, > 0")] = Decimal(1)
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="quotes fetched per batch")] = 512
    max_symbols: MaxSymbols = DEFAULT_MAX_SYMBOLS
    symbols: SymbolList = ()
    snapshot_every_ms: Annotated[
        int, msgspec.Meta(ge=10, description="how often the state is snapshotted (a restart resumes from it)")
    ] = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        self.universe()
        if not (self.qty.is_finite() and self.qty > 0):
            raise ConfigError("qty", "a number > 0", str(self.qty))
        if self.fast >= self.slow:
            raise ConfigError("fast", f"fewer quotes than --slow={self.slow}", self.fast)

    def universe(self) -> Universe:
        """The symbols this instance admits.

        Raises:
            ConfigError: ``symbols`` lists an invalid symbol, or more of this shard's than ``max_symbols``.
        """
        return configured("strategy", self.max_symbols, self.symbols, self.shard, self.shards)
