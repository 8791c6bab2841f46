"""Batched, idempotent writes of wire messages to PostgreSQL.

Each table is written with one statement per batch: ``INSERT ... SELECT FROM unnest($1, $2, ...)`` with
one array parameter per column; the quote batches of the market-data stream arrive by binary COPY instead
(``write_quote_batches_at``). Unique keys make every write idempotent: a redelivered message, or a quote
of a file replayed after JetStream's duplicate window, finds its row already there and changes nothing, so
nothing is stored twice.

Quotes of a QuoteBatch go as they travel, integer units and places, and become NUMERIC in SQL
(``units * 10^-places``, exact and at that scale): no Decimal per value in Python (bench/persistence_write.py,
figures in bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import asyncpg.pool
import msgspec

from rrr.shared.fixed import to_decimal
from rrr.shared.messages import (
    PLACES_MAX,
    MatchedThrough,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    OrderUpdate,
    PositionUpdated,
    Quote,
    QuoteBatch,
    Signal,
    StrategyAt,
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

# The quote batches of one stream batch arrive by binary COPY in this table of the session (one per pooled
# connection, made by ``prepare_session``), emptied by each commit: COPY encodes a row in C, where asyncpg
# checks every element of an unnest parameter's arrays in Python (2.5 times the writer's CPU per quote).
_QUOTE_ROWS_IN = "quote_rows_in"
_CREATE_QUOTE_ROWS_IN = """
CREATE TEMPORARY TABLE IF NOT EXISTS quote_rows_in (
    id text, symbol text, ts_event bigint, ts_init bigint, bid bigint, ask bigint, places smallint,
    bid_size bigint, ask_size bigint, bid_size_places smallint, ask_size_places smallint
) ON COMMIT DELETE ROWS"""

# Then, in the same transaction, the rows; then the consumer's position moves from below the batch's first
# sequence to its last, and the transaction commits only if it did. A position already at or past the first
# sequence (the batch, or part of it, was stored before) rolls the rows back: the caller takes the transaction
# that sorts that out. Without ON CONFLICT, which costs PostgreSQL a third of the insert: a quote stored before
# under another message (a file replayed again) fails the statement, and the batch is written again with
# _INSERT_QUOTE_ROWS_ONCE.
_INSERT_NEW_QUOTE_ROWS = """
INSERT INTO quotes (id, symbol, ts_event, ts_init, bid, ask, bid_size, ask_size)
SELECT u.id, u.symbol, u.ts_event, u.ts_init, u.bid * k.s[u.places + 1], u.ask * k.s[u.places + 1],
       u.bid_size * k.s[u.bid_size_places + 1], u.ask_size * k.s[u.ask_size_places + 1]
  FROM quote_rows_in AS u, (SELECT $1::numeric[] AS s) AS k"""
_INSERT_QUOTE_ROWS_ONCE = _INSERT_NEW_QUOTE_ROWS + "\nON CONFLICT (id) DO NOTHING"
_ADVANCE_POSITION = """
UPDATE consumer_positions SET last_seq = $4, updated_at = now()
 WHERE consumer = $1 AND stream = $2 AND last_seq < $3"""

# Signals and the consumer's new position in one statement: the position moves from below the batch's first
# sequence to its last, and the rows go in only if it did (write_batch_at says what happens otherwise).
_INSERT_SIGNALS_AT = """
WITH pos AS (
    UPDATE consumer_positions SET last_seq = $14, updated_at = now()
     WHERE consumer = $11 AND stream = $12 AND last_seq < $13
    RETURNING 1),
ins AS (
    INSERT INTO signals (id, strategy, symbol, quote_id, ts_event, ts_init, direction, fast, slow, target)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::text[], $8::numeric[], $9::numeric[], $10::numeric[])
     WHERE EXISTS (SELECT 1 FROM pos)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM pos) AS advanced, (SELECT count(*) FROM ins) AS inserted"""

# Order events, fills, positions and the consumer's new position in one call (migration 0005: the statements of
# write_batch's in-order path, in its order, run by the server).
_WRITE_ORDER_EVENTS = """
SELECT * FROM write_order_events(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
    $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, $40,
    $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, $54, $55, $56, $57, $58, $59, $60)"""

_INSERT_TRADES = """
INSERT INTO trades (id, symbol, ts_event, ts_init, price, size, aggressor)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::numeric[], $6::numeric[], $7::text[])
ON CONFLICT (id) DO NOTHING"""

_INSERT_SIGNALS = """
INSERT INTO signals (id, strategy, symbol, quote_id, ts_event, ts_init, direction, fast, slow, target)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                     $7::text[], $8::numeric[], $9::numeric[], $10::numeric[])
ON CONFLICT (id) DO NOTHING"""

# Every event of an order, once (its id is the key).
_INSERT_ORDER_EVENTS = """
INSERT INTO order_events (id, client_order_id, symbol, kind, status, qty, filled_qty, price, reason, command_id,
                          ts_event, ts_init)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[],
                     $8::numeric[], $9::text[], $10::text[], $11::bigint[], $12::bigint[])
