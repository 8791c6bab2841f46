"""``sma_cross`` written as a NautilusTrader strategy, with the decision logic of rrr.strategy.sma_cross.

Same semantics as services/strategy/sma_cross.py: mid = (bid + ask) / 2; fast and slow are the plain means
of the last ``fast`` and ``slow`` mids, defined once ``slow`` quotes were seen; a cross up happens at a
quote where both means were defined at the previous quote with fast <= slow there and fast > slow now (a
cross down mirrors it); a cross up sets the target to +qty, a cross down to -qty, and a market order for
the change goes out when the change is not zero.

Exact, like ours: the means are never divided out. The window holds ``bid.raw + ask.raw`` (the fixed-point
integers NautilusTrader stores prices as, so the doubled mid, exactly), and fast > slow is decided as
``sum_fast * slow > sum_slow * fast`` on Python integers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.events import OrderDenied, OrderFilled, OrderRejected
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.objects import Quantity
from nautilus_trader.trading.strategy import Strategy


class SmaCrossConfig(StrategyConfig, frozen=True):
    """Parameters, as ``rrr-strategy --fast 5 --slow 20 --qty 1``."""

    instrument_id: InstrumentId
    fast: int = 5
    slow: int = 20
    qty: int = 1
    mark_every: int = 0  # > 0: record time.perf_counter() every this many quotes (throughput along the run)
    purge_every: int = 0  # > 0: purge closed orders from the cache every this many quotes (diagnostic only)


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill as the strategy saw it: when, which side, how much, at what raw price."""

    ts_event: int
    side: str
    qty: int
    price_raw: int


class SmaCrossStrategy(Strategy):
    """The exact moving-average crossing of the quote mid, one instrument."""

    def __init__(self, config: SmaCrossConfig) -> None:
        super().__init__(config)
        if not 1 <= config.fast < config.slow:
            raise ValueError(f"sma_cross needs 1 <= fast < slow, got fast={config.fast} slow={config.slow}")
        self.instrument_id = config.instrument_id
        self.fast = config.fast
        self.slow = config.slow
        self.qty = config.qty
        self._window: deque[int] = deque(maxlen=config.slow)
        self._sum_fast = 0
        self._sum_slow = 0
        self._prev_relation: int | None = None
        self.target = 0
        self.quotes_seen = 0
        self.crosses = 0
        self.orders_submitted = 0
        self.order_ts: list[int] = []  # ts_event of the quote that triggered each order
        self.fills: list[Fill] = []
        self.rejected = 0
        self.denied = 0
        self.mark_every = config.mark_every
        self.purge_every = config.purge_every
        self.marks: list[float] = []

    def on_start(self) -> None:
        """Subscribe to the instrument's quotes."""
        self.subscribe_quote_ticks(self.instrument_id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        """Feed one quote; submit a market order when a cross moves the target."""
        seen = self.quotes_seen
        if self.mark_every and seen % self.mark_every == 0:
            self.marks.append(time.perf_counter())
        if self.purge_every and seen and seen % self.purge_every == 0:
            self.cache.purge_closed_orders(tick.ts_event)
        window = self._window
        fast, slow = self.fast, self.slow
        mid2 = tick.bid_price.raw + tick.ask_price.raw
        n = len(window)
        if n == slow:
            self._sum_slow -= window[0]
        if n >= fast:
            self._sum_fast -= window[-fast]
        self._sum_slow += mid2
        self._sum_fast += mid2
        window.append(mid2)
        self.quotes_seen = seen + 1
        if n + 1 < slow:
            return
        diff = self._sum_fast * slow - self._sum_slow * fast
        relation = (diff > 0) - (diff < 0)
        prev, self._prev_relation = self._prev_relation, relation
        if prev is None:
            return
        if prev <= 0 < relation:
            new_target = self.qty
        elif prev >= 0 > relation:
            new_target = -self.qty
        else:
            return
        self.crosses += 1
        change = new_target - self.target
        self.target = new_target
        if change:
            order = self.order_factory.market(
                instrument_id=self.instrument_id,
                order_side=OrderSide.BUY if change > 0 else OrderSide.SELL,
                quantity=Quantity.from_int(abs(change)),
            )
            self.orders_submitted += 1
            self.order_ts.append(tick.ts_event)
            self.submit_order(order)

    def on_order_filled(self, event: OrderFilled) -> None:
        """Record the fill."""
        side = "buy" if event.order_side == OrderSide.BUY else "sell"
        self.fills.append(Fill(event.ts_event, side, int(event.last_qty.as_decimal()), event.last_px.raw))

    def on_order_rejected(self, event: OrderRejected) -> None:
        """Count a venue rejection."""
        self.rejected += 1

    def on_order_denied(self, event: OrderDenied) -> None:
        """Count a pre-trade risk denial."""
        self.denied += 1
