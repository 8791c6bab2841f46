"""What the services made of a strategy with resting orders, read from the streams, side by side with the backtest.

The backtest (``rrr.deploy.backtest``) runs the lockstep rule in one process with execution's own handlers; the
services run it across processes, the strategy and execution in step. Run on the same quote file, they must send
the same orders, cancels and replaces and publish the same events, in the same order, to the same final position.
Only what depends on where a quote is stored differs (a quote's stream sequence; execution's own clock), and is
left out of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from rrr.deploy import backtest
from rrr.market_data.replay import source_id
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import (
    CancelOrder,
    MatchedThrough,
    OrderCanceled,
    OrderTriggered,
    OrderUpdate,
    PositionUpdated,
    ReplaceOrder,
    StrategyAt,
    SubmitOrder,
    any_decoder,
)
from rrr.strategy import loading
from tests.support.reference import RestsExpected, quote_rows, rests_limits_expectations
from tests.support.streams import stream_messages

DATA = Path(__file__).parents[1] / "data"
BTCUSDT = DATA / "btcusdt_quotes_2021-01-08.csv"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"
STRATEGY = "tests.support.strategies:RestsLimits"
# What RestsLimits is run with on each file: prices a few ticks around the mid, so that its orders rest, fill in
# parts (BTC/USDT's displayed sizes), trigger, are moved and canceled.
RESTS_PARAMS: dict[str, dict[str, Any]] = {
    BTCUSDT.name: {"qty": "0.5", "tick": "0.01", "below": 200, "chase": 300, "take": 500, "stop": 500, "max_age": 20},
    EURUSD.name: {"qty": "1", "tick": "0.00001", "below": 2, "chase": 3, "take": 5, "stop": 5, "max_age": 30},
}
# Fees and slippage of the lockstep scenarios: execution's settings, and the backtest's.
FEE_BPS = Decimal("7.5")
SLIPPAGE_BPS = Decimal(1)
VENUE_ENV = {"RRR_EXECUTION_FEE_BPS": str(FEE_BPS), "RRR_EXECUTION_SLIPPAGE_BPS": str(SLIPPAGE_BPS)}
# Fields that say where a quote is stored (a backtest numbers its quotes itself) or when a process made a message.
_PLACE = frozenset({"ts_init", "quote_seq", "quote_index"})


def renamed(path: Path, into: Path, symbol: str) -> Path:
    """A copy of the quote file ``path`` in ``into`` with every row's symbol ``symbol`` (a test of its own)."""
    header, *rows = path.read_text().splitlines(keepends=True)
    column = header.strip().split(",").index("symbol")
    out = into / f"{symbol.lower()}-{path.name}"
    lines = []
    for row in rows:
        cells = row.rstrip("\n").split(",")
        cells[column] = symbol
        lines.append(",".join(cells) + "\n")
    out.write_text(header + "".join(lines))
    return out


def expected(path: Path, strategy_id: str = "rests", params: dict[str, Any] | None = None) -> backtest.Result:
    """The backtest of RestsLimits over ``path`` with the scenarios' venue."""
    spec = loading.spec(strategy_id, STRATEGY, params or RESTS_PARAMS[_original(path)])
    return backtest.run([path], [spec], backtest.VenueSettings(fee_bps=FEE_BPS, slippage_bps=SLIPPAGE_BPS))


def _original(path: Path) -> str:
    return next(name for name in RESTS_PARAMS if path.name.endswith(name))


def strategy_env(path: Path, strategy_id: str = "rests") -> dict[str, str]:
    """The strategy service's settings that run RestsLimits as the backtest does over ``path``."""
    return {
        "RRR_STRATEGY_STRATEGY": STRATEGY,
        "RRR_STRATEGY_PARAMS": msgspec.json.encode(RESTS_PARAMS[_original(path)]).decode(),
        "RRR_STRATEGY_STRATEGY_ID": strategy_id,
    }