ON CONFLICT (id) DO NOTHING"""

# An order's row comes with its acceptance or rejection; its status is then recomputed from the journal
# (_ORDER_STATUS), so that an acceptance stored after its fill (a batch redelivered late) finds it filled.
_INSERT_ORDERS = """
INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event, ts_updated,
                    limit_price, stop_price, tif, expire_ts, post_only, reduce_only)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[],
                     $8::text[], $9::bigint[], $10::bigint[], $11::numeric[], $12::numeric[], $13::text[],
                     $14::bigint[], $15::boolean[], $16::boolean[])
ON CONFLICT (client_order_id) DO NOTHING
RETURNING client_order_id"""

# Of the orders whose rows a batch inserted, those with events in the journal from before the batch (events
# stored ahead of their order's acceptance): more events in the journal than the batch brought of it. Their
# statuses are recomputed from the whole journal. A count by a probe of the journal per order, not = ANY, which
# without the column's statistics the planner answers with a full read.
_EARLIER_EVENTS = """
SELECT i.id FROM unnest($1::text[], $2::bigint[]) AS i(id, n)
 WHERE (SELECT count(*) FROM order_events e WHERE e.client_order_id = i.id) > i.n"""

# The furthest status of each order in the journal (the fullest of its partial fills), replacing the row's
# only when it is further along: a status never moves back, whatever order its events are stored in. Each order
# of the array is joined to its own events (not grouped from = ANY, which the planner took for a dozen rows per
# order and answered with a read of all of orders).
_ORDER_STATUS = """
UPDATE orders o
   SET status = j.status, filled_qty = greatest(o.filled_qty, j.filled_qty), ts_updated = j.ts_event
  FROM unnest($1::text[]) AS l(id)
       CROSS JOIN LATERAL (
           SELECT (array_agg(e.status ORDER BY order_status_rank(e.status) DESC, e.filled_qty DESC NULLS LAST))[1]
                      AS status,
                  (array_agg(e.ts_event ORDER BY order_status_rank(e.status) DESC, e.filled_qty DESC NULLS LAST))[1]
                      AS ts_event,
                  coalesce(max(e.filled_qty), 0) AS filled_qty
             FROM order_events e
            WHERE e.client_order_id = l.id AND e.status IS NOT NULL) j
 WHERE o.client_order_id = l.id AND j.status IS NOT NULL
   AND (order_status_rank(j.status) > order_status_rank(o.status)
        OR (j.status = 'partially_filled' AND o.status = 'partially_filled' AND j.filled_qty > o.filled_qty))"""

# The furthest status each order reached in a batch (``_furthest``), where it is further along than the row's:
# what _ORDER_STATUS finds from the whole journal, when every earlier event of the orders was applied already.
_ADVANCE_ORDERS = """
UPDATE orders o
   SET status = u.status, filled_qty = greatest(o.filled_qty, u.filled_qty), ts_updated = u.ts_event
  FROM unnest($1::text[], $2::text[], $3::numeric[], $4::bigint[]) AS u(id, status, filled_qty, ts_event)
 WHERE o.client_order_id = u.id
   AND (order_status_rank(u.status) > order_status_rank(o.status)
        OR (u.status = 'partially_filled' AND o.status = 'partially_filled' AND u.filled_qty > o.filled_qty))"""

# The values an order has after its newest replace.
_REPLACE_ORDERS = """
UPDATE orders o SET qty = r.qty, limit_price = r.limit_price, stop_price = r.stop_price, replaces = r.n
  FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::bigint[])
       AS r(id, qty, limit_price, stop_price, n)
 WHERE o.client_order_id = r.id AND o.replaces < r.n"""

_INSERT_FILLS = """
INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, venue, ts_event, ts_init, leaves_qty,
                   cum_qty, liquidity)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[],
                     $7::numeric[], $8::text[], $9::bigint[], $10::bigint[], $11::numeric[], $12::numeric[],
                     $13::text[])
