"""What execution asks of a venue, and what a venue reports back: the interface a venue adapter implements.

Execution owns the order state machine, risk and positions; a venue owns matching. Execution asks a venue to
``submit`` an order (FIX NewOrderSingle), ``cancel`` it (OrderCancelRequest) or ``replace`` its quantity or
prices (OrderCancelReplaceRequest), and shows it the market (``on_quote``); the venue answers each with
execution reports (``rrr.execution.matching``: Accepted, Rejected, Triggered, Fill, Canceled, Expired,
Replaced), which execution turns into order events, statuses and positions. At start, execution hands the
venue the orders its own state says are open (``reconcile``); the venue answers with what execution missed.

``PaperVenue`` (``rrr.execution.paper_venue``) is one implementation: it matches in process, on the quotes of
the market-data stream, so its answers come at once and depend only on the quotes. An adapter for a live venue
implements the same calls by sending the requests and answering with the reports the venue sent back (in its
reconciliation: the venue's open orders and its fills since the state execution restored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from rrr.execution.matching import Report, Touch, WorkingOrder


class Venue(Protocol):
    """A place orders go to and fills come from."""

    @property
    def name(self) -> str:
        """The venue's name, on every fill (``paper``)."""
        ...

    def submit(self, order: WorkingOrder, touch: Touch, net: Fraction) -> list[Report]:
        """Place ``order``, sent at ``touch``; ``net`` is the symbol's position (for reduce-only)."""
        ...

    def cancel(self, symbol: str, order_id: str, reason: str, ts_event: int) -> list[Report]:
        """Cancel what is open of an order the venue holds.

        Raises:
            KeyError: the venue holds no such open order.
        """
        ...

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
        """Change an open order's quantity or prices (None: unchanged), judged at ``touch`` (by default the
        newest quote the venue matched the symbol's orders against).

        Raises:
            KeyError: the venue holds no such open order.
            ValueError: the change is not one the order can take (a quantity not above what is filled, a
                price its type does not have).
        """
        ...

    def on_quote(
        self, symbol: str, touch: Touch, net: Fraction, hold: Callable[[WorkingOrder], bool] | None = None
    ) -> list[Report]:
        """Show the venue a quote of ``symbol``: what its open orders did there. The orders ``hold`` says yes
        to do not see it (they are shown it again later)."""
        ...

    def get(self, symbol: str, order_id: str) -> WorkingOrder | None:
        """An open order the venue holds, or None."""
        ...

    def resting(self, symbol: str) -> bool:
        """Whether the venue holds open orders of ``symbol`` (its quotes then matter)."""
        ...

    def holds_any(self) -> bool:
        """Whether the venue holds any open order."""
        ...

    def last(self, symbol: str) -> Touch | None:
        """The newest quote of ``symbol`` the venue matched its orders against, or None."""
        ...

    def working(self, symbol: str | None = None) -> Iterator[WorkingOrder]:
        """The open orders the venue holds (of ``symbol``), oldest first."""
        ...

    def reconcile(
        self,
        known: Iterable[WorkingOrder],
        arrivals: Mapping[str, Touch] | None = None,
        net: Callable[[str], Fraction] | None = None,
    ) -> list[Report]:
        """Take ``known``, the orders execution's restored state says are open, as what the venue holds, and
        report what execution does not know of them yet; ``arrivals`` names those placed since the state
        execution restored, with the quote each was placed at, ``net`` gives a symbol's position."""
        ...
