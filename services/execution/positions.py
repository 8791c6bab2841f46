"""Positions per symbol: the average-cost ``Position`` now lives in ``rrr.shared.positions``, so that the
strategy's context and the backtest keep positions with the very same code. Re-exported here unchanged."""

from __future__ import annotations

from rrr.shared.positions import WIRE_PLACES, Position, to_decimal

__all__ = ["WIRE_PLACES", "Position", "to_decimal"]