ON CONFLICT (fill_id) DO NOTHING"""

# For the rest of the caller's transaction, each statement planned for its own arrays and the tables as they are
# (migration 0005 says why): the order statements below look orders and their events up by key once the tables
# hold more than a few thousand rows, instead of keeping a plan made while they were small.
_CUSTOM_PLANS = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"

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


def _columns_of(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    # Also for no rows: one empty array per column.
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in range(width)]


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


async def prepare_session(conn: Connection) -> None:
    """Make what this module's writes need in ``conn``'s session: a pool's ``init``. A role that may not
    is left to ``rrr.persistence.schema.ensure_writer`` to explain, once the schema is known current."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute(_CREATE_QUOTE_ROWS_IN)


class _NotAdvancedError(Exception):
    """The position did not move: the transaction's rows are rolled back."""


async def write_quote_batches_at(
    conn: Connection,
    batches: Sequence[QuoteBatch],
    consumer: str,
    stream: str,
    first_seq: int,
    last_seq: int,
    *,
    after: asyncio.Future[bool] | None = None,
) -> int | None:
    """Store ``batches`` (stream sequences ``first_seq`` to ``last_seq``) and move ``consumer``'s position
    to ``last_seq``, in one transaction; return the rows inserted, or None if nothing was written: the position
    was not below ``first_seq`` (the caller checks what is covered, in a transaction), or ``after`` said False.

    ``after``, if given, is awaited once the rows are in and before the position moves: the write of the
    batches before these, on another connection, whose position must be committed before this one's moves
    (True) or was not (False). The rows of both go in at the same time; the positions, and so the commits, in
    stream order. ``conn``'s session was prepared (``prepare_session``).
    """
    rows = _quote_rows(batches)
    try:
        return await _quote_rows_at(conn, rows, _INSERT_NEW_QUOTE_ROWS, consumer, stream, first_seq, last_seq, after)
    except asyncpg.UniqueViolationError:
        # Some of them were stored before, under another message: all of it again, passing over those.
        return await _quote_rows_at(conn, rows, _INSERT_QUOTE_ROWS_ONCE, consumer, stream, first_seq, last_seq, after)


async def _quote_rows_at(
    conn: Connection,
    rows: list[tuple[Any, ...]],
    insert: str,
    consumer: str,
    stream: str,
    first: int,
    last: int,
    after: asyncio.Future[bool] | None,
) -> int | None:
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(_QUOTE_ROWS_IN, records=rows)
            inserted = _count(await conn.execute(insert, _SCALES))
            if after is not None and not await after:
                raise _NotAdvancedError
            if _count(await conn.execute(_ADVANCE_POSITION, consumer, stream, first, last)) == 0:
                raise _NotAdvancedError
    except _NotAdvancedError:
        return None
    return inserted


class RowsWritten(msgspec.Struct, kw_only=True):
    """Rows one write inserted or changed, per table (a duplicate that changes nothing is not counted)."""

    quotes: int = 0
    trades: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    positions: int = 0
    # Order rows whose status moved (filled, partially filled, canceled, expired) with this write.
    orders_filled: int = 0
    order_events: int = 0


@dataclass(slots=True)
class _Rows:
    """A batch's rows, per table, as ``write_batch`` writes them."""

    quotes: list[tuple[Any, ...]]
    quote_rows: list[tuple[Any, ...]]
    trades: list[tuple[Any, ...]]
    signals: list[tuple[Any, ...]]
    orders: dict[str, tuple[Any, ...]]
    journal: list[tuple[Any, ...]]
    replaced: dict[str, tuple[Any, ...]]
    fills: list[tuple[Any, ...]]
    positions: dict[str, tuple[Any, ...]]


