"""``rrr-backtest``: strategies and a paper venue in one process, without NATS or PostgreSQL, same code.

    rrr-backtest FILE... --strategy sma_cross [--params '{"fast": 5}'] [--report out.png]
    rrr-backtest FILE... --config strategies.toml

Quote files are read by the replay's reader (``rrr.market_data.replay``: the same rows, ids
``<file hash>:<line>``, repeats skipped), files one after the other as ``just replay`` publishes them. Each
quote goes through the strategy service's engine (``rrr.strategy.engine``, the very strategy code the service
runs) and the execution service's own handlers (``rrr.execution.handlers``: risk limits, order state machine,
paper venue and positions), in the order the lockstep rule says (``rrr.execution.lockstep``), at each quote q:

1. the venue matches its resting orders at q, as execution's matcher does (``match_touch``);
2. the events of those orders reach their closed-loop strategies (``on_order_event``), then the engine handles q;
3. the commands sent at q go through ``on_submit_order`` (priced at q, as execution prices an order at the quote
   it names), ``on_cancel_order`` and ``on_replace_order`` (judged at the newest quote of the order's symbol it
   names), in the order they were sent, and their events reach the closed-loop strategies before the next quote.

The service does the same across processes, the strategy and execution in lockstep where it matters, so the
orders and fills are exactly those of the services (``tests/unit/test_backtest.py`` holds the backtest to
independent references; ``tests/e2e/test_lockstep_processes.py`` holds the services to the backtest).

Why here: ``rrr.deploy`` is the one layer allowed to import services (pyproject's import-linter contracts), so
the backtest composes strategy and execution as they are, with no module moved and nothing duplicated.
Execution's handlers are given a bus that never connects: they only encode the events, which are decoded back.
Each strategy's PnL is kept here from the real fills, whatever its context assumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import nats.aio.client
from opentelemetry import trace

from rrr.deploy.backtest_report import Report, build_report
from rrr.execution import handlers as execution
from rrr.execution.market import touch_of
from rrr.execution.paper_venue import PaperVenue
from rrr.execution.risk import RiskLimits
from rrr.market_data.replay import QuoteRow as FileRow
from rrr.market_data.replay import UnsupportedFileError, read_quotes, source_id, to_quote
from rrr.shared.bus import Bus, Outgoing
from rrr.shared.errors import BadRowError, RRRError
from rrr.shared.fixed import FixedPointError, rescale, to_units
from rrr.shared.messages import (
    CancelOrder,
    OrderFilled,
    OrderRejected,
    OrderUpdate,
    PositionUpdated,
    Quote,
    QuoteRow,
    ReplaceOrder,
    Signal,
    SubmitOrder,
    fixed_row,
    order_event_decoder,
)
from rrr.shared.positions import Position
from rrr.shared.universe import SymbolRefusedError
from rrr.strategy import loading
from rrr.strategy.engine import Engine, Output, StrategySpec


@dataclass(frozen=True, slots=True)
class VenueSettings:
    """Execution's settings that decide fills: its defaults unless given (``rrr-execution --help``)."""

    max_order_qty: Decimal = Decimal(1000)
    max_notional_quote: Decimal = Decimal(10_000_000)
    slippage_bps: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)


@dataclass(slots=True)
class EquityCurve:
    """A strategy's PnL (realized, fees included, plus open positions valued at the mid) after each quote."""

    ts: list[int] = field(default_factory=list)
    pnl: list[float] = field(default_factory=list)
    # Per symbol and in total: only the quoted symbol's part changes at a quote.
    parts: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    # Per symbol, the position from the strategy's fills, exactly.
    positions: dict[str, Position] = field(default_factory=dict)
    # Per symbol, the position as floats, by its fill count (converted once per fill, not per quote).
    held: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class Result:
    """Everything a backtest produced."""

    quotes: int = 0
    # Rows the engine refused (beyond fixed point, or outside the universe): never applied.
    refused: int = 0
    seconds: float = 0.0
    signals: list[Signal] = field(default_factory=list)
    orders: list[SubmitOrder] = field(default_factory=list)
    cancels: list[CancelOrder] = field(default_factory=list)
    replaces: list[ReplaceOrder] = field(default_factory=list)
    # Every order event, in the order execution would publish them.
    events: list[OrderUpdate] = field(default_factory=list)
    fills: list[OrderFilled] = field(default_factory=list)
    rejections: list[OrderRejected] = field(default_factory=list)
    # Per symbol, all strategies together: what execution's positions (and the positions table) hold.
    positions: dict[str, PositionUpdated] = field(default_factory=dict)
    equity: dict[str, EquityCurve] = field(default_factory=dict)
    # Stopped strategies and why.
    stopped: dict[str, str] = field(default_factory=dict)


