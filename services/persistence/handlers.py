"""Handlers of the subjects persistence consumes: one function per subject family."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from rrr.persistence.positions import Position
from rrr.persistence.store import RowsWritten, rows_of, write_batch, write_batch_at, write_quote_batches_at
from rrr.shared.bus import Bus, Delivery, Rejected
from rrr.shared.counters import Counters
from rrr.shared.errors import TransientError
from rrr.shared.messages import AnyMessage, MarketData, MatchedThrough, OrderEvent, QuoteBatch, Signal
from rrr.shared.metrics import Histogram

_log = logging.getLogger(__name__)
ACQUIRE_TIMEOUT_S = 10.0

# PostgreSQL is down, restarting, unreachable or out of resources: nothing is wrong with the data.
# InternalClientError: a connection the server dropped in the middle of an operation ("cannot switch to
# state ..."), seen when PostgreSQL shuts down under load.
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
# SQLSTATE classes of the same kind: connection (08), serialization and deadlock (40), insufficient
# resources such as a full disk (53), operator intervention such as a shutdown (57), system errors (58).
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_UNAVAILABLE_STATES = frozenset({"25006"})  # read-only transaction: a replica after a failover


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES


class PersistenceCounters(Counters, kw_only=True):
    """What persistence counts, reported in its heartbeats: messages stored per consumer, rows per table,
    messages skipped because the consumer's stored position already covered them."""

    md_messages: int = 0
    sig_messages: int = 0
    evt_messages: int = 0
    retry_messages: int = 0
    rows_quotes: int = 0
    rows_trades: int = 0
    rows_signals: int = 0
    rows_orders: int = 0
    rows_fills: int = 0
    rows_positions: int = 0
    rows_orders_filled: int = 0
    rows_order_events: int = 0
    skipped_covered: int = 0
    # Execution's lockstep progress events (rrr.execution.lockstep) read on evt.order.<shard>._step: no rows.
    progress_skipped: int = 0

    def add_rows(self, written: RowsWritten) -> None:
        """Count the rows of one write."""
        self.rows_quotes += written.quotes
        self.rows_trades += written.trades
        self.rows_signals += written.signals
        self.rows_orders += written.orders
        self.rows_fills += written.fills
        self.rows_positions += written.positions
        self.rows_orders_filled += written.orders_filled
        self.rows_order_events += written.order_events


@dataclass(slots=True)
class Writer:
    """What the handlers write with: the pool, the bus (for trace links), the counters, and the most rows
    one transaction writes, of market data and of the rest (a single message larger than that goes alone)."""

    pool: asyncpg.Pool
    bus: Bus
    max_rows: int
    max_quote_rows: int
    counters: PersistenceCounters = field(default_factory=PersistenceCounters)
    # Time of each committed write (a pooled connection taken, the statements, the commit), by plane.
    write_s: dict[str, Histogram] = field(
        default_factory=lambda: {p: Histogram() for p in ("md", "sig", "evt", "retry")}
    )

    def written(self, family: str, seconds: float) -> None:
        """Record a committed write of ``family`` (md, sig, evt, retry) that took ``seconds``."""
        histogram = self.write_s.get(family)
        if histogram is None:
            histogram = self.write_s[family] = Histogram()
        histogram.observe(seconds)


async def _write(
    writer: Writer, batch: Sequence[Delivery[Any]], family: str, position: Position | None, *, advance: bool
) -> int:
    """Write a batch in one transaction; with a position, skip what it covers and, if ``advance``, move it
    to the batch's last message in the same transaction. Counted once committed; return the messages
    written."""
    # The bus never acknowledges anything before this returns, and a position moves only with the rows it
    # covers: if PostgreSQL is unavailable, the same batch comes again.
    skipped, written = 0, RowsWritten()
    started = time.perf_counter()
    try:
        if position is not None and advance and batch:
            # The hot path: the batch and the position in one statement, when nothing of it is stored.
            messages = [d.message for d in batch]
            first, last = batch[0].seq, batch[-1].seq
            async with writer.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                if all(isinstance(m, QuoteBatch) for m in messages):
                    inserted = await write_quote_batches_at(
                        conn, messages, position.consumer, position.stream, first, last
                    )
                    done = None if inserted is None else RowsWritten(quotes=inserted)
                else:
                    done = await write_batch_at(conn, messages, position.consumer, position.stream, first, last)
            if done is not None:
                writer.counters.add_rows(done)
                writer.written(family, time.perf_counter() - started)
                return len(batch)
        async with writer.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
            if position is not None:
                # Read in the transaction, not remembered: a commit whose reply was lost (an outage at the
                # wrong moment) may have stored the batch that is now tried again.
                covered = await position.locked(conn)
                fresh = [d for d in batch if d.seq > covered]
                skipped = len(batch) - len(fresh)
                batch = fresh
            if batch:
                # With a position, the batch comes in stream order after everything before it.
                written = await write_batch(conn, [d.message for d in batch], in_order=position is not None)
                if position is not None and advance:
                    await position.advance(conn, batch[-1].seq)
    except Exception as exc:
        if _unavailable(exc):
            raise TransientError(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}") from exc
        raise
    writer.counters.skipped_covered += skipped
    writer.counters.add_rows(written)
    writer.written(family, time.perf_counter() - started)
    return len(batch)