def _rows(messages: Iterable[Message]) -> _Rows:
    """The rows of ``messages``: an order's fill after its acceptance, of several replaces of an order and of
    several positions of a symbol the newest."""
    quotes: list[tuple[Any, ...]] = []
    quote_rows: list[tuple[Any, ...]] = []
    trades: list[tuple[Any, ...]] = []
    signals: list[tuple[Any, ...]] = []
    orders: dict[str, tuple[Any, ...]] = {}
    journal: list[tuple[Any, ...]] = []
    replaced: dict[str, tuple[Any, ...]] = {}
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
                spec = (
                    (m.limit_price, m.stop_price, m.tif, m.expire_ts or None, m.post_only, m.reduce_only)
                    if isinstance(m, OrderAccepted)
                    else (None, None, "gtc", None, False, False)
                )
                orders[m.client_order_id] = (
                    m.client_order_id, m.strategy, m.symbol, m.side, m.qty, m.order_type, status, reason,
                    m.ts_event, m.ts_event, *spec,
                )  # fmt: skip
            journal.append(_journal(m, status="accepted" if isinstance(m, OrderAccepted) else "rejected"))
        elif isinstance(m, OrderFilled):
            fills.append(
                (
                    m.id, m.client_order_id, m.symbol, m.side, m.qty, m.price, m.fee, m.venue, m.ts_event,
                    m.ts_init, m.open_qty, m.filled_qty, m.liquidity,
                )
            )  # fmt: skip
            journal.append(_journal(m, status="filled" if m.leaves_qty is None else "partially_filled"))
        elif isinstance(m, OrderReplaced):
            held_replace = replaced.get(m.client_order_id)
            if held_replace is None or held_replace[4] < m.replaces:
                replaced[m.client_order_id] = (m.client_order_id, m.qty, m.limit_price, m.stop_price, m.replaces)
            journal.append(_journal(m))
        elif isinstance(m, OrderTriggered | OrderCanceled | OrderExpired | OrderCancelRejected):
            ended = "canceled" if isinstance(m, OrderCanceled) else "expired" if isinstance(m, OrderExpired) else None
            journal.append(_journal(m, status=ended))
        elif isinstance(m, PositionUpdated):
            held = positions.get(m.symbol)
            if held is None or held[4] < m.version:
                positions[m.symbol] = (m.symbol, m.qty, m.avg_price, m.realized_pnl, m.version, m.ts_event)
        elif isinstance(m, MatchedThrough | StrategyAt):
            # The strategies' lockstep with execution: how far each got, not a row of any table. Passed over
            # with the rest, so that the position covers them.
            continue

    return _Rows(quotes, quote_rows, trades, signals, orders, journal, replaced, fills, positions)


async def write_batch(conn: Connection, messages: Iterable[Message], *, in_order: bool = False) -> RowsWritten:
    """Write a batch of messages in the caller's transaction; return rows written per table.

    Messages of a batch keep their order where it matters: an order's fill is applied after its
    acceptance, and of several positions of a symbol the highest version wins.

    ``in_order``: the batch comes from a stream read in order from a stored position, after every earlier
    message of it was written (an order's acceptance, its first event, always before its other events). Its
    orders' statuses then move by this batch's own events alone. Otherwise (retries, dead letters handed
    back: an acceptance may come after its fill), each status is recomputed from the whole journal.
    """
    rows = _rows(messages)
    quotes, quote_rows, trades, signals = rows.quotes, rows.quote_rows, rows.trades, rows.signals
    orders, journal, replaced, fills, positions = rows.orders, rows.journal, rows.replaced, rows.fills, rows.positions
    written = RowsWritten()
    if quote_rows:
        written.quotes = _count(await conn.execute(_INSERT_QUOTE_ROWS, *_columns(quote_rows), _SCALES))
    if quotes:
        written.quotes += _count(await conn.execute(_INSERT_QUOTES, *_columns(quotes)))
    if trades:
        written.trades = _count(await conn.execute(_INSERT_TRADES, *_columns(trades)))
    if signals:
        written.signals = _count(await conn.execute(_INSERT_SIGNALS, *_columns(signals)))
    if journal:
        await conn.execute(_CUSTOM_PLANS)
        written.order_events = _count(await conn.execute(_INSERT_ORDER_EVENTS, *_columns(journal)))
    inserted: list[str] = []
    if orders:
        inserted = [r[0] for r in await conn.fetch(_INSERT_ORDERS, *_columns(list(orders.values())))]
        written.orders = len(inserted)
    if fills:
        written.fills = _count(await conn.execute(_INSERT_FILLS, *_columns(fills)))
    if replaced:
        await conn.execute(_REPLACE_ORDERS, *_columns(list(replaced.values())))
    if journal and in_order:
        # Statuses last: each order's furthest in this batch, where further than its row's; and from the whole
        # journal for an order whose row came only now, after events of it that found no row.
        furthest = _furthest(journal)
        if furthest:
            written.orders_filled = _count(await conn.execute(_ADVANCE_ORDERS, *_columns(furthest)))
        if inserted:
            # The distinct events of each inserted order in this batch (a repeat of one is stored once).
            brought = Counter(order for _, order in {(row[0], row[1]) for row in journal})
            counts = [brought[order] for order in inserted]
            late = [r[0] for r in await conn.fetch(_EARLIER_EVENTS, inserted, counts)]
            if late:
                written.orders_filled += _count(await conn.execute(_ORDER_STATUS, late))
    elif journal:
        # Statuses last, from the journal with this batch's events in it.
        ids = list(dict.fromkeys(row[1] for row in journal))
        written.orders_filled = _count(await conn.execute(_ORDER_STATUS, ids))
    if positions:
        written.positions = _count(await conn.execute(_UPSERT_POSITIONS, *_columns(list(positions.values()))))
    return written


