"""What the dashboard reads from PostgreSQL: positions, PnL, the latest orders and fills, the equity curve.

All of one read sees one snapshot (a read-only REPEATABLE READ transaction), so the totals, the tables and
the curve agree with each other. The reads are bounded in rows; their cost grows with the tables (the
``strategy_positions`` view sums every fill), so the reader waits nine times as long as its last read took
before the next, at least ``refresh_ms``: it never takes more than a tenth of a database connection's time.
The equity curve streams in the fills after the last one it holds; the first read of a long history builds
it from every fill (a million: about 25 s here), with the other parts of the page shown before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from rrr.deploy.dashboard.board import Board
from rrr.deploy.dashboard.equity import EquityCurve, FillRow
from rrr.shared.config import redact

__all__ = [
    "DatabaseReader",
    "FillLine",
    "OrderLine",
    "PositionLine",
    "Risk",
    "StrategyLine",
    "Summary",
]

_log = logging.getLogger("rrr.ui.database")

# Rows of the position tables sent to the page; totals are over every row.
POSITION_ROWS = 200
# Fills fetched at a time into the equity curve (a long history streams in, in one read).
CURVE_BATCH = 5_000
# A curve that missed a fill stored late (earlier in event time than fills read before it) is built again
# from the first fill, at most this often (and at most a tenth of the time).
REBUILD_MIN_S = 10.0
# A read's share of the time: the reader waits (1 / share - 1) times as long as a read took.
DATABASE_SHARE = 0.1
_MAX_DELAY_S = 60.0
_TEXT_MAX = 200
_TIMEOUT_S = 10.0

_STRATEGIES = """
SELECT strategy, symbol, qty, fees, fills, mark, pnl,
       count(*) OVER () AS lines, sum(pnl) OVER () AS total_pnl, sum(fees) OVER () AS total_fees
  FROM strategy_positions
 ORDER BY strategy, symbol
 LIMIT $1"""
_POSITIONS = """
SELECT p.symbol, p.qty, p.avg_price, p.realized_pnl, p.ts_event, latest.mid,
       count(*) OVER () AS lines
  FROM positions p
  LEFT JOIN LATERAL (
      SELECT (q.bid + q.ask) / 2 AS mid FROM quotes q WHERE q.symbol = p.symbol ORDER BY q.ts_event DESC LIMIT 1
  ) latest ON true
 ORDER BY p.symbol
 LIMIT $1"""
_ORDERS = """
SELECT client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event, ts_updated
  FROM orders
 ORDER BY ts_updated DESC, client_order_id DESC
 LIMIT $1"""
_REJECTIONS = """
SELECT client_order_id, symbol, reason, ts_updated
  FROM orders WHERE status = 'rejected'
 ORDER BY ts_updated DESC, client_order_id DESC
 LIMIT 5"""
_ORDER_COUNTS = "SELECT status, count(*) AS n FROM orders GROUP BY status"
_FILLS = """
SELECT fill_id, client_order_id, symbol, side, qty, price, fee, ts_event
  FROM fills
 ORDER BY ts_event DESC, fill_id DESC
 LIMIT $1"""
_FILL_COUNT = "SELECT count(*) FROM fills"
_FILLS_AFTER = """
SELECT ts_event, fill_id, split_part(client_order_id, '-', 1) AS strategy, symbol, side, qty, price, fee
  FROM fills
 WHERE (ts_event, fill_id) > ($1, $2)
 ORDER BY ts_event, fill_id"""


class StrategyLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One strategy's account in one symbol (``strategy_positions``)."""

    strategy: str
    symbol: str
    qty: Decimal
    mark: Decimal | None
    pnl: Decimal | None
    fees: Decimal
    fills: int


class PositionLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Execution's position in one symbol (``positions``), valued at the symbol's latest mid."""

    symbol: str
    qty: Decimal
    avg_price: Decimal
    mark: Decimal | None
    realized_pnl: Decimal
    unrealized_pnl: Decimal | None
    ts_event: int


class OrderLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One order, as it stands."""

    client_order_id: str
    strategy: str
    symbol: str
    side: str
    qty: Decimal
    order_type: str
    status: str
    reason: str
    ts_event: int
    ts_updated: int


class FillLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One fill."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts_event: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The headline figures."""

    orders: dict[str, int]
    fills: int
    pnl: Decimal | None
    fees: Decimal | None
    strategy_lines: int
    position_lines: int
    open_positions: int
    gross_exposure: Decimal
    net_exposure: Decimal
    last_fill_ts: int | None


class Rejection(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One rejected order and why."""

    client_order_id: str
    symbol: str
    reason: str
    ts_updated: int


class Risk(msgspec.Struct, frozen=True, kw_only=True):
    """What the database tells of risk: rejections, exposure and drawdown."""

    rejected: int
    latest_rejections: list[Rejection]
    gross_exposure: Decimal
    net_exposure: Decimal
    max_drawdown: float


class DatabaseStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the last read worked, what it cost, and when the next comes."""

    ok: bool
    error: str = ""
    read_ms: float = 0.0
    every_ms: float = 0.0


def _text(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _TEXT_MAX else f"{text[:_TEXT_MAX]}..."


class DatabaseReader:
    """Reads the database into the board until stopped, one snapshot at a time."""

    def __init__(
        self,
        dsn: str,
        board: Board,
        *,
        refresh_s: float,
        rows: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._board = board
        self._refresh_s = refresh_s
        self._rows = rows
        self._clock = clock
        self.curve = EquityCurve()
        self._conn: asyncpg.Connection | None = None
        # When the curve's current build from the first fill began (None once it reached the newest), when
        # the last one ended and how long it took: what the next build waits for.
        self._building_since: float | None = clock()
        self._built_at = -float("inf")
        self._build_s = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Read, publish, wait; until ``stop`` is set. A failed read is shown on the page and tried again."""
        try:
            while not stop.is_set():
                started = self._clock()
                try:
                    conn = await self._connection()
                    # What the read costs the database, without the connection's set-up.
                    started = self._clock()
                    await self.read_once(conn)
                    error = ""
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    error = _text(f"{type(exc).__name__}: {exc}")
                    _log.warning("reading %s: %s", redact(self._dsn), error)
                    await self._close()
                took = self._clock() - started
                delay = min(max(self._refresh_s, took * (1 / DATABASE_SHARE - 1)), _MAX_DELAY_S)
                status = DatabaseStatus(ok=not error, error=error, read_ms=took * 1000, every_ms=delay * 1000)
                self._board.update("database", status)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self._close()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=_TIMEOUT_S,
                command_timeout=_TIMEOUT_S,
                server_settings={"application_name": "rrr-ui", "default_transaction_read_only": "on"},
            )
        return self._conn

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail in any way: it is gone
                await asyncio.wait_for(self._conn.close(), _TIMEOUT_S)
            self._conn = None

    async def read_once(self, conn: asyncpg.Connection) -> None:
        """Read one snapshot on ``conn`` and put every section of it on the board; the equity curve last, as a
        long history takes a while to come in the first time."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            strategies = await conn.fetch(_STRATEGIES, POSITION_ROWS)
            positions = await conn.fetch(_POSITIONS, POSITION_ROWS)
            orders = await conn.fetch(_ORDERS, self._rows)
            rejections = await conn.fetch(_REJECTIONS)
            counts = {row["status"]: int(row["n"]) for row in await conn.fetch(_ORDER_COUNTS)}
            fills = await conn.fetch(_FILLS, self._rows)
            fill_count = int(await conn.fetchval(_FILL_COUNT))
            position_lines = [_position(row) for row in positions]
            gross = sum((abs(p.qty * p.mark) for p in position_lines if p.mark is not None), Decimal(0))
            net = sum((p.qty * p.mark for p in position_lines if p.mark is not None), Decimal(0))
            first: dict[str, Any] = dict(strategies[0]) if strategies else {}
            self._board.update(
                "summary",
                Summary(
                    orders=counts,
                    fills=fill_count,
                    pnl=first.get("total_pnl"),
                    fees=first.get("total_fees"),
                    strategy_lines=int(first.get("lines", 0)),
                    position_lines=int(positions[0]["lines"]) if positions else 0,
                    open_positions=sum(1 for p in position_lines if p.qty),
                    gross_exposure=gross,
                    net_exposure=net,
                    last_fill_ts=int(fills[0]["ts_event"]) if fills else None,
                ),
            )
            self._board.update("strategies", [_strategy(row) for row in strategies])
            self._board.update("positions", position_lines)
            self._board.update("orders", [_order(row) for row in orders])
            self._board.update("fills", [_fill(row) for row in fills])
            await self._read_curve(conn, fill_count)
        curve = self.curve.view()
        self._board.update("equity", curve)
        self._board.update(
            "risk",
            Risk(
                rejected=counts.get("rejected", 0),
                latest_rejections=[
                    Rejection(
                        client_order_id=_text(row["client_order_id"]),
                        symbol=_text(row["symbol"]),
                        reason=_text(row["reason"]),
                        ts_updated=int(row["ts_updated"]),
                    )
                    for row in rejections
                ],
                gross_exposure=gross,
                net_exposure=net,
                max_drawdown=curve.max_drawdown,
            ),
        )

    async def _read_curve(self, conn: asyncpg.Connection, fill_count: int) -> None:
        """Bring the curve up to the snapshot's fills; build it again when a fill came in behind its cursor."""
        curve, now = self.curve, self._clock()
        if fill_count < curve.applied:
            curve.reset()  # fills were deleted (a database started over)
            self._building_since = now
        await self._add_fills_after(conn, curve.cursor)
        if self._building_since is not None:
            self._build_s, self._built_at, self._building_since = now - self._building_since, now, None
        # A fill stored after later ones (another shard's, say) lies behind the cursor: build the curve again, at
        # most every REBUILD_MIN_S and a tenth of the time, so that it is drawn whole between builds however
        # long the history and however the shards interleave.
        if curve.applied != fill_count and now - self._built_at >= max(REBUILD_MIN_S, self._build_s / DATABASE_SHARE):
            curve.reset()
            self._building_since = now
            await self._add_fills_after(conn, None)

    async def _add_fills_after(self, conn: asyncpg.Connection, cursor: tuple[int, str] | None) -> None:
        """Stream the fills after ``cursor`` into the curve, letting the loop serve the browsers meanwhile."""
        after = cursor or (-(2**63), "")
        added = 0
        async for row in conn.cursor(_FILLS_AFTER, after[0], after[1], prefetch=CURVE_BATCH):
            self.curve.add(_fill_row(row))
            added += 1
            if added % CURVE_BATCH == 0:
                await asyncio.sleep(0)  # a long history takes seconds: the pushes go on meanwhile


def _fill_row(row: asyncpg.Record) -> FillRow:
    return FillRow(
        ts_event=int(row["ts_event"]),
        fill_id=row["fill_id"],
        strategy=row["strategy"],
        symbol=row["symbol"],
        side=row["side"],
        qty=row["qty"],
        price=row["price"],
        fee=row["fee"],
    )


def _strategy(row: asyncpg.Record) -> StrategyLine:
    return StrategyLine(
        strategy=_text(row["strategy"]),
        symbol=_text(row["symbol"]),
        qty=row["qty"],
        mark=row["mark"],
        pnl=row["pnl"],
        fees=row["fees"],
        fills=int(row["fills"]),
    )


def _position(row: asyncpg.Record) -> PositionLine:
    mark = row["mid"]
    return PositionLine(
        symbol=_text(row["symbol"]),
        qty=row["qty"],
        avg_price=row["avg_price"],
        mark=mark,
        realized_pnl=row["realized_pnl"],
        unrealized_pnl=None if mark is None else row["qty"] * (mark - row["avg_price"]),
        ts_event=int(row["ts_event"]),
    )


def _order(row: asyncpg.Record) -> OrderLine:
    return OrderLine(
        client_order_id=_text(row["client_order_id"]),
        strategy=_text(row["strategy"]),
        symbol=_text(row["symbol"]),
        side=_text(row["side"]),
        qty=row["qty"],
        order_type=_text(row["order_type"]),
        status=_text(row["status"]),
        reason=_text(row["reason"]),
        ts_event=int(row["ts_event"]),
        ts_updated=int(row["ts_updated"]),
    )


def _fill(row: asyncpg.Record) -> FillLine:
    return FillLine(
        fill_id=_text(row["fill_id"]),
        client_order_id=_text(row["client_order_id"]),
        symbol=_text(row["symbol"]),
        side=_text(row["side"]),
        qty=row["qty"],
        price=row["price"],
        fee=row["fee"],
        ts_event=int(row["ts_event"]),
    )
