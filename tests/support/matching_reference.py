"""An independent computation of one order's fills over a sequence of quotes, written from the rules in the
README (Order types) and nothing else: no code of ``rrr.execution`` is used.

It follows one order from the quote it was placed at through every later quote, in plain phases (waiting
for its trigger, then trading), in exact fractions. Used to check the paper venue's matching
(``rrr.execution.matching``) on generated and recorded quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class RefQuote:
    """One quote: time, best prices and displayed sizes (None: unknown)."""

    ts: int
    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RefOrder:
    """What was asked."""

    side: str
    qty: Decimal
    kind: str = "market"  # market, limit, stop_market, stop_limit
    limit: Decimal | None = None
    stop: Decimal | None = None
    tif: str = "gtc"  # gtc, ioc, fok, gtd
    expire_ts: int = 0
    post_only: bool = False


@dataclass(frozen=True, slots=True)
class RefFill:
    """One fill: at which quote (its index in the sequence), how much, at what price, what fee."""

    quote: int
    qty: Fraction
    price: Fraction
    fee: Fraction


@dataclass(slots=True)
class RefOutcome:
    """Everything that happened to the order."""

    accepted: bool = True
    fills: list[RefFill] = field(default_factory=list)
    triggered_at: int | None = None
    # "filled", "canceled", "expired", "rejected" or "open".
    end: str = "open"
    end_at: int | None = None


def _price(value: Decimal) -> Fraction:
    return Fraction(value)


def reference(
    order: RefOrder, quotes: list[RefQuote], *, slippage_bps: Decimal = Decimal(0), fee_bps: Decimal = Decimal(0)
) -> RefOutcome:
    """The order's fate when placed at ``quotes[0]`` and matched against every later quote."""
    out = RefOutcome()
    buy = order.side == "buy"
    qty = Fraction(order.qty)
    filled = Fraction(0)
    slip = Fraction(slippage_bps) / 10_000
    fee_rate = Fraction(fee_bps) / 10_000

    def opposite(q: RefQuote) -> tuple[Fraction, Fraction | None]:
        if buy:
            return _price(q.ask), None if q.ask_size is None else Fraction(q.ask_size)
        return _price(q.bid), None if q.bid_size is None else Fraction(q.bid_size)

    def reaches(limit: Fraction, q: RefQuote) -> bool:
        touch, _ = opposite(q)
        return touch <= limit if buy else touch >= limit

    def fill(index: int, amount: Fraction, price: Fraction) -> None:
        nonlocal filled
        filled += amount
        out.fills.append(RefFill(index, amount, price, price * amount * fee_rate))

    def end(what: str, index: int) -> RefOutcome:
        out.end, out.end_at = what, index
        return out

    limit = None if order.limit is None else Fraction(order.limit)
    stop = None if order.stop is None else Fraction(order.stop)
    if order.post_only and limit is not None and reaches(limit, quotes[0]):
        out.accepted = False
        return end("rejected", 0)
    waiting_trigger = order.kind in ("stop_market", "stop_limit")
    resting = False  # a limit that already had its first chance to trade
    for index, q in enumerate(quotes):
        if order.tif == "gtd" and q.ts >= order.expire_ts:
            return end("expired", index)
        if waiting_trigger:
            touch, _ = opposite(q)
            if (buy and touch >= stop) or (not buy and touch <= stop):  # type: ignore[operator]
                waiting_trigger = False
                out.triggered_at = index
            else:
                continue
        touch, size = opposite(q)
        left = qty - filled
        if order.kind in ("market", "stop_market"):
            # Takes everything at the touch, slippage against it.
            fill(index, left, touch * (1 + slip) if buy else touch * (1 - slip))
            return end("filled", index)
        assert limit is not None
        if not resting:
            # Its first chance: at the touch (slippage, capped at the limit), up to the displayed size.
            resting = True
            if reaches(limit, q):
                amount = left if size is None else min(left, size)
                if order.tif == "fok" and amount < left:
                    return end("canceled", index)
                price = touch * (1 + slip) if buy else touch * (1 - slip)
                price = min(price, limit) if buy else max(price, limit)
                if amount > 0:
                    fill(index, amount, price)
                if filled == qty:
                    return end("filled", index)
            if order.tif in ("ioc", "fok"):
                return end("canceled", index)
            continue
        if reaches(limit, q):
            amount = left if size is None else min(left, size)
            if amount > 0:
                fill(index, amount, limit)
            if filled == qty:
                return end("filled", index)
    return out
