"""The engine: several strategies fed the same quotes, each isolated from the others.

No I/O: it turns quotes, trades and order events into signals and orders, and its state into a snapshot and
back. The service (``rrr.strategy.handlers``) wraps it in the bus; the backtest (``rrr.deploy.backtest``)
drives it directly with a paper venue. Both therefore run the very same strategy code.

Per symbol the engine keeps a watermark (``rrr.shared.watermark``): a quote at or before the newest applied
one of its symbol is skipped, whatever its id, for every strategy. Strategies see a symbol's quotes in the
order they are applied; each strategy trades the symbols of its spec (all of the shard's when none).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import msgspec

from rrr.shared.clock import Clock, wall_clock
from rrr.shared.counters import Counters
from rrr.shared.messages import CancelOrder, QuoteRow, ReplaceOrder, Signal, SubmitOrder, Trade
from rrr.shared.positions import Position
from rrr.shared.universe import Universe
from rrr.shared.watermark import Watermark
from rrr.strategy.api import Context, Cursor, OpenOrder, OrderEvent, Params, Strategy, Timer

_log = logging.getLogger(__name__)
Output = Signal | SubmitOrder | CancelOrder | ReplaceOrder
# A lockstep marker's place among the shard's quotes: (seq, index, 1) through a quote, (seq, index, 0) before it.
At3 = tuple[int, int, int]


class StrategyCounters(Counters, kw_only=True):
    """What the strategy service counts, reported in its heartbeats."""

    # Quotes read from the stream, single or in batches, applied or not.
    quotes: int = 0
    # Signals and orders published.
    published: int = 0
    # Quotes at or below the snapshot's sequence, delivered again: acknowledged, not applied twice.
    redelivered_skipped: int = 0
    # Quotes at or before their symbol's newest applied event time: a repeat (the same file replayed
    # again, at any later time) or out of order. Not applied.
    stale_skipped: int = 0
    # Quotes of a symbol outside the universe (--symbols, --max-symbols): dead-lettered, never applied.
    symbols_refused: int = 0
    snapshots: int = 0
    # Strategies stopped because a handler raised or returned something other than None.
    strategies_failed: int = 0
    # Lockstep markers published (closed-loop strategies with resting orders or commands, rrr.strategy.outcomes).
    lockstep_markers: int = 0


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """One strategy to run: its id (on its signals and orders), class, parameters and symbols."""

    id: str
    cls: type[Strategy[Any]]
    params: Params
    # How it was named (a built-in's short name, an entry point's name, or ``module:Class``): kept in
    # the snapshot, with the parameters, to refuse restoring a state into another strategy.
    ref: str
    # The symbols it trades; empty: every symbol of the shard.
    symbols: frozenset[str] = frozenset()


def closed_loop(cls: type[Strategy[Any]]) -> bool:
    """Whether strategies of ``cls`` see what happens to their orders: they override ``on_order_event``.

    A closed-loop strategy's orders are open until their outcome is delivered, and its positions move by
    the real fills. Another's positions move as if each order filled whole at its quote's touch when sent
    (the paper venue's rule), and no order of it holds back the quotes that follow.
    """
    return cls.on_order_event is not Strategy.on_order_event


class Runner:
    """One strategy instance, its context, and whether it was stopped (and why)."""

    __slots__ = ("closed_loop", "ctx", "marker", "on_quote", "spec", "stopped", "strategy", "through")

    def __init__(self, spec: StrategySpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.closed_loop = closed_loop(spec.cls)
        self.stopped = ""
        # A closed-loop strategy's progress as execution last reported it and its events were delivered up to
        # (rrr.strategy.outcomes): the marker execution applied, and the last quote it matched the orders at.
        self.marker: At3 = (0, 0, 0)
        self.through: tuple[int, int] = (0, 0)
        try:
            self.strategy = spec.cls(ctx, spec.params)
        except Exception as exc:  # a user's __init__: stopped like any other failing handler
            self.strategy = Strategy(ctx, spec.params)
            self.stopped = f"__init__: {type(exc).__name__}: {exc}"[:1000]
            _log.error("strategy %s stopped (the others go on): %s", spec.id, self.stopped, exc_info=exc)
        # Bound once: the hot path calls it for every quote.
        self.on_quote = self.strategy.on_quote

    def trades(self, symbol: str) -> bool:
        """Whether this strategy trades ``symbol``."""
        return not self.spec.symbols or symbol in self.spec.symbols


class GarbageError(Exception):
    """A handler returned something other than None."""


# -- snapshots of the engine (kept inside the service's snapshot, see rrr.strategy.snapshots) -----------


class PositionState(msgspec.Struct, frozen=True, array_like=True):
    """A strategy's position in one symbol, exactly (fractions as ``n/d`` text)."""

    qty: str
    avg_price: str
    realized_pnl: str
    fills: int


class RunnerState(msgspec.Struct, frozen=True, kw_only=True):
    """One strategy's state: what it was (ref, params) and everything it needs to continue exactly."""

    id: str
    ref: str
    params: msgspec.Raw
    state: msgspec.Raw
    stopped: str = ""
    positions: dict[str, PositionState] = {}
    # What strategy_snapshot.v3 held of a closed-loop strategy's orders awaiting their outcome: read, not written.
    open_orders: list[SubmitOrder] = []
    timers: list[Timer] = []
    timer_seq: int = 0
    # Added in strategy_snapshot.v4: a closed-loop strategy's open orders as their events say they are, and its
    # progress as execution reported it (rrr.strategy.outcomes).
    orders: list[OpenOrder] = []
    marker: tuple[int, int, int] = (0, 0, 0)
    through: tuple[int, int] = (0, 0)


_encoder = msgspec.msgpack.Encoder()


def encode_params(params: Params) -> bytes:
    """The parameters as the snapshot holds them (msgpack; the same parameters give the same bytes)."""
    return _encoder.encode(params)


def describe(ref: str, params: bytes) -> str:
    """``ref`` and its encoded parameters as text, for error messages."""
    try:
        shown = msgspec.json.encode(msgspec.msgpack.decode(params)).decode()
    except msgspec.DecodeError:
        shown = "<undecodable parameters>"
    return f"{ref} {shown}"


class Engine:
    """Strategies, the latest quote and the watermark of each symbol; what a snapshot holds."""

    def __init__(
        self,
        specs: Sequence[StrategySpec],
        *,
        clock: Clock = wall_clock,
        universe: Universe | None = None,
        counters: StrategyCounters | None = None,
    ) -> None:
        self.clock = clock
        self.universe = universe or Universe()
        self.counters = counters or StrategyCounters()
        self.latest: dict[str, QuoteRow] = {}
        # Per symbol, where its latest quote is in the market-data stream: kept when a strategy is closed-loop
        # (its replaces name the newest quote of their order's symbol).
        self.latest_at: dict[str, tuple[int, int]] = {}
        # Per symbol: the newest quote applied (see rrr.shared.watermark), snapshotted with the strategies.
        self.watermarks: dict[str, Watermark] = {}
        # The quote being handled, shared by every strategy's context.
        self.cursor = Cursor()
        self.runners = [
            Runner(
                spec,
                Context(
                    spec.id, clock=clock, latest=self.latest, assume_fills=not closed_loop(spec.cls),
                    cursor=self.cursor, latest_at=self.latest_at,
                ),
            )
            for spec in specs
        ]  # fmt: skip
        self.closed_loop = any(runner.closed_loop for runner in self.runners)
        # The closed-loop strategies that sent orders, cancels or replaces at the quote just handled, in the
        # configured order. The engine's driver delivers their outcomes (``on_order_event``) and clears this
        # before the next quote: the service waits for them, the backtest has them at once (rrr.strategy.outcomes).
        self.sent: list[str] = []
        self._by_id = {runner.spec.id: runner for runner in self.runners}
        # The runners trading each symbol, in the configured order; built on a symbol's first quote.
        self._by_symbol: dict[str, tuple[Runner, ...]] = {}
        for runner in self.runners:
            if runner.stopped:
                self.counters.strategies_failed += 1
            else:
                self._call(runner, "on_start", runner.strategy.on_start)

    def runner(self, strategy_id: str) -> Runner:
        """The runner of the strategy ``strategy_id``."""
        return self._by_id[strategy_id]

    @property
    def stopped(self) -> int:
        """How many strategies are stopped."""
        return sum(1 for runner in self.runners if runner.stopped)

    # -- feeding -----------------------------------------------------------------------------------------

    def on_row(self, row: QuoteRow, seq: int = 0, index: int = 0) -> list[Output]:
        """Feed one quote to the strategies trading its symbol; return their signals and orders, in order.

        ``seq`` is the quote's sequence in the market-data stream and ``index`` its place in the batch stored
        there: an order names both, and execution fills at the quote it reads there.

        ``row`` is within the wire's fixed-point bounds (1 to 10**18 - 1 units, 0 to 28 places): a decoded
        QuoteRow is, and so is a Quote converted by ``rrr.shared.fixed.to_units`` (which refuses the rest).

        Raises:
            SymbolRefusedError: the quote's symbol is new and outside the universe; nothing changed.
        """
        symbol = row.symbol
        mark = self.watermarks.get(symbol)
        if mark is None:
            self.universe.admit(symbol, len(self.watermarks))
            mark = self.watermarks[symbol] = Watermark()
        if mark.seen(row.ts_event, row.id):
            self.counters.stale_skipped += 1
            return []
        mark.advance(row.ts_event, row.id)
        self.latest[symbol] = row
        if self.closed_loop:
            self.latest_at[symbol] = (seq, index)
        runners = self._by_symbol.get(symbol)
        if runners is None:
            runners = self._by_symbol[symbol] = tuple(r for r in self.runners if r.trades(symbol))
        out: list[Output] = []
        ts = row.ts_event
        cursor = self.cursor
        cursor.quote, cursor.seq, cursor.index = row, seq, index
        for runner in runners:
            if runner.stopped:
                continue
            ctx = runner.ctx
            try:
                if ctx.timers and ctx.timers[0].at <= ts:
                    self._fire_timers(runner, ts)
                if runner.on_quote(row) is not None:
                    raise GarbageError("on_quote returned a value instead of None")
            except Exception as exc:
                self._stop(runner, f"on_quote at quote {row.id}", exc)
                continue
            if ctx.out:
                if runner.closed_loop and any(not isinstance(m, Signal) for m in ctx.out):
                    self.sent.append(runner.spec.id)
                out.extend(ctx.out)
                ctx.out.clear()
        return out

    def resting(self, symbol: str) -> list[str]:
        """The running closed-loop strategies trading ``symbol`` that hold open orders of it, in the configured
        order: before a quote of ``symbol`` they must see what the venue did at it (rrr.strategy.outcomes)."""
        runners = self._by_symbol.get(symbol)
        if not runners:
            return []  # no quote of it applied yet: nobody holds an order of it
        return [r.spec.id for r in runners if r.closed_loop and not r.stopped and symbol in r.ctx.open_symbols]

    def on_trade(self, trade: Trade) -> None:
        """Feed one trade to the strategies trading its symbol (they cannot send orders from it)."""
        for runner in self.runners:
            if not runner.stopped and runner.trades(trade.symbol):
                self.cursor.quote = None
                self._call(runner, f"on_trade at trade {trade.id}", runner.strategy.on_trade, trade)

    def closed_loop_runner(self, client_order_id: str) -> Runner | None:
        """The running closed-loop strategy that sent the order ``client_order_id``, if any.

        The order's strategy is the part of its id before the first ``-`` (ids are ``<strategy>-<quote id>``).
        """
        return self.closed_loop_strategy(client_order_id.partition("-")[0])

    def closed_loop_strategy(self, strategy_id: str) -> Runner | None:
        """The running closed-loop strategy ``strategy_id``, if any."""
        runner = self._by_id.get(strategy_id)
        return runner if runner is not None and runner.closed_loop and not runner.stopped else None

    def on_order_event(self, event: OrderEvent) -> bool:
        """Apply an event of a closed-loop strategy's order to its context (fills move its position, its open
        orders follow), then hand it over; False when it was not handed over: another strategy's (not theirs to
        see), or no news (an order not open any more, a copy of an event applied already)."""
        runner = self.closed_loop_runner(event.client_order_id)
        if runner is None or not runner.ctx.apply_event(event):
            return False
        self.cursor.quote = None
        self._call(runner, f"on_order_event at {event.id}", runner.strategy.on_order_event, event)
        return True

    def _fire_timers(self, runner: Runner, ts: int) -> None:
        timers = runner.ctx.timers
        while timers and timers[0].at <= ts:
            timer = heapq.heappop(timers)
            # Checked although typed None: a user's handler may return anything.
            if runner.strategy.on_timer(timer) is not None:  # type: ignore[func-returns-value]
                raise GarbageError("on_timer returned a value instead of None")

    def _call(self, runner: Runner, where: str, handler: Any, *args: Any) -> None:
        try:
            if handler(*args) is not None:
                raise GarbageError(f"{handler.__name__} returned a value instead of None")
        except Exception as exc:
            self._stop(runner, where, exc)
        runner.ctx.out.clear()  # only a quote's handler may emit

    def _stop(self, runner: Runner, where: str, exc: BaseException) -> None:
        # Whatever the failing call emitted is dropped: a strategy's output is all of a handler's or none.
        runner.ctx.out.clear()
        runner.stopped = f"{where}: {type(exc).__name__}: {exc}"[:1000]
        self.counters.strategies_failed += 1
        _log.error("strategy %s stopped (the others go on): %s", runner.spec.id, runner.stopped, exc_info=exc)

    # -- snapshots ---------------------------------------------------------------------------------------

    def state(self) -> list[RunnerState]:
        """Every strategy's state, to snapshot."""
        states = []
        for runner in self.runners:
            ctx = runner.ctx
            ctx.apply_fills()
            try:
                state = _encoder.encode(runner.strategy.snapshot()) if not runner.stopped else _encoder.encode(None)
            except (TypeError, msgspec.EncodeError) as exc:
                # Not serialisable: the strategy cannot be restored, so it is stopped now (and in the snapshot).
                self._stop(runner, "snapshot", exc)
                state = _encoder.encode(None)
            states.append(
                RunnerState(
                    id=runner.spec.id,
                    ref=runner.spec.ref,
                    params=msgspec.Raw(encode_params(runner.spec.params)),
                    state=msgspec.Raw(state),
                    stopped=runner.stopped,
                    positions={
                        symbol: PositionState(str(p.qty), str(p.avg_price), str(p.realized_pnl), p.fills)
                        for symbol, p in ctx.positions.items()
                    },
                    orders=list(ctx.open_orders.values()),
                    timers=sorted(ctx.timers),
                    timer_seq=ctx._timer_seq,
                    marker=runner.marker,
                    through=runner.through,
                )
            )
        return states

    def restore(self, states: Sequence[RunnerState]) -> list[str]:
        """Take back the states of a snapshot, matched by strategy id; return the ids of the snapshot's
        strategies that are not configured any more (their state is dropped).

        The caller checked that each configured strategy's ref and parameters are those stored.
        """
        dropped = []
        for saved in states:
            runner = self._by_id.get(saved.id)
            if runner is None:
                dropped.append(saved.id)
                continue
            ctx = runner.ctx
            ctx.positions = {
                symbol: Position(symbol, Fraction(p.qty), Fraction(p.avg_price), Fraction(p.realized_pnl), p.fills)
                for symbol, p in saved.positions.items()
            }
            for order in saved.orders or [OpenOrder.of(order) for order in saved.open_orders]:
                ctx.track(order)
            runner.marker, runner.through = saved.marker, saved.through
            ctx.timers = list(saved.timers)
            heapq.heapify(ctx.timers)
            ctx._timer_seq = saved.timer_seq
            # Stopped before (kept stopped), or now, at its start: nothing to restore into.
            runner.stopped = saved.stopped or runner.stopped
            if runner.stopped:
                continue
            state_type = runner.spec.cls.state_type
            try:
                state = msgspec.msgpack.decode(saved.state, type=Any if state_type is None else state_type)
            except msgspec.ValidationError as exc:
                self._stop(runner, "restore (its state no longer decodes as its state_type)", exc)
                continue
            self._call(runner, "restore", runner.strategy.restore, state)
        return dropped
