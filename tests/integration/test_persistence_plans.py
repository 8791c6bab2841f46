"""Persistence's order writes look orders and their events up by key, however small the tables were when the
connection first ran them: no statement of a batch reads a whole table, whose cost would grow with the day."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from rrr.persistence.positions import Position
from rrr.persistence.schema import migrate
from rrr.persistence.store import write_batch, write_batch_at
from rrr.shared.messages import (
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderReplaced,
    PositionUpdated,
)

CONSUMER, STREAM = "plans", "RRR_EVT"
# Enough orders that an index probe per batch row is far cheaper than reading the table (about 90 pages).
ORDERS = 6_000
# More calls than PostgreSQL's five custom plans before it settles on a generic one.
CALLS = 8

_FILL = [
    """
INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, ts_event, ts_updated,
                    filled_qty)
SELECT 'pre-' || n, 'pre', 'PRE', 'buy', 1, 'market', 'filled', n, n, 1 FROM generate_series(1, $1) AS n""",
    """
INSERT INTO order_events (id, client_order_id, symbol, kind, status, qty, filled_qty, ts_event, ts_init)
SELECT 'pre-' || n || ':' || k, 'pre-' || n, 'PRE', 'filled', 'filled', 1, 1, n, n
  FROM generate_series(1, $1) AS n, generate_series(1, 2) AS k""",
]


def _events(tag: str, n: int) -> list[Message]:
    """A batch of every kind the order statements handle: orders accepted, filled, replaced and canceled, a
    position, and the acceptance of the order whose fill came in the batch before (``_early``)."""
    oid, limit = f"{tag}{n}", f"{tag}{n}-limit"
    common: dict[str, Any] = {"symbol": "PLN", "side": "buy", "qty": Decimal(2)}
    return [
        OrderAccepted(id=f"{oid}:accepted", ts_event=n, ts_init=n, client_order_id=oid, strategy="s", **common),
        OrderFilled(id=f"{oid}:1", ts_event=n, ts_init=n, client_order_id=oid, price=Decimal(100), fee=Decimal(0),
                    venue="paper", leaves_qty=Decimal(1), liquidity="maker", **common),
        OrderAccepted(id=f"{limit}:accepted", ts_event=n, ts_init=n, client_order_id=limit, strategy="s",
                      order_type="limit", limit_price=Decimal(99), **common),
        OrderReplaced(id=f"{limit}:replaced", ts_event=n, ts_init=n, client_order_id=limit, strategy="s",
                      limit_price=Decimal(98), replaces=1, command_id="r1", **common),
        OrderCanceled(id=f"{limit}:canceled", ts_event=n, ts_init=n, client_order_id=limit, strategy="s",
                      filled_qty=Decimal(0), reason="canceled by request", command_id="c1", **common),
        OrderAccepted(id=f"e{n - 1}:accepted", ts_event=n, ts_init=n, client_order_id=f"e{n - 1}", strategy="s",
                      **common),
        _early(n),
        PositionUpdated(id=f"{oid}:position", ts_event=n, ts_init=n, symbol="PLN", qty=Decimal(1),
                        avg_price=Decimal(100), realized_pnl=Decimal(0), version=n),
    ]  # fmt: skip


def _early(n: int) -> OrderFilled:
    """The fill of an order whose acceptance comes only in the next batch."""
    oid = f"e{n}"
    return OrderFilled(
        id=f"{oid}:1", ts_event=n, ts_init=n, client_order_id=oid, symbol="PLN", side="buy", qty=Decimal(2),
        price=Decimal(100), fee=Decimal(0), venue="paper",
    )  # fmt: skip


class _Writes:
    """Each way persistence writes order events, each call a fresh batch after the one before."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.seq = 0
        self.n = 0

    def _next(self, tag: str) -> tuple[list[Message], int, int]:
        self.n += 1
        messages = _events(tag, self.n)
        first = self.seq + 1
        self.seq += len(messages)
        return messages, first, self.seq

    async def one_call(self) -> None:
        messages, first, last = self._next("a")
        assert await write_batch_at(self.db, messages, CONSUMER, STREAM, first, last) is not None

    async def in_a_transaction(self, *, in_order: bool) -> None:
        # The way a redelivered batch (in order) and the retries (not) are written.
        messages, _, last = self._next("b" if in_order else "c")
        async with self.db.transaction():
            await write_batch(self.db, messages, in_order=in_order)
            if in_order:
                await Position(CONSUMER, STREAM).advance(self.db, last)

    async def every_way(self) -> None:
        await self.one_call()
        await self.in_a_transaction(in_order=True)
        await self.in_a_transaction(in_order=False)