def _shown(message: msgspec.Struct) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(message)
    return {k: v for k, v in fields.items() if k not in _PLACE}


@dataclass(slots=True)
class Record:
    """What one run sent and published for one symbol, each message as far as it does not depend on where quotes
    are stored."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    replaces: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # The last position: qty, average price and realized PnL exactly, and the fills it counts.
    position: tuple[Fraction, Fraction, Fraction, int] | None = None
    # The services' lockstep traffic (no backtest has any).
    markers: int = 0
    progress: int = 0
    # Messages the streams hold twice (the same id grouped in another envelope after a restart): read once.
    copies: int = 0
    # Messages there that are no message of the system (a test's garbage): passed over.
    undecodable: int = 0

    def differences(self, other: Record) -> list[str]:
        """Where ``other`` differs from this one, briefly (empty: the same)."""
        out = []
        for name in ("orders", "cancels", "replaces", "events"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                first = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
                at = min(len(mine), len(theirs)) if first is None else first
                out.append(
                    f"{name}: {len(mine)} against {len(theirs)}, first difference at {at}: "
                    f"{mine[at] if at < len(mine) else None} | {theirs[at] if at < len(theirs) else None}"
                )
        if self.position != other.position:
            out.append(f"position: {self.position} against {other.position}")
        return out

    def summary(self) -> str:
        """Counts, for the test's output."""
        fills = sum(1 for e in self.events if e["type"] == "order_filled.v1")
        return (
            f"orders={len(self.orders)} cancels={len(self.cancels)} replaces={len(self.replaces)} "
            f"events={len(self.events)} fills={fills} markers={self.markers} progress={self.progress} "
            f"position={self.position}"
        )


def from_backtest(result: backtest.Result) -> Record:
    """What the backtest sent and published."""
    record = Record(
        orders=[_shown(o) for o in result.orders],
        cancels=[_shown(c) for c in result.cancels],
        replaces=[_shown(r) for r in result.replaces],
        events=[_shown(e) for e in result.events],
    )
    if result.positions:
        (position,) = result.positions.values()
        record.position = _position(position)
    return record


def _position(update: PositionUpdated) -> tuple[Fraction, Fraction, Fraction, int]:
    return (
        Fraction(update.qty),
        Fraction(update.exact_avg_price),
        Fraction(update.exact_realized_pnl),
        update.version,
    )


async def from_streams(bus: Bus, symbol: str, shards: int = 1) -> Record:
    """What the services sent (RRR_CMD) and published (RRR_EVT) for ``symbol``, and their lockstep traffic on its
    shard."""
    shard = subjects.shard_of(symbol, shards)
    record = Record()
    seen: set[str] = set()

    def _decoded(data: bytes) -> Any:
        try:
            return any_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            record.undecodable += 1
            return None

    def _new(message: msgspec.Struct) -> bool:
        message_id: str = message.id  # type: ignore[attr-defined]
        if message_id in seen:
            record.copies += 1
            return False
        seen.add(message_id)
        return True

    for msg in await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, shards)):
        command = _decoded(msg.data)
        if command is None or not _new(command):
            continue
        if isinstance(command, SubmitOrder):
            record.orders.append(_shown(command))
        elif isinstance(command, CancelOrder):
            record.cancels.append(_shown(command))
        elif isinstance(command, ReplaceOrder):
            record.replaces.append(_shown(command))
    record.markers = sum(
        isinstance(_decoded(m.data), StrategyAt)
        for m in await stream_messages(bus.js, "RRR_CMD", subjects.step(subjects.ORDER_COMMAND, shard))
    )
    for msg in await stream_messages(bus.js, "RRR_EVT", subjects.order_event(symbol, shards)):
        event = _decoded(msg.data)
        if isinstance(event, OrderUpdate) and _new(event):
            record.events.append(_shown(event))
    record.progress = sum(
        isinstance(_decoded(m.data), MatchedThrough)
        for m in await stream_messages(bus.js, "RRR_EVT", subjects.step(subjects.ORDER_EVENT, shard))
    )
    positions = [_decoded(m.data) for m in await stream_messages(bus.js, "RRR_EVT", subjects.position(symbol, shards))]
    latest = max((p for p in positions if isinstance(p, PositionUpdated)), key=lambda p: p.version, default=None)
    record.position = None if latest is None else _position(latest)
    return record


