"""Execution's state snapshots, tagged with the last event stream sequence they cover.

Execution's state is the fold of its own events on RRR_EVT. A snapshot holds that fold up to stream
sequence ``seq`` (positions as exact fractions, order statuses within the bounded LRU, the watermarks of
every strategy and symbol, the open orders the venue holds and how far each got); a restarted instance
loads it and folds only the events after ``seq``, so its start takes time and memory independent of how
long its history is. The events of a batch are stored
before its commands are acknowledged and before a snapshot may claim them: a snapshot never covers an
event that is not on the stream.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

import msgspec
import nats.errors

from rrr.execution.matching import OrderType, Side, TimeInForce, WorkingOrder
from rrr.execution.orders import Status
from rrr.execution.positions import Position
from rrr.shared.bus import Bus
from rrr.shared.watermark import Watermark

if TYPE_CHECKING:
    from rrr.execution.handlers import Book

_log = logging.getLogger(__name__)


class PositionState(msgspec.Struct, frozen=True, array_like=True):
    """A position, its fractions as exact text (``"30001/3"``)."""

    symbol: str
    qty: str
    avg_price: str
    realized_pnl: str
    fills: int


class WatermarkState(msgspec.Struct, frozen=True, array_like=True):
    """The watermark of one strategy's orders on one symbol."""

    strategy: str
    symbol: str
    mark: Watermark


class WorkingState(msgspec.Struct, frozen=True, array_like=True):
    """An open order the venue holds, with how far it got (``rrr.execution.matching.WorkingOrder``)."""

    id: str
    strategy: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    stop_price: Decimal | None
    tif: TimeInForce
    expire_ts: int
    post_only: bool
    reduce_only: bool
    ts_event: int
    placed_at: tuple[int, int]
    filled: Decimal
    fills: int
    triggered: bool
    replaces: int
    matched_to: tuple[int, int]
    arriving: bool


class RiskState(msgspec.Struct, frozen=True, kw_only=True):
    """What the pre-trade checks keep besides positions (``rrr.execution.risk.Risk``), fractions as text."""

    # (strategy, symbol, net quantity)
    strategy_positions: list[tuple[str, str, str]] = []
    # Per strategy, the event times of its orders accepted in the last second.
    recent_orders: list[tuple[str, list[int]]] = []
    # (symbol, mid, the stream sequence and index of its quote)
    marks: list[tuple[str, str, int, int]] = []
    day: int = 0
    day_start: list[tuple[str, str]] = []
    halted_day: int = -1
    # Orders accepted whose fill is not on the stream yet (a crash between the two), with their strategy.
    resuming: list[tuple[str, str]] = []


class GateState(msgspec.Struct, frozen=True, array_like=True):
    """A lockstep strategy's gate (``rrr.execution.lockstep.Gate``)."""

    strategy: str
    marker: tuple[int, int, int]
    through: tuple[int, int]
    ts: int


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, tag="execution_snapshot.v1"):
    """Execution's state after every event of its shard up to RRR_EVT sequence ``seq``."""

    seq: int
    positions: list[PositionState]
    # Least recently updated first, so that a restored LRU forgets in the same order.
    orders: list[tuple[str, Status]]
    watermarks: list[WatermarkState]
    # Added later, so last and with a default: the last RRR_CMD sequence whose events the state holds, where
    # the command consumer resumes (0: an older snapshot, see rrr.execution.app).
    command_seq: int = 0
    # Added with order types: the open orders the venue holds, oldest first, and the cancels and replaces
    # handled (least recent first).
    working: list[WorkingState] = []
    commands: list[str] = []
    # Added with risk limits.
    risk: RiskState = RiskState()
    # Added with the strategies' lockstep.
    gates: list[GateState] = []


def _state(order: WorkingOrder) -> WorkingState:
    return WorkingState(
        order.id, order.strategy, order.symbol, order.side, order.qty, order.order_type, order.limit_price,
        order.stop_price, order.tif, order.expire_ts, order.post_only, order.reduce_only, order.ts_event,
        order.placed_at, order.filled, order.fills, order.triggered, order.replaces, order.matched_to, order.arriving,
    )  # fmt: skip


def _working(state: WorkingState) -> WorkingOrder:
    return WorkingOrder(
        id=state.id, strategy=state.strategy, symbol=state.symbol, side=state.side, qty=state.qty,
        order_type=state.order_type, limit_price=state.limit_price, stop_price=state.stop_price, tif=state.tif,
        expire_ts=state.expire_ts, post_only=state.post_only, reduce_only=state.reduce_only,
        ts_event=state.ts_event, placed_at=state.placed_at, filled=state.filled, fills=state.fills,
        triggered=state.triggered, replaces=state.replaces, matched_to=state.matched_to, arriving=state.arriving,
    )  # fmt: skip


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def name(shard: int, shards: int) -> str:
    """Snapshot name of one execution instance (a change of shard count is a different name)."""
    return f"execution-s{shard}-of-{shards}"