async def test_persistence_order_writes_use_indexes_after_the_tables_grew_under_the_cached_plans(
    db: asyncpg.Connection,
) -> None:
    await migrate(db)
    await db.execute("INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ($1, $2, 0)", CONSUMER, STREAM)
    # Only the statements' own plans may change what they read: no ANALYZE comes between.
    for table in ("orders", "order_events"):
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    writes = _Writes(db)
    # Plans made while the tables hold a few rows (a fresh database, the first minutes of a day) ...
    for _ in range(CALLS):
        await writes.every_way()
    # ... and the tables grown to thousands of orders under them.
    for statement in _FILL:
        await db.execute(statement, ORDERS)

    notices: list[str] = []
    db.add_log_listener(lambda _conn, message: notices.append(message.message))
    await db.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
        await db.execute(f"SET auto_explain.{setting}")
    await writes.every_way()
    await db.execute("SET auto_explain.log_min_duration = -1")

    plans = [n for n in notices if "Query Text" in n]
    by_key = [p for p in plans if "orders_pkey" in p or "order_events_order" in p]
    scans = [p for p in plans if "Seq Scan on orders" in p or "Seq Scan on order_events" in p]
    assert by_key, plans
    assert scans == [], "\n\n".join(scans)
    # And the writes did what they always did.
    assert await db.fetchval("SELECT count(*) FROM orders WHERE status = 'canceled' AND replaces = 1") == CALLS * 3 + 3
    # Each order accepted after its fill, filled (e0 had no fill; the last batch's fill has no acceptance yet).
    late = await db.fetch("SELECT status FROM orders WHERE client_order_id ~ '^e[0-9]+$' AND client_order_id <> 'e0'")
    assert [r["status"] for r in late] == ["filled"] * (writes.n - 1)


async def test_an_order_status_ranks_as_before_and_is_worked_out_in_the_statement_not_called(
    db: asyncpg.Connection,
) -> None:
    await migrate(db)
    ranks = await db.fetch(
        "SELECT s, order_status_rank(s) AS rank FROM unnest($1::text[]) AS s",
        ["accepted", "partially_filled", "filled", "canceled", "rejected", "expired", None],
    )
    assert [(r["s"], r["rank"]) for r in ranks] == [
        ("accepted", 1), ("partially_filled", 2), ("filled", 3), ("canceled", 3), ("rejected", 3), ("expired", 3),
        (None, None),
    ]  # fmt: skip
    # Inlined: a status update compares the CASE itself on every row, no function call per row.
    plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN (VERBOSE) SELECT order_status_rank(status) FROM orders"))
    assert "CASE" in plan
    assert "order_status_rank" not in plan


async def _written_once(db: asyncpg.Connection, messages: list[Message], first: int, last: int) -> tuple[Any, ...]:
    """``write_batch_at`` of ``messages`` in a transaction of its own: the rows written, and the row versions of
    ``orders`` it inserted and updated (PostgreSQL's counts, which hold what the backend has not reported yet:
    read before and after, within the transaction)."""
    versions = (
        "SELECT pg_stat_get_xact_tuples_inserted('orders'::regclass),"
        " pg_stat_get_xact_tuples_updated('orders'::regclass)"
    )
    async with db.transaction():
        before = await db.fetchrow(versions)
        written = await write_batch_at(db, messages, CONSUMER, STREAM, first, last)
        after = await db.fetchrow(versions)
    assert written is not None
    assert before is not None
    assert after is not None
    return written.orders, written.orders_filled, after[0] - before[0], after[1] - before[1]


async def test_an_order_accepted_and_filled_in_one_batch_is_inserted_as_it_stands_not_inserted_and_updated(
    db: asyncpg.Connection,
) -> None:
    await migrate(db)
    await db.execute("INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ($1, $2, 0)", CONSUMER, STREAM)
    common: dict[str, Any] = {"symbol": "ONE", "side": "buy", "qty": Decimal(2), "strategy": "s"}
    fill: dict[str, Any] = {"symbol": "ONE", "side": "buy", "qty": Decimal(1), "price": Decimal(100),
                            "fee": Decimal(0), "venue": "paper"}  # fmt: skip
    first = [
        # Filled at once, filled in part, resting.
        OrderAccepted(id="m:accepted", ts_event=1, ts_init=1, client_order_id="m", **common),
        OrderFilled(id="m:1", ts_event=2, ts_init=2, client_order_id="m", **{**fill, "qty": Decimal(2)}),
        OrderAccepted(id="p:accepted", ts_event=3, ts_init=3, client_order_id="p", **common),
        OrderFilled(id="p:1", ts_event=4, ts_init=4, client_order_id="p", leaves_qty=Decimal(1), cum_qty=Decimal(1),
                    **fill),
        OrderAccepted(id="r:accepted", ts_event=5, ts_init=5, client_order_id="r", order_type="limit",
                      limit_price=Decimal(99), **common),
    ]  # fmt: skip
    # Three orders, two past their acceptance, and not one row version more than the three inserted.
    assert await _written_once(db, first, 1, 5) == (3, 2, 3, 0)
    rows = {r["client_order_id"]: r for r in await db.fetch("SELECT * FROM orders")}
    assert {k: (r["status"], r["filled_qty"], r["ts_updated"]) for k, r in rows.items()} == {
        "m": ("filled", Decimal(2), 2),
        "p": ("partially_filled", Decimal(1), 4),
        "r": ("accepted", Decimal(0), 5),
    }
    # Orders stored by an earlier batch move by an update, as before.
    later = [
        OrderFilled(id="p:2", ts_event=6, ts_init=6, client_order_id="p", cum_qty=Decimal(2), **fill),
        OrderFilled(id="r:1", ts_event=7, ts_init=7, client_order_id="r", **{**fill, "qty": Decimal(2)}),
    ]
    assert await _written_once(db, later, 6, 7) == (0, 2, 0, 2)
    statuses = await db.fetch("SELECT client_order_id, status, filled_qty FROM orders ORDER BY client_order_id")
    assert [tuple(r) for r in statuses] == [
        ("m", "filled", Decimal(2)), ("p", "filled", Decimal(2)), ("r", "filled", Decimal(2)),
    ]  # fmt: skip
