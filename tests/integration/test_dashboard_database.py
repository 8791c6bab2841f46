"""The dashboard's reads of a real PostgreSQL: what each part of the page gets, and an equity curve that stays right
when a fill is stored after later ones."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from rrr.deploy.dashboard.board import Board
from rrr.deploy.dashboard.database import REBUILD_MIN_S, DatabaseReader
from rrr.deploy.dashboard.equity import EquityCurve, FillRow
from rrr.persistence.schema import migrate

S = 1_000_000_000


async def _quote(db: asyncpg.Connection, symbol: str, ts: int, bid: str, ask: str) -> None:
    await db.execute(
        "INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask) VALUES ($1, $2, $3, $3, $4, $5)",
        f"q-{symbol}-{ts}", symbol, ts, Decimal(bid), Decimal(ask),
    )  # fmt: skip


async def _order_and_fill(
    db: asyncpg.Connection, strategy: str, n: int, symbol: str, side: str, qty: str, price: str, ts: int
) -> None:
    order = f"{strategy}-q{n}"
    await db.execute(
        "INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, ts_event, ts_updated)"
        " VALUES ($1, $2, $3, $4, $5, 'market', 'filled', $6, $6)",
        order, strategy, symbol, side, Decimal(qty), ts,
    )  # fmt: skip
    await db.execute(
        "INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, venue, ts_event, ts_init)"
        " VALUES ($1, $2, $3, $4, $5, $6, 0, 'paper', $7, $7)",
        f"{order}-fill", order, symbol, side, Decimal(qty), Decimal(price), ts,
    )  # fmt: skip


def _section(board: Board, name: str) -> Any:
    return msgspec.json.decode(board.sections[name])


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_reader_gives_each_part_of_the_page_its_rows_and_totals(
    database_url: str, db: asyncpg.Connection
) -> None:
    await migrate(db)
    await _quote(db, "EURUSD", 1 * S, "1.0990", "1.1010")
    await _order_and_fill(db, "fast", 1, "EURUSD", "buy", "2", "1.1010", 2 * S)
    await _quote(db, "EURUSD", 3 * S, "1.1190", "1.1210")
    await db.execute(
        "INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event,"
        " ts_updated) VALUES ('slow-q9', 'slow', 'EURUSD', 'sell', 5000, 'market', 'rejected',"
        " 'qty 5000 above --max-order-qty 1000', $1, $1)",
        4 * S,
    )
    await db.execute(
        "INSERT INTO positions (symbol, qty, avg_price, realized_pnl, version, ts_event)"
        " VALUES ('EURUSD', 2, 1.1010, 0, 1, $1)",
        2 * S,
    )
    board = Board()
    reader = DatabaseReader(database_url, board, refresh_s=1.0, rows=20)
    conn = await asyncpg.connect(database_url)
    try:
        await reader.read_once(conn)
    finally:
        await conn.close()

    summary = _section(board, "summary")
    assert summary["orders"] == {"filled": 1, "rejected": 1}
    assert summary["fills"] == 1
    # Bought 2 at 1.1010, marked at the latest mid 1.12.
    assert Decimal(summary["pnl"]) == Decimal("0.0380")
    assert Decimal(summary["gross_exposure"]) == Decimal("2.24")
    assert summary["open_positions"] == 1
    [line] = _section(board, "strategies")
    assert line[:3] == ["fast", "EURUSD", "2"]
    assert [Decimal(line[3]), Decimal(line[4]), Decimal(line[5]), line[6]] == [Decimal("1.12"), Decimal("0.038"), 0, 1]
    [position] = _section(board, "positions")
    assert position[:2] == ["EURUSD", "2"]
    assert Decimal(position[5]) == Decimal("0.0380")  # unrealized at the mid
    orders = _section(board, "orders")
    assert [o[0] for o in orders] == ["slow-q9", "fast-q1"]  # the latest first
    risk = _section(board, "risk")
    assert risk["rejected"] == 1
    assert risk["latest_rejections"][0][2] == "qty 5000 above --max-order-qty 1000"
    assert _section(board, "equity")["fills"] == 1


async def test_a_fill_stored_after_later_ones_gets_the_curve_built_again_as_a_whole_reading_gives_it(
    database_url: str, db: asyncpg.Connection
) -> None:
    await migrate(db)
    for n, (side, price) in enumerate([("buy", "10"), ("sell", "12"), ("buy", "11")], start=1):
        await _order_and_fill(db, "a", n, "X", side, "1", price, (n * 10) * S)
    clock = _Clock()
    board = Board()
    reader = DatabaseReader(database_url, board, refresh_s=1.0, rows=20, clock=clock)
    conn = await asyncpg.connect(database_url)
    try:
        await reader.read_once(conn)
        assert reader.curve.applied == 3
        # Another shard's fill, earlier in event time than the cursor, committed only now.
        await _order_and_fill(db, "b", 4, "X", "sell", "1", "13", 15 * S)
        # Not at once after the last build: the curve goes on without it for a while.
        await reader.read_once(conn)
        assert reader.curve.applied == 3
        clock.now += REBUILD_MIN_S
        await reader.read_once(conn)
        rows = await conn.fetch(
            "SELECT ts_event, fill_id, split_part(client_order_id, '-', 1) AS strategy, symbol, side, qty, price, fee"
            " FROM fills ORDER BY ts_event, fill_id"
        )
    finally:
        await conn.close()

    whole = EquityCurve()
    whole.apply(FillRow(**dict(row)) for row in rows)
    assert reader.curve.applied == 4
    assert reader.curve.view() == whole.view()
    assert reader.curve.total == whole.total == Decimal(4)  # a: -10 +12 -11, 1 long at 11; b: +13, 1 short at 11