def encode(book: Book) -> bytes:
    """The snapshot of ``book`` as covering every event up to ``book.seq``."""
    return _encoder.encode(
        Snapshot(
            seq=book.seq,
            positions=[
                PositionState(p.symbol, str(p.qty), str(p.avg_price), str(p.realized_pnl), p.fills)
                for p in book.positions.values()
            ],
            orders=list(book.orders.items()),
            watermarks=[WatermarkState(strategy, symbol, mark) for (strategy, symbol), mark in book.watermarks.items()],
            command_seq=book.command_seq,
            working=[_state(order) for order in book.venue.working()],
            commands=book.commands.ids(),
            risk=_risk(book),
            gates=[GateState(name, g.marker, g.through, g.ts) for name, g in book.gates.items()],
        )
    )


def _risk(book: Book) -> RiskState:
    risk = book.risk
    return RiskState(
        strategy_positions=[
            (strategy, symbol, str(net)) for (strategy, symbol), net in risk.strategy_positions.items()
        ],
        recent_orders=[(strategy, list(times)) for strategy, times in risk.recent_orders.items() if times],
        marks=[(symbol, str(mark), *risk.marked_at.get(symbol, (0, 0))) for symbol, mark in risk.marks.items()],
        day=risk.day,
        day_start=[(currency, str(pnl)) for currency, pnl in risk.day_start.items()],
        halted_day=risk.halted_day,
        resuming=list(book.resuming.items()),
    )


def decode_into(data: bytes, book: Book) -> int:
    """Load a snapshot into an empty ``book``; return the stream sequence it covers."""
    snapshot = _decoder.decode(data)
    for p in snapshot.positions:
        book.positions[p.symbol] = Position(
            p.symbol, Fraction(p.qty), Fraction(p.avg_price), Fraction(p.realized_pnl), p.fills
        )
        book.symbols.add(p.symbol)
    for order_id, status in snapshot.orders:
        book.orders.restore(order_id, status)
    for w in snapshot.watermarks:
        book.watermarks[(w.strategy, w.symbol)] = w.mark
        book.symbols.add(w.symbol)
    book.venue.reconcile([_working(state) for state in snapshot.working])
    for command_id in snapshot.commands:
        book.commands.add(command_id)
    risk, held = book.risk, snapshot.risk
    risk.strategy_positions = {(strategy, symbol): Fraction(qty) for strategy, symbol, qty in held.strategy_positions}
    risk.recent_orders = {strategy: deque(times) for strategy, times in held.recent_orders}
    risk.marks = {symbol: Fraction(mark) for symbol, mark, _, _ in held.marks}
    risk.marked_at = {symbol: (seq, index) for symbol, _, seq, index in held.marks}
    risk.day, risk.halted_day = held.day, held.halted_day
    risk.day_start = {currency: Fraction(pnl) for currency, pnl in held.day_start}
    book.resuming = dict(held.resuming)
    for gate in snapshot.gates:
        book.gates.restore(gate.strategy, gate.marker, gate.through, gate.ts)
    for position in book.positions.values():
        risk.revalue(position)
    book.seq = snapshot.seq
    book.command_seq = snapshot.command_seq
    return snapshot.seq


async def load(bus: Bus, name_: str, book: Book) -> int:
    """Load the snapshot ``name_`` into an empty ``book``; return the sequence it covers, 0 when there is none.

    Raises:
        SnapshotCorruptError: its chunks do not add up.
    """
    data = await bus.load_snapshot(name_)
    if not data:
        return 0
    return decode_into(data, book)


class Saver:
    """Saves execution's snapshot at most every ``every_s`` seconds, once more when it stops, and only when
    every event of the state it holds is stored."""

    def __init__(self, bus: Bus, name_: str, every_s: float, saved: tuple[int, int] = (-1, -1)) -> None:
        self._bus = bus
        self._name = name_
        self._every_s = every_s
        # (event sequence, command sequence) of the snapshot saved last.
        self._saved = saved
        self._saved_at = time.monotonic()
        # Saves that failed (a full stream, an outage): the previous snapshot stayed the current one.
        self.failures = 0

    async def maybe_save(self, book: Book) -> bool:
        """Save if the last save is older than the period and something changed; True if it saved."""
        if time.monotonic() - self._saved_at < self._every_s:
            return False
        return await self.save(book)

    async def save(self, book: Book) -> bool:
        """Save now, unless nothing changed or a batch's events are not all stored. A failure is logged, not
        raised: the previous snapshot stays valid, and a restart reads more events after it."""
        if not book.published or (book.seq, book.command_seq) == self._saved:
            return False
        try:
            await self._bus.save_snapshot(self._name, encode(book))
        except (nats.errors.Error, TimeoutError) as exc:
            self.failures += 1
            _log.warning("could not save snapshot %s at sequence %d: %s", self._name, book.seq, exc)
            return False
        self._saved, self._saved_at = (book.seq, book.command_seq), time.monotonic()
        book.counters.snapshots += 1
        return True
