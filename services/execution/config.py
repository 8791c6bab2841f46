"""Configuration of the execution service."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.execution.instruments import Instruments, InstrumentsError, load
from rrr.execution.risk import RiskLimits
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
    price_band_bps: Annotated[
        Decimal,
        msgspec.Meta(description="a limit or stop price at most this far from its quote's mid (0: no band)"),
    ] = Decimal(0)
    max_position_qty: Annotated[
        Decimal, msgspec.Meta(description="largest position in one symbol, open orders included (0: none)")
    ] = Decimal(0)
    max_position_notional_quote: Annotated[
        Decimal, msgspec.Meta(description="largest position in one symbol, valued at the order's price (0: none)")
    ] = Decimal(0)
    max_strategy_position_qty: Annotated[
        Decimal, msgspec.Meta(description="largest position of one strategy in one symbol (0: none)")
    ] = Decimal(0)
    max_strategy_position_notional_quote: Annotated[
        Decimal, msgspec.Meta(description="largest position of one strategy in one symbol, valued (0: none)")
    ] = Decimal(0)
    max_orders_per_s: Annotated[
        int, msgspec.Meta(ge=0, description="orders one strategy may have accepted per second of event time (0: any)")
    ] = 0
    max_gross_exposure_quote: Annotated[
        Decimal, msgspec.Meta(description="account-wide, every shard: sum of |qty| x mark per quote currency (0: none)")
    ] = Decimal(0)
    max_net_exposure_quote: Annotated[
        Decimal, msgspec.Meta(description="account-wide, every shard: |sum of qty x mark| per quote currency (0: none)")
    ] = Decimal(0)
    max_daily_loss_quote: Annotated[
        Decimal,
        msgspec.Meta(description="account-wide: a loss today (realized and at the marks) beyond it halts (0: none)"),
    ] = Decimal(0)
    risk_publish_ms: Annotated[
        int, msgspec.Meta(ge=1, le=60_000, description="how often at most this shard's holdings go to the account view")
    ] = 50
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
        for name in (
            "price_band_bps", "max_position_qty", "max_position_notional_quote", "max_strategy_position_qty",
            "max_strategy_position_notional_quote", "max_gross_exposure_quote", "max_net_exposure_quote",
            "max_daily_loss_quote",
        ):  # fmt: skip
            value = getattr(self, name)
            if not (value.is_finite() and value >= 0):
                raise ConfigError(name, "a number >= 0 (0: no limit)", str(value))
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

    def limits(self) -> RiskLimits:
        """The risk limits these settings set."""
        return RiskLimits(
            max_order_qty=self.max_order_qty,
            max_notional_quote=self.max_notional_quote,
            price_band_bps=self.price_band_bps,
            max_position_qty=self.max_position_qty,
            max_position_notional_quote=self.max_position_notional_quote,
            max_strategy_position_qty=self.max_strategy_position_qty,
            max_strategy_position_notional_quote=self.max_strategy_position_notional_quote,
            max_orders_per_s=self.max_orders_per_s,
            max_gross_exposure_quote=self.max_gross_exposure_quote,
            max_net_exposure_quote=self.max_net_exposure_quote,
            max_daily_loss_quote=self.max_daily_loss_quote,
        )
