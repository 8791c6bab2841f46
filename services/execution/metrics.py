"""What execution exports beyond its counters: orders by state and rejection reason, positions and PnL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from rrr.shared.metrics import MetricSource, counter, gauge

if TYPE_CHECKING:
    from rrr.execution.handlers import Book

# A risk check names the limit an order broke ("qty 5 exceeds max_order_qty 2"): the limit is the reason's kind.
_LIMIT = re.compile(r"\bexceeds ([a-z_]{1,48})\b")
# More kinds than this and the rest count as "other": a label stays bounded whatever a reason says.
MAX_REJECTION_KINDS = 16


def rejection_kind(reason: str) -> str:
    """What an order was rejected for, as a label: the limit it broke, ``no_market_price`` or ``other``."""
    if reason.startswith("no market price"):
        return "no_market_price"
    found = _LIMIT.search(reason)
    return found.group(1) if found else "other"


def count_rejection(rejections: dict[str, int], reason: str) -> None:
    """Count one rejection under its kind (at most ``MAX_REJECTION_KINDS`` kinds, then ``other``)."""
    kind = rejection_kind(reason)
    if kind not in rejections and len(rejections) >= MAX_REJECTION_KINDS:
        kind = "other"
    rejections[kind] = rejections.get(kind, 0) + 1


class BookMetrics(MetricSource):
    """Orders, rejections and positions of execution's book, read at each scrape."""

    def __init__(self, book: Book) -> None:
        self._book = book

    def collect(self) -> Iterator[Metric]:
        """``rrr_orders_total{state}``, ``rrr_orders_rejected_total{reason}``, positions and realized PnL."""
        book = self._book
        orders = counter("rrr_orders", "Orders that reached a final state, by state.", ["state"])
        orders.add_metric(["filled"], book.counters.orders_filled)
        orders.add_metric(["rejected"], book.counters.orders_rejected)
        rejected = counter(
            "rrr_orders_rejected", "Orders rejected, by kind of reason (the limit broken, or no price).", ["reason"]
        )
        for kind, count in sorted(book.rejections.items()):
            rejected.add_metric([kind], count)
        open_positions = gauge("rrr_positions_open", "Symbols with a position that is not flat.")
        open_positions.add_metric([], sum(1 for p in book.positions.values() if p.qty))
        realized = gauge(
            "rrr_realized_pnl",
            "Realized PnL of every symbol's position, fees charged, summed in the symbols' quote currencies.",
        )
        realized.add_metric([], float(sum(p.realized_pnl for p in book.positions.values())))
        yield from (orders, rejected, open_positions, realized)