def quote_rows_ts(path: Path) -> list[int]:
    """The event time of each quote of ``path``, in file order."""
    return [row.ts for row in quote_rows(path)]


@dataclass(slots=True)
class Rows:
    """What PostgreSQL holds of one strategy's orders: each order's status, quantity (after its replaces) and
    filled quantity, each fill, and the symbol's position."""

    orders: dict[str, tuple[str, Fraction, Fraction]] = field(default_factory=dict)
    # fill id -> qty, price, fee, liquidity, event time
    fills: dict[str, tuple[Fraction, Fraction, Fraction, str, int]] = field(default_factory=dict)
    position: tuple[Fraction, Fraction, Fraction, int] | None = None
    # Rows beyond one per id (none: the keys forbid it) and order events stored, for the report.
    events: int = 0


def rows_of(result: backtest.Result) -> Rows:
    """What the database must hold after the services ran what ``result`` ran."""
    rows = Rows()
    statuses = {
        "order_accepted.v1": "accepted",
        "order_rejected.v1": "rejected",
        "order_canceled.v1": "canceled",
        "order_expired.v1": "expired",
    }
    quantities = {o.id: (Fraction(o.qty), Fraction(0)) for o in result.orders}
    for event in result.events:
        tag = event.__struct_config__.tag
        order_id = event.client_order_id
        qty, filled = quantities[order_id]
        status = rows.orders.get(order_id, ("accepted", qty, filled))[0]
        if tag == "order_filled.v1":
            assert isinstance(event, backtest.OrderFilled)
            filled = Fraction(event.filled_qty)
            status = "filled" if event.leaves_qty is None else "partially_filled"
            rows.fills[event.id] = (
                Fraction(event.qty),
                Fraction(event.price),
                Fraction(event.fee),
                event.liquidity,
                event.ts_event,
            )
        elif tag == "order_replaced.v1":
            qty = Fraction(event.qty)  # type: ignore[union-attr]
        elif tag in statuses:
            status = statuses[tag]
        if tag != "order_cancel_rejected.v1":
            quantities[order_id] = (qty, filled)
            rows.orders[order_id] = (status, qty, filled)
        rows.events += 1
    if result.positions:
        # As the table holds it: the decimals of the wire (exact up to 12 places, else rounded there).
        (position,) = result.positions.values()
        rows.position = (
            Fraction(position.qty),
            Fraction(position.avg_price),
            Fraction(position.realized_pnl),
            position.version,
        )
    return rows