def _chunks(batch: Sequence[Delivery[Any]], max_rows: int) -> Iterator[Sequence[Delivery[Any]]]:
    """Consecutive runs of messages of at most ``max_rows`` rows each (a larger message alone), never parting
    the messages of one envelope (one stream sequence): a position covers all of them or none."""
    start, rows = 0, 0
    for i, delivery in enumerate(batch):
        n = rows_of(delivery.message)
        if i > start and rows + n > max_rows and delivery.seq != batch[i - 1].seq:
            yield batch[start:i]
            start, rows = i, 0
        rows += n
    if start < len(batch):
        yield batch[start:]


# Chunks of quote batches written at the same time: the rows of one go in while the one before commits.
OVERLAPPED_WRITES = 2


async def _write_quotes_overlapped(
    writer: Writer, chunks: list[Sequence[Delivery[Any]]], family: str, position: Position
) -> tuple[int, int]:
    """Write the leading chunks of ``chunks`` that hold quote batches only, OVERLAPPED_WRITES at a time, each on
    a connection of its own; return how many were committed (a prefix of them) and their messages.

    PostgreSQL inserts the rows of each chunk in parallel; each chunk's position moves, and its transaction
    commits, only after the chunk before it committed (``write_quote_batches_at``'s ``after``): what is
    committed is always everything up to a point, as when written one at a time. The first chunk that is not
    committed (refused, an outage, a position that already covers it) and all after it are left to the caller,
    written one at a time. So is a chunk sharing a quote with the one before (a file replayed twice at once):
    its rows would wait for the other's commit, which waits for this one.
    """
    loop = asyncio.get_running_loop()
    in_flight: list[tuple[asyncio.Task[int | None], int, float]] = []
    committed = stored = 0
    previous: asyncio.Future[bool] | None = None
    previous_ids: set[str] = set()
    stopped = False

    async def settle() -> None:
        # The oldest write in flight: counted if committed; if not, nothing after it commits either.
        nonlocal committed, stored, stopped
        task, size, started = in_flight.pop(0)
        try:
            inserted = await task
        except Exception:
            inserted = None  # written again one at a time, which says what is wrong
        if inserted is None:
            stopped = True
            return
        writer.counters.add_rows(RowsWritten(quotes=inserted))
        writer.written(family, time.perf_counter() - started)
        committed += 1
        stored += size

    try:
        for chunk in chunks:
            messages = [d.message for d in chunk]
            if stopped or not all(isinstance(m, QuoteBatch) for m in messages):
                break
            ids = {row.id for m in messages for row in m.quotes}
            if not ids.isdisjoint(previous_ids):
                break
            acquired: asyncio.Future[None] = loop.create_future()
            done: asyncio.Future[bool] = loop.create_future()
            task = asyncio.create_task(_write_quote_chunk(writer, chunk, messages, position, previous, acquired, done))
            in_flight.append((task, len(chunk), time.perf_counter()))
            previous, previous_ids = done, ids
            # The next chunk asks for a connection only once this one holds its own: a chunk never holds the
            # connection the one before it waits for.
            await acquired
            if len(in_flight) == OVERLAPPED_WRITES:
                await settle()
        while in_flight:
            await settle()
    finally:
        for task, _, _ in in_flight:
            task.cancel()
        for task, _, _ in in_flight:
            with contextlib.suppress(BaseException):
                await task
    return committed, stored


