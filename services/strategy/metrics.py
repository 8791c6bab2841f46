"""What the strategy service exports beyond its counters: per strategy, whether it runs, its positions and PnL."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

from prometheus_client.core import Metric

from rrr.shared.metrics import MetricSource, gauge
from rrr.strategy.engine import Engine


class EngineMetrics(MetricSource):
    """Each strategy of the engine, labelled by its id (at most 32 an instance)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        """``rrr_strategy_running``, ``_open_positions``, ``_realized_pnl`` and ``_unrealized_pnl`` per strategy.

        Positions are the strategy's own as the service keeps them (each order filled at its quote's touch);
        PnL is summed over its symbols in their quote currencies, open positions valued at the latest mid.
        """
        running = gauge("rrr_strategy_running", "1 while the strategy runs, 0 once stopped by a failure.", ["strategy"])
        positions = gauge("rrr_strategy_open_positions", "Symbols the strategy holds a position in.", ["strategy"])
        realized = gauge("rrr_strategy_realized_pnl", "Realized PnL of the strategy, fees charged.", ["strategy"])
        unrealized = gauge(
            "rrr_strategy_unrealized_pnl", "PnL of the strategy's open positions at the latest mid.", ["strategy"]
        )
        latest = self._engine.latest
        for runner in self._engine.runners:
            strategy_id = runner.spec.id
            # Assumed fills are applied to positions when read (rrr.strategy.api): the same positions whenever.
            runner.ctx.apply_fills()
            held = [p for p in runner.ctx.positions.values() if p.qty]
            open_pnl = Fraction(0)
            for position in held:
                quote = latest.get(position.symbol)
                if quote is not None:
                    mid = Fraction(quote.bid + quote.ask, 2 * 10**quote.places)
                    open_pnl += (mid - position.avg_price) * position.qty
            running.add_metric([strategy_id], 0 if runner.stopped else 1)
            positions.add_metric([strategy_id], len(held))
            realized.add_metric([strategy_id], float(sum(p.realized_pnl for p in runner.ctx.positions.values())))
            unrealized.add_metric([strategy_id], float(open_pnl))
        yield from (running, positions, realized, unrealized)
