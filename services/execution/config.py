"""Configuration of the execution service."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.execution.instruments import Instruments, InstrumentsError, load
from rrr.shared.config import ServiceConfig
from rrr.shared.errors import ConfigError
from rrr.shared.universe import DEFAULT_MAX_SYMBOLS, MaxSymbols, SymbolList, Universe, configured


class ExecutionConfig(ServiceConfig, frozen=True, kw_only=True):
    """Risk limits and the paper venue's settings; env ``RRR_EXECUTION_<FIELD>``.

    The default limits are wide enough for the demo and the bundled data (single-digit quantities of FX
    and crypto) and stop an order that is off by orders of magnitude.
    """

    max_order_qty: Annotated[Decimal, msgspec.Meta(description="largest quantity of one order")] = Decimal(1000)
    max_notional_quote: Annotated[
        Decimal, msgspec.Meta(description="largest qty * price of one order, in the quote currency")
    ] = Decimal(10_000_000)
    slippage_bps: Annotated[Decimal, msgspec.Meta(description="paper venue: price moved against the order")] = Decimal(
        0
    )
    fee_bps: Annotated[Decimal, msgspec.Meta(description="paper venue: fee on notional")] = Decimal(0)
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="order commands fetched per batch")] = 256
    max_symbols: MaxSymbols = DEFAULT_MAX_SYMBOLS
    symbols: SymbolList = ()
    snapshot_every_ms: Annotated[
        int,
        msgspec.Meta(ge=10, description="how often the state is snapshotted (a restart reads the events after it)"),
    ] = 10_000
    max_orders: Annotated[int, msgspec.Meta(ge=1000, description="order statuses kept in memory")] = 1_000_000
    instruments: Annotated[
        str,
        msgspec.Meta(
            max_length=4096,
            description="a TOML file of instruments (symbol, tick, lot, quote_currency); without it any price and "
            "quantity passes",
        ),
    ] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.universe()
        self.instrument_table()
        for name in ("max_order_qty", "max_notional_quote"):
            value: Decimal = getattr(self, name)
            if not (value.is_finite() and value > 0):
                raise ConfigError(name, "a number > 0", str(value))
        for name in ("slippage_bps", "fee_bps"):
            value = getattr(self, name)
            if not (value.is_finite() and 0 <= value < 10_000):
                raise ConfigError(name, "a number from 0 to below 10000", str(value))

    def universe(self) -> Universe:
        """The symbols this instance admits.

        Raises:
            ConfigError: ``symbols`` lists an invalid symbol, or more of this shard's than ``max_symbols``.
        """
        return configured("execution", self.max_symbols, self.symbols, self.shard, self.shards)

    def instrument_table(self) -> Instruments:
        """The instruments this instance knows: read from ``instruments``, or none (every symbol gets the default).

        Raises:
            ConfigError: the file cannot be read or is not an instruments file (its line says why).
        """
        if not self.instruments:
            return Instruments()
        try:
            return load(Path(self.instruments))
        except InstrumentsError as exc:
            raise ConfigError("instruments", f"{exc.expected} at {exc.where} of {exc.path}", exc.got) from None
