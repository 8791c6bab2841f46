"""Natural batching of quotes: one message per shard for every quote made while the bus was busy.

A feed hands each quote to ``QuoteBatcher.add`` and goes on. The first quote after a quiet spell is sent
on the next turn of the event loop, alone: a low rate keeps the lowest latency. Quotes that arrive while
a batch is being sent wait, and go out together, one ``QuoteBatch`` per shard, as soon as the send ends:
a high rate gets large batches and far fewer messages. Nothing waits on a timer.

The batches go out on core NATS (the market-data stream captures them): a live feed cannot wait for a
broker that is away, so what cannot be sent is dropped and counted, as single live ticks are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors

from rrr.shared import subjects
from rrr.shared.bus.publish import Publisher
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.limits import DEFAULT_MAX_MSG_BYTES
from rrr.shared.messages import QUOTE_BATCH_MAX, QuoteBatch, QuoteRow, encode

# Room left in a message for its headers (the batch id, a trace context).
HEADER_ROOM_BYTES = 1024


def fitted(
    rows: list[QuoteRow], build: Callable[[list[QuoteRow]], QuoteBatch], max_bytes: int
) -> list[tuple[QuoteBatch, bytes]]:
    """``rows`` as batches (made by ``build``) each encoded in at most ``max_bytes`` minus room for headers,
    halving until they fit: a stream refuses a larger message, and a core publish never hears of it."""
    batch = build(rows)
    data = encode(batch)
    if len(data) <= max_bytes - HEADER_ROOM_BYTES or len(rows) == 1:
        return [(batch, data)]
    half = len(rows) // 2
    return fitted(rows[:half], build, max_bytes) + fitted(rows[half:], build, max_bytes)


_log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchCounters:
    """What a batcher did: quotes and batches sent, quotes dropped while the broker was away."""

    quotes: int = 0
    batches: int = 0
    dropped: int = 0


@dataclass(slots=True)
class QuoteBatcher:
    """Gathers quotes per shard and publishes them as ``QuoteBatch`` messages, natural batching.

    ``batch_id_prefix`` makes every batch id unique to this run (``<prefix>:<n>``): it is the batch's
    de-duplication key in the market-data stream. Call ``close`` to send what is still gathered.
    """

    bus: Publisher
    source: str
    shards: int
    batch_id_prefix: str
    clock: Clock = wall_clock
    max_rows: int = QUOTE_BATCH_MAX
    # The largest message the market-data stream takes (--max-msg-bytes): a batch is split to fit.
    max_bytes: int = DEFAULT_MAX_MSG_BYTES
    counters: BatchCounters = field(default_factory=BatchCounters)
    # Called with every batch once it is handed to the client (the latest-quote cache, say).
    on_sent: Callable[[QuoteBatch], None] | None = None
    _pending: dict[int, list[QuoteRow]] = field(default_factory=dict)
    _sending: asyncio.Task[None] | None = None
    _count: int = 0

    def __post_init__(self) -> None:
        subjects.quote_batch(0, self.source)  # a source that cannot be a subject token fails here, not later
        if not 1 <= self.max_rows <= QUOTE_BATCH_MAX:
            raise ValueError(f"max_rows must be 1..{QUOTE_BATCH_MAX}, got {self.max_rows}")

    def add(self, row: QuoteRow) -> None:
        """Queue ``row`` for its shard's next batch; a send starts on the next turn of the loop if none runs."""
        shard = subjects.shard_of(row.symbol, self.shards)
        pending = self._pending.get(shard)
        if pending is None:
            pending = self._pending[shard] = []
        pending.append(row)
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_all())

    async def close(self) -> None:
        """Send what is gathered and wait until it is handed to the client."""
        while self._sending is not None:
            await asyncio.shield(self._sending)

    async def _send_all(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, {}
                for shard, rows in pending.items():
                    for start in range(0, len(rows), self.max_rows):
                        await self._send(shard, rows[start : start + self.max_rows])
        finally:
            self._sending = None

    async def _send(self, shard: int, rows: list[QuoteRow]) -> None:
        now = self.clock()

        def _build(part: list[QuoteRow]) -> QuoteBatch:
            self._count += 1
            return QuoteBatch(
                id=f"{self.batch_id_prefix}:{self._count}", ts_event=part[0].ts_event, ts_init=now,
                source=self.source, quotes=part,
            )  # fmt: skip

        subject = subjects.quote_batch(shard, self.source)
        for batch, data in fitted(rows, _build, self.max_bytes):
            try:
                await self.bus.publish_encoded(subject, batch.id, data)
            except nats.errors.Error as exc:
                # Stale by the time the broker is back: a live feed does not wait for it.
                self.counters.dropped += len(batch.quotes)
                _log.debug("dropped a batch of %d quotes: %s", len(batch.quotes), exc)
                continue
            self.counters.quotes += len(batch.quotes)
            self.counters.batches += 1
            if self.on_sent is not None:
                self.on_sent(batch)
