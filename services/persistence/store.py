"""Batched, idempotent writes of wire messages to PostgreSQL.

Each table is written with one statement per batch: ``INSERT ... SELECT FROM unnest($1, $2, ...)`` with
one array parameter per column. Unique keys make every write idempotent: a redelivered message, or a quote
of a file replayed after JetStream's duplicate window, finds its row already there and changes nothing, so
nothing is stored twice.

Quotes of a QuoteBatch go as they travel, integer units and places, and become NUMERIC in SQL
(``units * 10^-places``, exact and at that scale): no Decimal per value in Python. That, not COPY, is what
made writes faster (bench/persistence_write.py, figures in bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import asyncpg.pool
import msgspec

from rrr.shared.fixed import to_decimal
from rrr.shared.messages import (
    PLACES_MAX,
    Message,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    Quote,
    QuoteBatch,
    Signal,
    Trade,
)

# A plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_INSERT_QUOTES = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                     $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[])
ON CONFLICT (id) DO NOTHING"""

# 10^-p for p = 0 ... PLACES_MAX, each at scale p: times an integer, it gives exactly that scale.
_SCALES = [to_decimal(1, places) for places in range(PLACES_MAX + 1)]

_INSERT_QUOTE_ROWS = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT u.id, u.symbol, u.ts_event, u.ts_init, u.bid * k.s[u.places + 1], u.ask * k.s[u.places + 1],
       u.bid_size * k.s[u.bid_size_places + 1], u.ask_size * k.s[u.ask_size_places + 1]
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::smallint[],
              $8::bigint[], $9::bigint[], $10::smallint[], $11::smallint[])
       AS u(id, symbol, ts_event, ts_init, bid, ask, places, bid_size, ask_size, bid_size_places, ask_size_places),
       (SELECT $12::numeric[] AS s) AS k
ON CONFLICT (id) DO NOTHING"""

# The quote batches of one stream batch and the consumer's new position, in one statement (one round trip,
# one commit): the position moves from below the batch's first sequence to its last, and the rows go in
# only if it did. A position already at or past the first sequence (the batch, or part of it, was stored
# before) changes nothing here: the caller takes the transaction that sorts that out.
_INSERT_QUOTE_ROWS_AT = """
WITH pos AS (
    UPDATE consumer_positions SET last_seq = $15, updated_at = now()
     WHERE consumer = $12 AND stream = $13 AND last_seq < $14
    RETURNING 1),
ins AS (
    INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
    SELECT u.id, u.symbol, u.ts_event, u.ts_init, u.bid * k.s[u.places + 1], u.ask * k.s[u.places + 1],
           u.bid_size * k.s[u.bid_size_places + 1], u.ask_size * k.s[u.ask_size_places + 1]
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::smallint[],
                  $8::bigint[], $9::bigint[], $10::smallint[], $11::smallint[])
           AS u(id, symbol, ts_event, ts_init, bid, ask, places, bid_size, ask_size, bid_size_places,
                ask_size_places),
           (SELECT $16::numeric[] AS s) AS k
     WHERE EXISTS (SELECT 1 FROM pos)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM pos) AS advanced, (SELECT count(*) FROM ins) AS inserted"""

_INSERT_TRADES = """
INSERT INTO trades (id, symbol, ts_event, ts_init, price, size, aggressor)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::numeric[], $6::numeric[], $7::text[])
ON CONFLICT (id) DO NOTHING"""

_INSERT_SIGNALS = """
INSERT INTO signals (id, strategy, symbol, quote_id, ts_event, ts_init, direction, fast, slow, target)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                     $7::text[], $8::numeric[], $9::numeric[], $10::numeric[])
ON CONFLICT (id) DO NOTHING"""

# An order's status only moves forward (accepted -> filled); a late or repeated event never moves it back.
# An acceptance that arrives after its fill (a batch redelivered late) is stored as filled.
_UPSERT_ORDERS = """
INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event, ts_updated)
SELECT u.id, u.strategy, u.symbol, u.side, u.qty, u.order_type,
       CASE WHEN u.status = 'accepted' AND EXISTS (SELECT 1 FROM fills f WHERE f.client_order_id = u.id)
            THEN 'filled' ELSE u.status END,
       u.reason, u.ts_event, u.ts_updated
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[],
              $7::text[], $8::text[], $9::bigint[], $10::bigint[])
       AS u(id, strategy, symbol, side, qty, order_type, status, reason, ts_event, ts_updated)
ON CONFLICT (client_order_id) DO UPDATE
   SET status = excluded.status, ts_updated = excluded.ts_updated
 WHERE orders.status = 'accepted' AND excluded.status = 'filled'"""

_MARK_FILLED = """
UPDATE orders SET status = 'filled', ts_updated = f.ts
  FROM unnest($1::text[], $2::bigint[]) AS f(id, ts)
 WHERE orders.client_order_id = f.id AND orders.status = 'accepted'"""

_INSERT_FILLS = """
INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, venue, ts_event, ts_init)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[],
                     $7::numeric[], $8::text[], $9::bigint[], $10::bigint[])