async def _write_quote_chunk(
    writer: Writer,
    chunk: Sequence[Delivery[Any]],
    messages: list[QuoteBatch],
    position: Position,
    after: asyncio.Future[bool] | None,
    acquired: asyncio.Future[None],
    done: asyncio.Future[bool],
) -> int | None:
    inserted = None
    try:
        async with writer.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            acquired.set_result(None)
            inserted = await write_quote_batches_at(
                conn, messages, position.consumer, position.stream, chunk[0].seq, chunk[-1].seq, after=after
            )
        return inserted
    finally:
        # Committed or not, and the connection given back, whatever happened (an outage, a cancellation).
        if not acquired.done():
            acquired.set_result(None)
        done.set_result(inserted is not None)


async def _store(
    writer: Writer, batch: Sequence[Delivery[Any]], family: str, position: Position | None
) -> tuple[int, list[Rejected]]:
    """Write a batch; return how many of its messages were stored (not skipped), and those refused.

    A message the database refuses (bad data, say) is returned as Rejected; the bus hands it to the retries
    or dead-letters it after this returns. The position therefore stops before the first refused message:
    what follows it is stored, but covered only by a later batch's position, which the bus hands over once
    the refused message is safely in the retry or dead-letter stream. A crash in between writes the
    messages after it again (stored once, by their keys) and refuses it again: never lost.
    """
    # One span for the batch, linked to each message's sender: the OpenTelemetry way for a batch consumer.
    with writer.bus.tracer.start_as_current_span(
        f"persistence.write_{family}", kind=SpanKind.CONSUMER, links=writer.bus.links([d.msg for d in batch])
    ) as span:
        span.set_attribute("messaging.batch.message_count", len(batch))
        stored, rejected = 0, list[Rejected]()
        # A quote row costs PostgreSQL a few microseconds, a transaction's statements and commit a few
        # milliseconds: market data goes in larger transactions.
        chunks = list(_chunks(batch, writer.max_quote_rows if family == "md" else writer.max_rows))
        done = 0
        if position is not None and len(chunks) > 1:
            done, stored = await _write_quotes_overlapped(writer, chunks, family, position)
        for chunk in chunks[done:]:
            try:
                stored += await _write(writer, chunk, family, position, advance=not rejected)
                continue
            except asyncpg.PostgresError:
                pass
            # The database refuses something in the chunk: write its messages one by one, so that only the
            # culprit is retried and, in the end, dead-lettered. A QuoteBatch is one message: one refused
            # quote sends the whole message (all its quotes) to the retries, with the reason.
            for delivery in chunk:
                try:
                    stored += await _write(writer, [delivery], family, position, advance=not rejected)
                except asyncpg.PostgresError as exc:
                    rejected.append(Rejected(delivery, f"postgres: {type(exc).__name__}: {exc}"))
        return stored, rejected


async def on_market_data(writer: Writer, position: Position, batch: Sequence[Delivery[MarketData]]) -> list[Rejected]:
    """``md.*.<shard>.*``: quotes (single and in batches) and trades."""
    stored, rejected = await _store(writer, batch, "md", position)
    writer.counters.md_messages += stored
    return rejected


async def on_signals(writer: Writer, position: Position, batch: Sequence[Delivery[Signal]]) -> list[Rejected]:
    """``sig.*.<shard>.*``: strategy signals."""
    stored, rejected = await _store(writer, batch, "sig", position)
    writer.counters.sig_messages += stored
    return rejected


async def on_events(writer: Writer, position: Position, batch: Sequence[Delivery[OrderEvent]]) -> list[Rejected]:
    """``evt.*.<shard>.*``: order events, fills and positions; execution's lockstep progress is no row, passed
    over and counted."""
    stored, rejected = await _store(writer, batch, "evt", position)
    writer.counters.evt_messages += stored
    writer.counters.progress_skipped += sum(isinstance(d.message, MatchedThrough) for d in batch)
    return rejected


async def on_retries(writer: Writer, batch: Sequence[Delivery[AnyMessage]]) -> list[Rejected]:
    """``retry.persistence.*.*.<shard>.*``: messages refused before and dead letters handed back with
    ``rrr-dlq republish``. Acknowledged one by one (rare, and of any stream): no position."""
    stored, rejected = await _store(writer, batch, "retry", None)
    writer.counters.retry_messages += stored
    return rejected