async def stored_rows(dsn: str, strategy: str, symbol: str) -> Rows:
    """What PostgreSQL holds of ``strategy``'s orders on ``symbol``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = Rows()
        for r in await conn.fetch(
            "SELECT client_order_id, status, qty, filled_qty FROM orders WHERE strategy = $1 AND symbol = $2",
            strategy,
            symbol,
        ):
            rows.orders[r["client_order_id"]] = (r["status"], Fraction(r["qty"]), Fraction(r["filled_qty"]))
        for r in await conn.fetch(
            "SELECT fill_id, qty, price, fee, liquidity, ts_event FROM fills WHERE client_order_id LIKE $1",
            f"{strategy}-%",
        ):
            rows.fills[r["fill_id"]] = (
                Fraction(r["qty"]),
                Fraction(r["price"]),
                Fraction(r["fee"]),
                r["liquidity"],
                r["ts_event"],
            )
        rows.events = await conn.fetchval(
            "SELECT count(*) FROM order_events WHERE client_order_id LIKE $1", f"{strategy}-%"
        )
        position = await conn.fetchrow(
            "SELECT qty, avg_price, realized_pnl, version FROM positions WHERE symbol = $1", symbol
        )
        if position is not None:
            rows.position = (
                Fraction(position["qty"]), Fraction(position["avg_price"]), Fraction(position["realized_pnl"]),
                position["version"],
            )  # fmt: skip
        return rows
    finally:
        await conn.close()


# -- the backtest against the independent reference ------------------------------------------------------------


def reference(path: Path, fee_bps: str = "0", slippage_bps: str = "0") -> RestsExpected:
    """The independent reference of RestsLimits over ``path`` (a test file, or a renamed copy of one) with its
    parameters here."""
    params = RESTS_PARAMS[_original(path)]
    return rests_limits_expectations(
        path, qty=Fraction(str(params["qty"])), tick=Fraction(str(params["tick"])), below=int(params["below"]),
        chase=int(params["chase"]), take=int(params["take"]), stop=int(params["stop"]), max_age=int(params["max_age"]),
        fee_bps=Fraction(fee_bps), slippage_bps=Fraction(slippage_bps),
    )  # fmt: skip


def check_against_reference(
    result: backtest.Result, expected: RestsExpected, path: Path, strategy: str = "rests"
) -> None:
    """``result`` (of RestsLimits as ``strategy`` over ``path``) is exactly what ``expected`` says."""
    source = source_id(path)
    ts_of = {q.line: q.ts for q in quote_rows(path)}

    def line(order_id: str) -> int:
        assert order_id.startswith(f"{strategy}-{source}:")
        return int(order_id.rsplit(":", 1)[1])

    assert [
        (line(o.id), o.side, Fraction(o.qty), o.order_type, _frac(o.limit_price), _frac(o.stop_price), o.post_only,
         o.reduce_only, o.lockstep)
        for o in result.orders
    ] == [(*order, True) for order in expected.orders]  # fmt: skip
    assert [(c.id.split(":cancel")[0], line(c.client_order_id)) for c in result.cancels] == [
        (f"{strategy}-{source}:{at}", order) for at, order in expected.cancels
    ]
    assert [(c.id.split(":replace")[0], line(c.client_order_id), _frac(c.limit_price)) for c in result.replaces] == [
        (f"{strategy}-{source}:{at}", order, limit) for at, order, limit in expected.replaces
    ]
    assert [
        (line(f.client_order_id), f.id.rsplit(":", 1)[1], f.ts_event, Fraction(f.qty), Fraction(f.price),
         Fraction(f.fee), f.liquidity)
        for f in result.fills
    ] == [
        (f.order, str(f.number), ts_of[f.at], f.qty, f.price, f.fee, f.liquidity) for f in expected.fills
    ]  # fmt: skip
    ended = {
        line(e.client_order_id): "canceled" if e.reason == "canceled by request" else e.reason.split(":")[0]
        for e in result.events
        if isinstance(e, OrderCanceled)
    }
    ended |= {line(f.client_order_id): "filled" for f in result.fills if f.leaves_qty is None}
    assert ended == {order: how for order, how in expected.ends.items() if how != "open"}
    assert [line(e.client_order_id) for e in result.events if isinstance(e, OrderTriggered)] == expected.triggered
    assert not result.rejections
    assert not result.stopped
    (position,) = result.positions.values()
    ref = expected.position
    assert (Fraction(position.qty), Fraction(position.exact_avg_price), Fraction(position.exact_realized_pnl)) == (
        ref.qty, ref.avg_price, ref.realized_pnl,
    )  # fmt: skip
    assert position.version == ref.fills == len(result.fills)


def _frac(value: Decimal | None) -> Fraction | None:
    return None if value is None else Fraction(value)