def _fixed(row_bid: Decimal, row_ask: Decimal) -> tuple[int, int, int]:
    bid, bid_places = to_units(row_bid, name="bid")
    ask, ask_places = to_units(row_ask, name="ask")
    places = max(bid_places, ask_places)
    return rescale(bid, bid_places, places), rescale(ask, ask_places, places), places


def run(files: Sequence[Path], specs: Sequence[StrategySpec], venue: VenueSettings | None = None) -> Result:
    """Backtest ``specs`` over the quote ``files``, one after the other.

    Raises:
        BadRowError, UnsupportedFileError: a file cannot be read (as ``rrr-market-data replay`` says).
    """
    venue = venue or VenueSettings()
    now = 0

    def clock() -> int:  # event time: a backtest stamps what it makes with the quote's time
        return now

    engine = Engine(specs, clock=clock)
    book = execution.Book(
        limits=RiskLimits(max_order_qty=venue.max_order_qty, max_notional_quote=venue.max_notional_quote),
        venue=PaperVenue(slippage_bps=venue.slippage_bps, fee_bps=venue.fee_bps),
        shards=1,
        clock=clock,
    )
    bus = Bus(nats.aio.client.Client(), service="backtest", tracer=trace.NoOpTracer())
    result = Result(equity={spec.id: EquityCurve() for spec in specs})
    curves = list(result.equity.values())
    # The newest quote of each symbol, where it is: a replace is judged at the one it names.
    latest: dict[str, tuple[int, FileRow]] = {}
    seq = 0
    started = time.perf_counter()
    for path in files:
        source = source_id(path)
        for file_row in read_quotes(path):
            # One quote a message: its place in the stream is (seq, 0). Its Quote is made only where it is needed.
            seq += 1
            now = file_row.ts_ns
            symbol = file_row.symbol
            latest[symbol] = (seq, file_row)
            quote: Quote | None = None
            # 1. The venue matches its resting orders at this quote; 2. their strategies see it before the quote.
            if book.venue.resting(symbol):
                quote = to_quote(file_row, source, now)
                touch = touch_of(quote, (seq, 0))
                _deliver(engine, result, execution.match_touch(book, bus, symbol, touch, now))
            try:
                row = _row(file_row, source)
                out = engine.on_row(row, seq, 0)
            except (FixedPointError, SymbolRefusedError):
                result.refused += 1
                continue
            # 3. Their commands take effect, and their outcomes reach them before the next quote.
            if out:
                engine.sent.clear()
                quote = quote or to_quote(file_row, source, now)
                events: list[Outgoing] = []
                for message in out:
                    events.extend(_command(book, bus, result, message, quote, latest, source))
                _deliver(engine, result, events)
            _mark(curves, row, now)
    result.quotes = seq
    result.seconds = time.perf_counter() - started
    result.stopped = {runner.spec.id: runner.stopped for runner in engine.runners if runner.stopped}
    return result


def _row(file_row: FileRow, source: str) -> QuoteRow:
    """The quote as the strategy sees it from the replay: a batch's row, or (beyond a batch's fixed point) a quote
    sent alone, whose prices the strategy service turns into fixed point itself.

    Raises:
        FixedPointError: its prices do not fit the strategy's fixed point.
    """
    quote_id = f"{source}:{file_row.line}"
    symbol, ts, bid, ask = file_row.symbol, file_row.ts_ns, file_row.bid, file_row.ask
    row = fixed_row(quote_id, symbol, ts, bid, ask, file_row.bid_size, file_row.ask_size)
    if row is None:
        bid_units, ask_units, places = _fixed(bid, ask)
        row = QuoteRow(quote_id, symbol, ts, bid_units, ask_units, places)
    return row


def _command(
    book: execution.Book,
    bus: Bus,
    result: Result,
    message: Output,
    quote: Quote,
    latest: dict[str, tuple[int, FileRow]],
    source: str,
) -> list[Outgoing]:
    """One signal or command the engine sent at ``quote``, handled as execution handles it; its events."""
    if isinstance(message, Signal):
        result.signals.append(message)
        return []
    if isinstance(message, SubmitOrder):
        result.orders.append(message)
        return execution.on_submit_order(book, bus, message, quote)
    if isinstance(message, CancelOrder):
        result.cancels.append(message)
        return execution.on_cancel_order(book, bus, message)
    result.replaces.append(message)
    seq, newest = latest.get(message.symbol, (0, None))
    named = newest is not None and (seq, 0) == (message.quote_seq, message.quote_index)
    touch = touch_of(to_quote(newest, source, newest.ts_ns), (seq, 0)) if named and newest is not None else None
    return execution.on_replace_order(book, bus, message, touch)


