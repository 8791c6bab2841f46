"""Pre-trade risk: the checks an order must pass before it reaches a venue, and the state they read.

In the order they are checked, each refusal naming the rule, the limit and what was seen:

1. **Trading state** of the account, the order's strategy, its symbol and the pair (the most restrictive
   wins): halted refuses every order; reducing lets through only an order that reduces both the symbol's and
   the strategy's position, which then goes to the venue as reduce-only.
2. **Instrument**: prices on the tick, quantities in whole lots (``rrr.execution.instruments``).
3. **Reduce-only**: the order's side must reduce the symbol's position.
4. **Per order**: ``max_order_qty``; ``max_notional_quote``, valued at ``reference_price``.
5. **Price band** (fat finger): a limit or stop price at most ``price_band_bps`` from the mid of the quote
   the order was sent at.
6. **Order rate** per strategy: at most ``max_orders_per_s`` accepted in any second of event time.
7. **Positions** per symbol and per strategy on it, absolute and notional: what the position would be if
   this order and every open order on its side filled. Only an order that increases exposure is refused.
8. **Account-wide**, across every shard, per quote currency: gross and net exposure at the marks.

The day's loss across every shard (realized and at the marks, since the start of the UTC day in event time)
is not an order's check: when it breaks ``max_daily_loss_quote``, the account is halted
(``rrr.execution.trading``), and the trading state refuses what follows.

Limits at 0 are off. Numbers are exact (fractions); a refusal shows them as decimals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Literal, Protocol

from rrr.execution.instruments import Instruments
from rrr.execution.matching import At, Side, Touch, WorkingOrder
from rrr.execution.positions import Position, to_decimal

DAY_NS = 86_400 * 10**9
SECOND_NS = 10**9
State = Literal["active", "reducing", "halted"]
_SEVERITY: dict[State, int] = {"active": 0, "reducing": 1, "halted": 2}
_ACTIVE: tuple[State, str, str] = ("active", "", "")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits; notional amounts are in the symbol's quote currency (USD for EURUSD, USDT for BTCUSDT).
    Every limit but the first two is off at 0."""

    max_order_qty: Decimal
    max_notional_quote: Decimal
    price_band_bps: Decimal = Decimal(0)
    max_position_qty: Decimal = Decimal(0)
    max_position_notional_quote: Decimal = Decimal(0)
    max_strategy_position_qty: Decimal = Decimal(0)
    max_strategy_position_notional_quote: Decimal = Decimal(0)
    max_orders_per_s: int = 0
    max_gross_exposure_quote: Decimal = Decimal(0)
    max_net_exposure_quote: Decimal = Decimal(0)
    max_daily_loss_quote: Decimal = Decimal(0)


class _Sized(Protocol):
    @property
    def qty(self) -> Decimal: ...


def reference_price(order: WorkingOrder, touch: Touch) -> Decimal:
    """The price an order's notional is valued at: the most it may pay or the least it may receive.

    A market order's is the touch it would take (the ask for a buy, the bid for a sell, of the quote the
    venue read itself: never a price the order carries); a limit or stop-limit order's is its limit price;
    a stop-market order's its stop price, or the touch when the market is already beyond it.
    """
    touch_price = touch.price(order.side)
    if order.limit_price is not None:
        return order.limit_price
    if order.stop_price is not None:
        beyond = touch_price > order.stop_price if order.side == "buy" else touch_price < order.stop_price
        return touch_price if beyond else order.stop_price
    return touch_price


def check_order(order: _Sized, limits: RiskLimits, price: Decimal) -> str | None:
    """Return why ``order`` breaks a per-order limit, or None if it passes; its notional is valued at
    ``price`` (``reference_price``)."""
    if order.qty > limits.max_order_qty:
        return f"qty {order.qty} exceeds max_order_qty {limits.max_order_qty}"
    notional = order.qty * price
    if notional > limits.max_notional_quote:
        return f"notional {notional} exceeds max_notional_quote {limits.max_notional_quote}"
    return None


def _show(value: Fraction) -> str:
    return str(to_decimal(value))


def _signed(side: Side, qty: Decimal | Fraction) -> Fraction:
    return Fraction(qty) if side == "buy" else -Fraction(qty)