ON CONFLICT (fill_id) DO NOTHING"""

# Positions are snapshots numbered by ``version``: only a newer one replaces the stored row.
_UPSERT_POSITIONS = """
INSERT INTO positions (symbol, qty, avg_price, realized_pnl, version, ts_event)
SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::bigint[], $6::bigint[])
ON CONFLICT (symbol) DO UPDATE
   SET qty = excluded.qty, avg_price = excluded.avg_price, realized_pnl = excluded.realized_pnl,
       version = excluded.version, ts_event = excluded.ts_event, stored_at = now()
 WHERE positions.version < excluded.version"""


def rows_of(message: Message) -> int:
    """How many rows ``message`` writes: a QuoteBatch one per quote, anything else one."""
    return len(message.quotes) if isinstance(message, QuoteBatch) else 1


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "INSERT 0 17" or "UPDATE 3".
    return int(status.rsplit(" ", 1)[-1])


def _quote_rows(batches: Iterable[QuoteBatch]) -> list[tuple[Any, ...]]:
    return [
        (r.id, r.symbol, r.ts_event, m.ts_init, r.bid, r.ask, r.places, r.bid_size, r.ask_size,
         r.bid_size_places, r.ask_size_places)
        for m in batches
        for r in m.quotes
    ]  # fmt: skip


async def write_quote_batches_at(
    conn: Connection, batches: Sequence[QuoteBatch], consumer: str, stream: str, first_seq: int, last_seq: int
) -> int | None:
    """Store ``batches`` (stream sequences ``first_seq`` to ``last_seq``) and move ``consumer``'s position
    to ``last_seq``, in one statement; return the rows inserted, or None if the position was not below
    ``first_seq`` (nothing written: the caller checks what is covered, in a transaction)."""
    row = await conn.fetchrow(
        _INSERT_QUOTE_ROWS_AT, *_columns(_quote_rows(batches)), consumer, stream, first_seq, last_seq, _SCALES
    )
    assert row is not None
    return int(row["inserted"]) if row["advanced"] else None


class RowsWritten(msgspec.Struct, kw_only=True):
    """Rows one write inserted or changed, per table (a duplicate that changes nothing is not counted)."""

    quotes: int = 0
    trades: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    positions: int = 0
    # Orders marked filled by a fill that came in a later batch than the order's acceptance.
    orders_filled: int = 0


async def write_batch(conn: Connection, messages: Iterable[Message]) -> RowsWritten:
    """Write a batch of messages in the caller's transaction; return rows written per table.

    Messages of a batch keep their order where it matters: an order's fill is applied after its
    acceptance, and of several positions of a symbol the highest version wins.
    """
    quotes: list[tuple[Any, ...]] = []
    quote_rows: list[tuple[Any, ...]] = []
    trades: list[tuple[Any, ...]] = []
    signals: list[tuple[Any, ...]] = []
    orders: dict[str, list[Any]] = {}
    filled: dict[str, int] = {}
    fills: list[tuple[Any, ...]] = []
    positions: dict[str, tuple[Any, ...]] = {}
    for m in messages:
        if isinstance(m, QuoteBatch):
            ts_init = m.ts_init
            quote_rows.extend(
                (
                    r.id,
                    r.symbol,
                    r.ts_event,
                    ts_init,
                    r.bid,
                    r.ask,
                    r.places,
                    r.bid_size,
                    r.ask_size,
                    r.bid_size_places,
                    r.ask_size_places,
                )
                for r in m.quotes
            )
        elif isinstance(m, Quote):
            quotes.append((m.id, m.symbol, m.ts_event, m.ts_init, m.bid, m.ask, m.bid_size, m.ask_size))
        elif isinstance(m, Trade):
            trades.append((m.id, m.symbol, m.ts_event, m.ts_init, m.price, m.size, m.aggressor))
        elif isinstance(m, Signal):
            signals.append(
                (
                    m.id,
                    m.strategy,
                    m.symbol,
                    m.quote_id,
                    m.ts_event,
                    m.ts_init,
                    m.direction,
                    m.fast,
                    m.slow,
                    m.target,
                )
            )
        elif isinstance(m, OrderAccepted | OrderRejected):
            if m.client_order_id not in orders:
                status = "accepted" if isinstance(m, OrderAccepted) else "rejected"
                reason = m.reason if isinstance(m, OrderRejected) else None
                orders[m.client_order_id] = [
                    m.client_order_id, m.strategy, m.symbol, m.side, m.qty, m.order_type, status, reason,
                    m.ts_event, m.ts_event,
                ]  # fmt: skip
        elif isinstance(m, OrderFilled):
            row = orders.get(m.client_order_id)
            if row is not None and row[6] == "accepted":
                row[6], row[9] = "filled", m.ts_event  # accepted and filled in one batch: one upsert
            else:
                filled[m.client_order_id] = m.ts_event
            fills.append(
                (
                    m.id,
                    m.client_order_id,
                    m.symbol,
                    m.side,
                    m.qty,
                    m.price,
                    m.fee,
                    m.venue,
                    m.ts_event,
                    m.ts_init,
                )
            )
        elif isinstance(m, PositionUpdated):
            held = positions.get(m.symbol)
            if held is None or held[4] < m.version:
                positions[m.symbol] = (m.symbol, m.qty, m.avg_price, m.realized_pnl, m.version, m.ts_event)

    written = RowsWritten()
    if quote_rows:
        written.quotes = _count(await conn.execute(_INSERT_QUOTE_ROWS, *_columns(quote_rows), _SCALES))
    if quotes:
        written.quotes += _count(await conn.execute(_INSERT_QUOTES, *_columns(quotes)))
    if trades:
        written.trades = _count(await conn.execute(_INSERT_TRADES, *_columns(trades)))
    if signals:
        written.signals = _count(await conn.execute(_INSERT_SIGNALS, *_columns(signals)))
    if orders:
        written.orders = _count(await conn.execute(_UPSERT_ORDERS, *_columns([tuple(r) for r in orders.values()])))
    if fills:
        written.fills = _count(await conn.execute(_INSERT_FILLS, *_columns(fills)))
    if positions:
        written.positions = _count(await conn.execute(_UPSERT_POSITIONS, *_columns(list(positions.values()))))
    if filled:
        written.orders_filled = _count(await conn.execute(_MARK_FILLED, list(filled), list(filled.values())))
    return written