def _deliver(engine: Engine, result: Result, events: Sequence[Outgoing]) -> None:
    """Record execution's events, and hand those of closed-loop strategies' orders to them, in order."""
    for outgoing in events:
        event = order_event_decoder.decode(outgoing.data)
        if isinstance(event, PositionUpdated):
            result.positions[event.symbol] = event
            continue
        if not isinstance(event, OrderUpdate):
            continue
        result.events.append(event)
        if isinstance(event, OrderFilled):
            result.fills.append(event)
            curve = result.equity.get(event.client_order_id.partition("-")[0])
            if curve is not None:
                position = curve.positions.get(event.symbol)
                if position is None:
                    position = curve.positions[event.symbol] = Position(event.symbol)
                position.apply_fill(event.side, event.qty, event.price, event.fee)
        elif isinstance(event, OrderRejected):
            result.rejections.append(event)
        engine.on_order_event(event)


def _mark(curves: Sequence[EquityCurve], row: QuoteRow, ts: int) -> None:
    """Append each strategy's PnL after ``row``: realized (fees included) plus its open position in the quoted
    symbol at this quote's mid (its other symbols' parts are unchanged since their last quote).

    In floats: the curve is for reading and plotting; the exact figures come from the fills.
    """
    symbol = row.symbol
    mid: float | None = None
    for curve in curves:
        position = curve.positions.get(symbol)
        if position is not None:
            held = curve.held.get(symbol)
            if held is None or held[0] != position.fills:
                held = curve.held[symbol] = (
                    position.fills,
                    float(position.realized_pnl),
                    float(position.avg_price),
                    float(position.qty),
                )
            _, realized, avg_price, qty = held
            if mid is None:
                mid = (row.bid + row.ask) / (2 * 10**row.places)
            part = realized + (mid - avg_price) * qty if qty else realized
            curve.total += part - curve.parts.get(symbol, 0.0)
            curve.parts[symbol] = part
        curve.ts.append(ts)
        curve.pnl.append(curve.total)


# -- the command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrr-backtest",
        description="Run strategies over recorded quotes with the paper venue, in one process (no NATS, no "
        "PostgreSQL), through the same code as the services.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="quote files (.csv, .parquet), in order")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--strategy", help="a built-in (sma_cross, mean_reversion, ml_signal), an installed one, or module:Class"
    )
    which.add_argument("--config", type=Path, help="a TOML file listing several strategies (see rrr-strategy)")
    parser.add_argument("--params", default="", help="the strategy's parameters as a JSON object")
    parser.add_argument("--strategy-id", default="", help="the id on its orders (default: its name)")
    parser.add_argument("--fee-bps", type=Decimal, default=Decimal(0), help="paper venue: fee on notional")
    parser.add_argument("--slippage-bps", type=Decimal, default=Decimal(0), help="paper venue: price moved against")
    parser.add_argument("--max-order-qty", type=Decimal, default=Decimal(1000), help="risk: largest order")
    parser.add_argument(
        "--max-notional-quote", type=Decimal, default=Decimal(10_000_000), help="risk: largest qty * price"
    )
    parser.add_argument("--report", type=Path, help="write the equity curve and drawdown here (.png or .svg)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-backtest``."""
    args = _parser().parse_args(argv)
    try:
        if args.config is not None:
            _, specs = loading.from_file(args.config)
        else:
            strategy_id = args.strategy_id or loading.default_id(args.strategy)
            specs = [loading.spec(strategy_id, args.strategy, args.params or {})]
        venue = VenueSettings(args.max_order_qty, args.max_notional_quote, args.slippage_bps, args.fee_bps)
        result = run(args.files, specs, venue)
    except (loading.StrategyLoadError, BadRowError, UnsupportedFileError) as exc:
        print(f"rrr-backtest: error: {exc}", file=sys.stderr)
        return 2
    report: Report = build_report(result)
    print(report.table(", ".join(str(f) for f in args.files)))
    if args.report is not None:
        try:
            report.write(args.report)
        except RRRError as exc:
            print(f"rrr-backtest: error: {exc}", file=sys.stderr)
            return 2
        print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