_ZERO = Fraction(0)


def _moved_by(total: Fraction, before: Fraction, after: Fraction) -> Fraction:
    """``total - before + after``, exactly, as one Fraction."""
    tn, td, bn, bd, an, ad = (
        total.numerator,
        total.denominator,
        before.numerator,
        before.denominator,
        after.numerator,
        after.denominator,
    )
    return Fraction(tn * bd * ad - bn * td * ad + an * td * bd, td * bd * ad)


def _mid(touch: Touch) -> Fraction:
    """The exact mid of a quote (built from the integers of its prices: one Fraction, not four)."""
    bn, bd = touch.bid.as_integer_ratio()
    an, ad = touch.ask.as_integer_ratio()
    return Fraction(bn * ad + an * bd, 2 * bd * ad)


def reducible(side: Side, net: Fraction) -> Fraction:
    """How much of the position ``net`` an order of ``side`` reduces at most (0: it would increase it)."""
    return -net if (side == "buy" and net < 0) else net if (side == "sell" and net > 0) else Fraction(0)


# -- trading states ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScopeState:
    """One scope's trading state as last applied: the bucket's revision of its key, and why."""

    state: State
    reason: str
    revision: int


class TradingStates:
    """The trading state of every scope (account, strategy, symbol, strategy on symbol), by bucket key."""

    def __init__(self) -> None:
        self.by_key: dict[str, ScopeState] = {}
        # The revision applied last of every key, active ones (not in ``by_key``) included.
        self.revisions: dict[str, int] = {}

    def set(self, key: str, state: State, reason: str, revision: int) -> bool:
        """Apply a scope's state; False if this or a newer revision of it is applied already."""
        if revision <= self.revisions.get(key, 0):
            return False
        self.revisions[key] = revision
        if state == "active":
            self.by_key.pop(key, None)
        else:
            self.by_key[key] = ScopeState(state, reason, revision)
        return True

    def effective(self, keys: Iterable[str]) -> tuple[State, str, str]:
        """The most restrictive state among ``keys``: (state, the key that sets it, its reason)."""
        worst: tuple[State, str, str] = ("active", "", "")
        for key in keys:
            held = self.by_key.get(key)
            if held is not None and _SEVERITY[held.state] > _SEVERITY[worst[0]]:
                worst = (held.state, key, held.reason)
        return worst

    def count(self, state: State) -> int:
        """How many scopes are in ``state``."""
        return sum(1 for held in self.by_key.values() if held.state == state)


def scope_keys(strategy: str, symbol: str) -> tuple[str, ...]:
    """The trading-state keys an order of ``strategy`` on ``symbol`` answers to."""
    return ("account", f"strategy.{strategy}", f"symbol.{symbol}", f"pair.{strategy}.{symbol}")


def in_scope(key: str, order: WorkingOrder) -> bool:
    """Whether an order answers to the trading state of ``key``."""
    return key in scope_keys(order.strategy, order.symbol)


# -- what the checks read ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Totals:
    gross: Fraction = Fraction(0)
    net: Fraction = Fraction(0)
    pnl: Fraction = Fraction(0)


@dataclass(frozen=True, slots=True)
class OtherShard:
    """Another shard's holdings as the account view last read them (per currency: gross, net, pnl today)."""

    day: int
    currencies: Mapping[str, tuple[Fraction, Fraction, Fraction]]
    # When it was read (this process's clock): how old the view of it is.
    read_at: int


