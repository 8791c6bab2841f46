"""The paper venue: matches orders in process against quotes read from the market-data stream."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from rrr.execution.matching import Accepted, Costs, Fill, Report, SymbolBook, Touch, Triggered, WorkingOrder
from rrr.shared.messages import Quote, Side, SubmitOrder


@dataclass(frozen=True, slots=True)
class PaperFill:
    """The venue's answer to one market order."""

    fill_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class PaperVenue:
    """A venue (``rrr.execution.venue.Venue``) whose matching is ``rrr.execution.matching``, one book per symbol.

    Its quotes are the market-data stream's, read by execution itself (``rrr.execution.market``), never the
    prices an order carries; a fill depends only on them, never on when the order is processed, so a replay
    gives the same fills however fast it runs. ``slippage_bps`` moves a taker's price against it;
    ``fee_bps`` charges a fee on every fill's notional. Both default to zero.
    """

    name: str = "paper"
    slippage_bps: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)
    # The open orders, per symbol: the venue's state, which execution snapshots and restores (reconcile).
    books: dict[str, SymbolBook] = field(default_factory=dict, compare=False, repr=False)

    @property
    def costs(self) -> Costs:
        """Its slippage and fees, as every fill of the venue pays them (``rrr.execution.matching``)."""
        return Costs(self.slippage_bps, self.fee_bps)

    @staticmethod
    def touch(side: Side, quote: Quote) -> Decimal:
        """What an order of ``side`` takes at ``quote``: the ask for a buy, the bid for a sell."""
        return quote.ask if side == "buy" else quote.bid

    def execute(self, order: SubmitOrder, quote: Quote) -> PaperFill:
        """Fill a market ``order`` in full at ``quote``'s touch (what ``submit`` does with one)."""
        costs = self.costs
        price = costs.taker_price(order.side, self.touch(order.side, quote))
        fee = costs.fee(price, order.qty)
        # The order's first fill: its id derives from the client order id, so a retried order maps to the
        # same fill id and a redelivery can never store a second fill.
        return PaperFill(fill_id=f"{order.id}:1", price=price, qty=order.qty, fee=fee)

    # -- the venue interface -----------------------------------------------------------------------------

    def _book(self, symbol: str) -> SymbolBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = SymbolBook(symbol, self.costs)
        return book

    def _tidy(self, symbol: str, reports: list[Report]) -> list[Report]:
        # A symbol without open orders has no book: "any open order?" is then whether there is a book.
        book = self.books.get(symbol)
        if book is not None and not book.orders:
            del self.books[symbol]
        return reports

    def submit(self, order: WorkingOrder, touch: Touch, net: Fraction = Fraction(0)) -> list[Report]:
        """Place ``order`` at ``touch``: accepted and, where it can trade there, filled; or rejected."""
        return self._tidy(order.symbol, self._book(order.symbol).submit(order, touch, net))

    def cancel(self, symbol: str, order_id: str, reason: str, ts_event: int) -> list[Report]:
        """Cancel an open order.

        Raises:
            KeyError: no such open order.
        """
        book = self.books.get(symbol)
        if book is None:
            raise KeyError(order_id)
        return self._tidy(symbol, book.cancel(order_id, reason, ts_event))

    def replace(
        self,
        symbol: str,
        order_id: str,
        ts_event: int,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        touch: Touch | None = None,
    ) -> list[Report]:
        """Change an open order (see ``SymbolBook.replace``).

        Raises:
            KeyError: no such open order.
            ValueError: a change the order cannot take.
        """
        book = self.books.get(symbol)
        if book is None:
            raise KeyError(order_id)
        return book.replace(order_id, ts_event, qty=qty, limit_price=limit_price, stop_price=stop_price, touch=touch)

    def on_quote(
        self,
        symbol: str,
        touch: Touch,
        net: Fraction = Fraction(0),
        hold: Callable[[WorkingOrder], bool] | None = None,
    ) -> list[Report]:
        """Match the open orders of ``symbol`` (those ``hold`` does not hold back) against ``touch``."""
        book = self.books.get(symbol)
        return [] if book is None else self._tidy(symbol, book.on_quote(touch, net, hold))

    def get(self, symbol: str, order_id: str) -> WorkingOrder | None:
        """An open order, or None."""
        book = self.books.get(symbol)
        return None if book is None else book.orders.get(order_id)

    def working(self, symbol: str | None = None) -> Iterator[WorkingOrder]:
        """The open orders (of ``symbol``), oldest first per symbol."""
        if symbol is not None:
            book = self.books.get(symbol)
            if book is not None:
                yield from book
            return
        for book in self.books.values():
            yield from book

    def resting(self, symbol: str) -> bool:
        """Whether ``symbol`` has open orders (so its quotes must be matched)."""
        return symbol in self.books

    def holds_any(self) -> bool:
        """Whether any symbol has open orders."""
        return bool(self.books)

    def last(self, symbol: str) -> Touch | None:
        """The newest quote of ``symbol`` matched, or None."""
        book = self.books.get(symbol)
        return None if book is None else book.last

    def reconcile(
        self,
        known: Iterable[WorkingOrder],
        arrivals: Mapping[str, Touch] | None = None,
        net: Callable[[str], Fraction] | None = None,
    ) -> list[Report]:
        """Hold exactly ``known``, and report what execution does not know yet of the orders in ``arrivals``.

        The paper venue's state is execution's own, restored from its snapshot and events. The one thing a
        crash can cut short is an order's arrival, whose events are published together: an order in
        ``arrivals`` (by id, the quote it was placed at) is taken from the start again at that quote, on a
        book of its own, and the reports of it that its restored state does not reflect are returned (the
        arrival is deterministic: those it does reflect would have the same ids). It keeps its place among
        the others.
        """
        self.books.clear()
        for order in known:
            self._book(order.symbol).orders[order.id] = order
        out: list[Report] = []
        for order_id, touch in (arrivals or {}).items():
            held = next((o for o in self.working() if o.id == order_id), None)
            if held is None:
                continue
            fresh = dataclasses.replace(
                held, filled=Decimal(0), fills=0, triggered=False, replaces=0, arriving=False, matched_to=(0, 0)
            )
            scratch = SymbolBook(held.symbol, self.costs)
            reports = scratch.submit(fresh, touch, Fraction(0) if net is None else net(held.symbol))
            out.extend(
                r
                for r in reports
                if not isinstance(r, Accepted)
                and not (isinstance(r, Triggered) and held.triggered)
                and not (isinstance(r, Fill) and r.number <= held.fills)
            )
            held.filled, held.fills, held.triggered = fresh.filled, fresh.fills, fresh.triggered
            held.matched_to = max(held.matched_to, fresh.matched_to)
            if fresh.id not in scratch.orders:
                del self.books[held.symbol].orders[held.id]
                self._tidy(held.symbol, [])
        return out
