"""Configuration of the strategy service."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.shared.config import ServiceConfig
from rrr.shared.errors import ConfigError
from rrr.shared.universe import DEFAULT_MAX_SYMBOLS, MaxSymbols, SymbolList, Universe, configured
from rrr.strategy import loading
from rrr.strategy.engine import StrategySpec


class StrategyConfig(ServiceConfig, frozen=True, kw_only=True):
    """Which strategies run and with what parameters; env ``RRR_STRATEGY_<FIELD>``."""

    strategy: Annotated[
        str,
        msgspec.Meta(
            max_length=300,
            description="the strategy: a built-in (sma_cross, mean_reversion, ml_signal), an installed one (--list) "
            "or package.module:Class",
        ),
    ] = "sma_cross"
    params: Annotated[
        str, msgspec.Meta(max_length=100_000, description="its parameters as a JSON object (sma_cross: --fast etc.)")
    ] = ""
    strategy_id: Annotated[
        str,
        msgspec.Meta(
            max_length=64, description="the id on its signals and orders (default: the built-in's name, or the class's)"
        ),
    ] = ""
    config: Annotated[
        str, msgspec.Meta(max_length=4096, description="a TOML file listing several strategies (instead of --strategy)")
    ] = ""
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
        if self.config and (self.params or self.strategy_id or self.strategy != "sma_cross"):
            raise ConfigError("config", "either --config or --strategy/--params/--strategy-id, not both", self.config)

    def universe(self) -> Universe:
        """The symbols this instance admits.

        Raises:
            ConfigError: ``symbols`` lists an invalid symbol, or more of this shard's than ``max_symbols``.
        """
        return configured("strategy", self.max_symbols, self.symbols, self.shard, self.shards)

    def load(self) -> tuple[str, list[StrategySpec]]:
        """The name of this instance's set of strategies (its snapshot's) and the strategies, loaded.

        Raises:
            StrategyLoadError: a strategy cannot be found or imported, its parameters do not validate, the
                file cannot be read or has unknown keys, or it lists too many strategies.
        """
        if self.config:
            return loading.from_file(Path(self.config))
        strategy_id = self.strategy_id or loading.default_id(self.strategy)
        params: dict[str, object] | str = self.params
        if not params and self.strategy == "sma_cross":
            params = {"fast": self.fast, "slow": self.slow, "qty": str(self.qty)}
        return strategy_id, [loading.spec(strategy_id, self.strategy, params)]