async def write_batch_at(
    conn: Connection, messages: Sequence[Message], consumer: str, stream: str, first_seq: int, last_seq: int
) -> RowsWritten | None:
    """Store ``messages`` (stream sequences ``first_seq`` to ``last_seq``, read in stream order after everything
    before them) and move ``consumer``'s position to ``last_seq``, in one statement; return the rows written.

    Signals, or order events with their fills and positions, go in one round trip (quote batches:
    ``write_quote_batches_at``). None: nothing was written, because the position was not below ``first_seq``
    or because the batch holds rows no single statement here writes (trades, single quotes, or signals with
    order events); the caller writes it in a transaction that reads the position.
    """
    rows = _rows(messages)
    if rows.quotes or rows.quote_rows or rows.trades:
        return None
    events = rows.journal or rows.orders or rows.fills or rows.replaced or rows.positions
    if rows.signals:
        if events:
            return None
        row = await conn.fetchrow(_INSERT_SIGNALS_AT, *_columns(rows.signals), consumer, stream, first_seq, last_seq)
        assert row is not None
        return RowsWritten(signals=int(row["inserted"])) if row["advanced"] else None
    # Also a batch without rows (messages persistence passes over): the position moves all the same.
    row = await conn.fetchrow(
        _WRITE_ORDER_EVENTS,
        consumer,
        stream,
        first_seq,
        last_seq,
        *_columns_of(rows.journal, 12),
        *_columns_of(rows.orders.values(), 16),
        *_columns_of(rows.fills, 13),
        *_columns_of(rows.replaced.values(), 5),
        *_columns_of(_furthest(rows.journal), 4),
        *_columns_of(rows.positions.values(), 6),
    )
    assert row is not None
    if not row["advanced"]:
        return None
    return RowsWritten(
        orders=row["n_orders"],
        fills=row["n_fills"],
        positions=row["n_positions"],
        orders_filled=row["n_orders_filled"],
        order_events=row["n_order_events"],
    )


_RANK = {"accepted": 1, "partially_filled": 2}  # the rest (filled, canceled, rejected, expired): 3


def _furthest(journal: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Per order, ``(id, status, filled_qty, ts_event)`` of its furthest event in ``journal`` (rows of
    ``_journal``) past acceptance: the status of the highest rank, the most filled among equals, as
    _ORDER_STATUS orders them, and the most it filled."""
    best: dict[str, tuple[tuple[int, Decimal], str, int]] = {}
    filled: dict[str, Decimal] = {}
    for row in journal:
        order_id, status, filled_qty, ts_event = row[1], row[4], row[6], row[10]
        if status is None:
            continue
        amount = Decimal(0) if filled_qty is None else filled_qty
        key = (_RANK.get(status, 3), amount)
        held = best.get(order_id)
        if held is None or key > held[0]:
            best[order_id] = (key, status, ts_event)
        filled[order_id] = max(filled.get(order_id, amount), amount)
    return [
        (order_id, status, filled[order_id], ts_event)
        for order_id, (key, status, ts_event) in best.items()
        if key[0] > 1
    ]


_KINDS: dict[type[Message], str] = {
    OrderAccepted: "accepted",
    OrderRejected: "rejected",
    OrderTriggered: "triggered",
    OrderCanceled: "canceled",
    OrderExpired: "expired",
    OrderReplaced: "replaced",
    OrderCancelRejected: "cancel_rejected",
}


def _journal(m: OrderUpdate, *, status: str | None = None) -> tuple[Any, ...]:
    """The order_events row of an order event: what it is, the status it leaves, quantities, why."""
    qty = filled = price = None
    reason = command_id = None
    if isinstance(m, OrderFilled):
        kind = "filled" if m.leaves_qty is None else "partially_filled"
        qty, filled, price = m.qty, m.filled_qty, m.price
    else:
        kind = _KINDS[type(m)]
        if isinstance(m, OrderAccepted | OrderRejected | OrderTriggered | OrderReplaced):
            qty, filled = m.qty, Decimal(0) if isinstance(m, OrderAccepted | OrderRejected) else None
            price = m.stop_price if isinstance(m, OrderTriggered) else None
        if isinstance(m, OrderCanceled | OrderExpired):
            qty, filled = m.qty, m.filled_qty
        if isinstance(m, OrderRejected | OrderCanceled | OrderCancelRejected):
            reason = m.reason
        if isinstance(m, OrderCanceled | OrderReplaced | OrderCancelRejected):
            command_id = m.command_id or None
    return (
        m.id, m.client_order_id, m.symbol, kind, status, qty, filled, price, reason, command_id, m.ts_event, m.ts_init,
    )  # fmt: skip