@dataclass(slots=True)
class Risk:
    """The state the checks read besides the order itself, kept as execution applies fills and quotes."""

    limits: RiskLimits
    instruments: Instruments = field(default_factory=Instruments)
    trading: TradingStates = field(default_factory=TradingStates)
    # Per strategy and symbol, the net quantity its orders filled.
    strategy_positions: dict[tuple[str, str], Fraction] = field(default_factory=dict)
    # Per strategy, the event times of its orders accepted in the last second (event time).
    recent_orders: dict[str, deque[int]] = field(default_factory=dict)
    # Per symbol, the mid of its newest quote seen (and where that is in the market-data stream): what
    # positions are marked at.
    marks: dict[str, Fraction] = field(default_factory=dict)
    marked_at: dict[str, At] = field(default_factory=dict)
    # This shard's holdings per quote currency, kept per symbol and in total as fills and marks move them
    # (``contributions`` and ``totals``: what is read is always up to date).
    _contributions: dict[str, tuple[str, Fraction, Fraction, Fraction]] = field(default_factory=dict, init=False)
    _totals: dict[str, _Totals] = field(default_factory=dict, init=False)
    # Positions moved (a fill, a new mark) whose contributions are not taken into the totals yet: an order moves
    # its symbol's mark and position, often several in a batch, and the totals are read far less often than
    # that (the account view, the account-wide checks), so each is revalued once, when next read.
    _moved: dict[str, Position] = field(default_factory=dict, init=False)
    # The UTC day (event time) the day's PnL counts from, and each currency's PnL at its start.
    day: int = 0
    day_start: dict[str, Fraction] = field(default_factory=dict)
    # The other shards, by shard, as last read from the account view.
    others: dict[int, OtherShard] = field(default_factory=dict)
    # Something changed that the account view has not been told yet (``dirty``).
    _dirty: bool = field(default=False, init=False)
    # The UTC day this shard last halted the account for the day's loss (once a day at most).
    halted_day: int = -1

    @property
    def dirty(self) -> bool:
        """Whether something changed that the account view has not been told yet."""
        if self._moved:
            self._revalue_moved()
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if self._moved:
            self._revalue_moved()
        self._dirty = value

    @property
    def contributions(self) -> dict[str, tuple[str, Fraction, Fraction, Fraction]]:
        """Per symbol held: its quote currency, and its gross, net and PnL there."""
        if self._moved:
            self._revalue_moved()
        return self._contributions

    @property
    def totals(self) -> dict[str, _Totals]:
        """This shard's gross, net and PnL per quote currency."""
        if self._moved:
            self._revalue_moved()
        return self._totals

    @property
    def marks_every_quote(self) -> bool:
        """Whether positions are marked at every quote of their symbol: only when an account-wide limit reads
        the marks (otherwise at the quotes orders are sent at and matched against)."""
        limits = self.limits
        return bool(limits.max_gross_exposure_quote or limits.max_net_exposure_quote or limits.max_daily_loss_quote)

    # -- keeping the state ---------------------------------------------------------------------------------

    def on_fill(self, strategy: str, symbol: str, side: Side, qty: Decimal) -> None:
        """A fill of ``strategy``'s order moved its position in ``symbol``."""
        key = (strategy, symbol)
        n, d = qty.as_integer_ratio()
        if side != "buy":
            n = -n
        before = self.strategy_positions.get(key)
        held = Fraction(n, d) if before is None else Fraction(before.numerator * d + n * before.denominator,
                                                              before.denominator * d)  # fmt: skip
        if held:
            self.strategy_positions[key] = held
        else:
            self.strategy_positions.pop(key, None)

    def on_accepted(self, strategy: str, ts_event: int) -> None:
        """An order of ``strategy`` was accepted at ``ts_event``: it counts towards the order rate."""
        if not self.limits.max_orders_per_s:
            return
        recent = self.recent_orders.setdefault(strategy, deque())
        recent.append(ts_event)
        self._forget(recent, ts_event)

    @staticmethod
    def _forget(recent: deque[int], now: int) -> None:
        while recent and recent[0] <= now - SECOND_NS:
            recent.popleft()

    def at(self, ts_event: int) -> None:
        """Event time reached ``ts_event``: at a new UTC day, the day's PnL counts from here."""
        day = ts_event // DAY_NS
        if day > self.day:
            self.day = day
            self.day_start = {ccy: t.pnl for ccy, t in self.totals.items()}
            self._dirty = True

    def mark(self, symbol: str, touch: Touch, position: Position | None) -> None:
        """A quote of ``symbol``: its mid marks the position from now on, unless a later quote of the stream
        marks it already (an order names the quote it was sent at, which may be older)."""
        if touch.at < self.marked_at.get(symbol, (0, 0)):
            return
        self.marked_at[symbol] = touch.at
        mid = _mid(touch)
        if self.marks.get(symbol) == mid:
            return
        self.marks[symbol] = mid
        if position is not None:
            self.revalue(position)

    def marked(self, symbol: str) -> Touch | None:
        """The mark of ``symbol`` as a quote at its mid (what a replace is checked against when the venue has
        matched no quote of it since a restart), or None."""
        mark = self.marks.get(symbol)
        if mark is None:
            return None
        mid = to_decimal(mark)
        return Touch(0, mid, mid, at=self.marked_at.get(symbol, (0, 0)))

    def revalue(self, position: Position) -> None:
        """Take ``position`` (after a fill, or at a new mark) into this shard's totals, by the time they are read
        next."""
        self._moved[position.symbol] = position

    def _revalue_moved(self) -> None:
        moved, self._moved = self._moved, {}
        for position in moved.values():
            self._revalue(position)

    def _revalue(self, position: Position) -> None:
        # Exact, on the integers of each fraction: each value is normalised once (a Fraction operator builds
        # one per step, which made this the costliest part of an order).
        symbol = position.symbol
        currency = self.instruments.rules(symbol).quote_currency
        qty, avg, realized = position.qty, position.avg_price, position.realized_pnl
        mark = self.marks.get(symbol, avg)
        qn, qd, mn, md, an, ad = (
            qty.numerator,
            qty.denominator,
            mark.numerator,
            mark.denominator,
            avg.numerator,
            avg.denominator,
        )
        rn, rd = realized.numerator, realized.denominator
        contribution = (
            currency,
            Fraction(abs(qn) * mn, qd * md),
            Fraction(qn * mn, qd * md),
            # realized + (mark - avg) * qty
            Fraction(rn * md * ad * qd + (mn * ad - an * md) * qn * rd, rd * md * ad * qd),
        )  # fmt: skip
        before = self._contributions.get(symbol)
        if before == contribution:
            return
        if before is not None and before[0] != currency:
            total = self._totals[before[0]]
            total.gross, total.net, total.pnl = (
                _moved_by(total.gross, before[1], _ZERO), _moved_by(total.net, before[2], _ZERO),
                _moved_by(total.pnl, before[3], _ZERO),
            )  # fmt: skip
            before = None
        total = self._totals.setdefault(currency, _Totals())
        if before is None:
            before = (currency, _ZERO, _ZERO, _ZERO)
        total.gross, total.net, total.pnl = (
            _moved_by(total.gross, before[1], contribution[1]), _moved_by(total.net, before[2], contribution[2]),
            _moved_by(total.pnl, before[3], contribution[3]),
        )  # fmt: skip
        self._contributions[symbol] = contribution
        self._dirty = True

    def pnl_today(self, currency: str) -> Fraction:
        """This shard's PnL in ``currency`` since the start of its day."""
        total = self.totals.get(currency)
        return (Fraction(0) if total is None else total.pnl) - self.day_start.get(currency, Fraction(0))

    def account(self, currency: str) -> tuple[Fraction, Fraction, Fraction]:
        """The account's gross, net and day's PnL in ``currency``: this shard's and the others' last read
        (a shard's PnL counts only when it is of the same day)."""
        own = self.totals.get(currency, _Totals())
        gross, net, pnl = own.gross, own.net, self.pnl_today(currency)
        for other in self.others.values():
            row = other.currencies.get(currency)
            if row is not None:
                gross, net = gross + row[0], net + row[1]
                if other.day == self.day:
                    pnl += row[2]
        return gross, net, pnl

    def currencies(self) -> set[str]:
        """Every quote currency held here or on another shard."""
        found = set(self.totals)
        for other in self.others.values():
            found.update(other.currencies)
        return found

    def daily_loss_breach(self) -> str | None:
        """Why the account's loss today breaks ``max_daily_loss_quote`` (in some currency), or None."""
        limit = self.limits.max_daily_loss_quote
        if not limit:
            return None
        for currency in sorted(self.currencies()):
            _, _, pnl = self.account(currency)
            if -pnl > limit:
                return (
                    f"daily loss {_show(-pnl)} {currency or 'quote'} exceeds max_daily_loss_quote {limit} "
                    f"(day {self.day}, across {len(self.others) + 1} shards)"
                )
        return None

    # -- the checks --------------------------------------------------------------------------------------

    def check_submit(
        self, order: WorkingOrder, touch: Touch, net: Fraction, open_orders: Iterable[WorkingOrder]
    ) -> tuple[str | None, bool]:
        """Why ``order`` (sent at ``touch``, its symbol's position ``net``) is refused, or None; and whether it
        goes to the venue as reduce-only (a reducing trading state makes it so)."""
        strategy_net = self.strategy_positions.get((order.strategy, order.symbol), Fraction(0))
        # Every scope active (the usual case): no keys to build and look up.
        state, key, why = (
            self.trading.effective(scope_keys(order.strategy, order.symbol)) if self.trading.by_key else _ACTIVE
        )
        reduce_only = False
        if state == "halted":
            return f"trading halted ({key}): {why}", False
        if state == "reducing":
            room = min(reducible(order.side, net), reducible(order.side, strategy_net))
            if order.qty > room:
                return (
                    f"trading reducing ({key}): a {order.side} of {order.qty} does not reduce the position "
                    f"({order.symbol} {_show(net)}, strategy {order.strategy} {_show(strategy_net)}): {why}",
                    False,
                )
            reduce_only = True
        reason = self._instrument(order.symbol, order.qty, order.limit_price, order.stop_price)
        if reason is None and order.reduce_only and not reducible(order.side, net):
            reason = f"reduce-only {order.side}: the position in {order.symbol} is {_show(net)}, nothing to reduce"
        price = reference_price(order, touch)
        reason = reason or check_order(order, self.limits, price)
        reason = reason or self._band(order.limit_price, order.stop_price, touch)
        reason = reason or self._rate(order.strategy, order.ts_event)
        if reason is None and not (reduce_only or order.reduce_only):
            reason = self._positions(order, order.qty, price, net, strategy_net, open_orders)
            reason = reason or self._account(order, order.qty, price, net)
        return reason, reduce_only

    def check_replace(
        self,
        order: WorkingOrder,
        qty: Decimal,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        touch: Touch | None,
        net: Fraction,
        open_orders: Iterable[WorkingOrder],
    ) -> str | None:
        """Why changing ``order`` to ``qty``, ``limit_price`` and ``stop_price`` is refused, or None."""
        state, key, why = self.trading.effective(scope_keys(order.strategy, order.symbol))
        if state == "halted":
            return f"trading halted ({key}): {why}"
        if state == "reducing" and qty > order.qty:
            return f"trading reducing ({key}): qty {qty} is more than the order's {order.qty}: {why}"
        reason = self._instrument(order.symbol, qty, limit_price, stop_price)
        if reason is not None or touch is None:
            return reason
        probe = WorkingOrder(
            id=order.id, strategy=order.strategy, symbol=order.symbol, side=order.side, qty=qty,
            order_type=order.order_type, limit_price=limit_price, stop_price=stop_price,
        )  # fmt: skip
        price = reference_price(probe, touch)
        reason = check_order(probe, self.limits, price) or self._band(limit_price, stop_price, touch)
        if reason is None and qty > order.qty and not order.reduce_only:
            strategy_net = self.strategy_positions.get((order.strategy, order.symbol), Fraction(0))
            others = [o for o in open_orders if o.id != order.id]
            reason = self._positions(probe, qty - order.filled, price, net, strategy_net, others)
            reason = reason or self._account(probe, qty - order.qty, price, net)
        return reason

    def _instrument(
        self, symbol: str, qty: Decimal, limit_price: Decimal | None, stop_price: Decimal | None
    ) -> str | None:
        instrument = self.instruments.rules(symbol)
        if instrument.tick is None and instrument.lot is None:
            return None
        for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
            if price is not None and instrument.off_tick(price):
                return f"{name} {price} is not a multiple of {symbol}'s tick {instrument.tick}"
        if instrument.off_lot(qty):
            return f"qty {qty} is not a whole number of {symbol}'s lots of {instrument.lot}"
        return None

    def _band(self, limit_price: Decimal | None, stop_price: Decimal | None, touch: Touch) -> str | None:
        band = self.limits.price_band_bps
        if not band:
            return None
        mid = _mid(touch)
        for name, price in (("limit_price", limit_price), ("stop_price", stop_price)):
            if price is None:
                continue
            away = abs(Fraction(price) - mid) / mid * 10_000
            if away > band:
                return (
                    f"price band: {name} {price} is {_show(away.limit_denominator(100))} bps from the mid "
                    f"{_show(mid)} of its quote, beyond price_band_bps {band}"
                )
        return None

    def _rate(self, strategy: str, ts_event: int) -> str | None:
        limit = self.limits.max_orders_per_s
        if not limit:
            return None
        recent = self.recent_orders.get(strategy)
        if recent is None:
            return None
        self._forget(recent, ts_event)
        if len(recent) >= limit:
            return (
                f"order rate: strategy {strategy} had {len(recent)} orders accepted in the second up to "
                f"{ts_event}, max_orders_per_s {limit}"
            )
        return None

    def _positions(
        self,
        order: WorkingOrder,
        qty: Decimal,
        price: Decimal,
        net: Fraction,
        strategy_net: Fraction,
        open_orders: Iterable[WorkingOrder],
    ) -> str | None:
        """Position limits of the symbol and of the strategy on it, with every open order of the order's side
        filled too; only for an order that increases the position."""
        limits = self.limits
        if not (
            limits.max_position_qty
            or limits.max_position_notional_quote
            or limits.max_strategy_position_qty
            or limits.max_strategy_position_notional_quote
        ):
            return None
        same_side = [o for o in open_orders if o.side == order.side]
        pending = sum((Fraction(o.leaves) for o in same_side), Fraction(0))
        pending_own = sum((Fraction(o.leaves) for o in same_side if o.strategy == order.strategy), Fraction(0))
        rows = (
            ("position", order.symbol, net, pending, limits.max_position_qty, limits.max_position_notional_quote),
            (f"strategy {order.strategy} position", order.symbol, strategy_net, pending_own,
             limits.max_strategy_position_qty, limits.max_strategy_position_notional_quote),
        )  # fmt: skip
        for what, symbol, held, waiting, max_qty, max_notional in rows:
            after = held + _signed(order.side, Fraction(qty) + waiting)
            if abs(after) <= abs(held):
                continue
            if max_qty and abs(after) > max_qty:
                return (
                    f"{what} in {symbol} would be {_show(after)} with this and its open orders filled, beyond "
                    f"{'max_position_qty' if what == 'position' else 'max_strategy_position_qty'} {max_qty}"
                )
            notional = abs(after) * Fraction(price)
            if max_notional and notional > max_notional:
                name = "max_position_notional_quote" if what == "position" else "max_strategy_position_notional_quote"
                return f"{what} in {symbol} would be worth {_show(notional)} at {price}, beyond {name} {max_notional}"
        return None

    def _account(self, order: WorkingOrder, qty: Decimal, price: Decimal, net: Fraction) -> str | None:
        """The account-wide exposure limits, for ``qty`` more of an order at ``price`` on a symbol whose position
        is ``net`` (the day's loss halts the account instead: see ``daily_loss_breach``)."""
        limits = self.limits
        if not (limits.max_gross_exposure_quote or limits.max_net_exposure_quote):
            return None
        currency = self.instruments.rules(order.symbol).quote_currency
        gross, account_net, _ = self.account(currency)
        mark = self.marks.get(order.symbol, Fraction(price))
        signed = _signed(order.side, qty)
        gross_after = gross + (abs(net + signed) - abs(net)) * mark
        net_after = account_net + signed * mark
        ccy = currency or "quote"
        views = f"{len(self.others) + 1} shards"
        if limits.max_gross_exposure_quote and gross_after > gross and gross_after > limits.max_gross_exposure_quote:
            return (
                f"account gross exposure would be {_show(gross_after)} {ccy} across {views}, beyond "
                f"max_gross_exposure_quote {limits.max_gross_exposure_quote}"
            )
        limit = limits.max_net_exposure_quote
        if limit and abs(net_after) > abs(account_net) and abs(net_after) > limit:
            return (
                f"account net exposure would be {_show(net_after)} {ccy} across {views}, beyond "
                f"max_net_exposure_quote {limit}"
            )
        return None
