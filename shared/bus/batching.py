"""Natural batching of quotes: one message per shard for every quote made while the last batch was unacknowledged.

A feed hands each quote to ``QuoteBatcher.add`` and goes on. The first quote after a quiet spell is sent
on the next turn of the event loop, alone: a low rate keeps the lowest latency. Quotes that arrive while
a batch is in flight, from its publish until the market-data stream acknowledges it, wait, and go out
together, one ``QuoteBatch`` per shard, as soon as the acknowledgement comes: a high rate, or a busy
broker, gets large batches and far fewer messages, so the batches grow with the load of the whole
system rather than with the feed's own pace. Nothing waits on a timer.

A live feed cannot wait for a broker that is away: a batch the stream refuses, or that no stream takes, is
dropped and counted, as single live ticks are; one unacknowledged within ``ack_timeout_s`` is counted as
unconfirmed (it may be stored) and the next goes out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.js.api import PubAck

from rrr.shared import subjects
from rrr.shared.bus.outgoing import Outgoing
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
    """What a batcher did: quotes and batches stored (acknowledged), quotes dropped (refused, no stream, the
    broker away) and quotes whose batch went unacknowledged (stored or not)."""

    quotes: int = 0
    batches: int = 0
    dropped: int = 0
    unconfirmed: int = 0


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
    # Called with every batch once the stream acknowledged it (the latest-quote cache, say).
    on_sent: Callable[[QuoteBatch], None] | None = None
    # The longest wait for a batch's acknowledgement before the next batch goes out.
    ack_timeout_s: float = 2.0
    _pending: dict[int, list[QuoteRow]] = field(default_factory=dict)
    _sending: asyncio.Task[None] | None = None
    _count: int = 0
    # Batches published and not acknowledged yet.
    in_flight: int = 0

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
                batches: list[QuoteBatch] = []
                outgoing: list[Outgoing] = []
                for shard, rows in pending.items():
                    for start in range(0, len(rows), self.max_rows):
                        for batch, item in self._batches(shard, rows[start : start + self.max_rows]):
                            batches.append(batch)
                            outgoing.append(item)
                self.in_flight = len(outgoing)
                try:
                    results = await self.bus.publish_acked(outgoing, self.ack_timeout_s)
                finally:
                    self.in_flight = 0
                for batch, result in zip(batches, results, strict=True):
                    self._count_result(batch, result)
        finally:
            self._sending = None

    def _batches(self, shard: int, rows: list[QuoteRow]) -> list[tuple[QuoteBatch, Outgoing]]:
        now = self.clock()

        def _build(part: list[QuoteRow]) -> QuoteBatch:
            self._count += 1
            return QuoteBatch(
                id=f"{self.batch_id_prefix}:{self._count}", ts_event=part[0].ts_event, ts_init=now,
                source=self.source, quotes=part,
            )  # fmt: skip

        subject = subjects.quote_batch(shard, self.source)
        return [
            (batch, self.bus.prepare_encoded(subject, batch.id, data))
            for batch, data in fitted(rows, _build, self.max_bytes)
        ]

    def _count_result(self, batch: QuoteBatch, result: PubAck | BaseException) -> None:
        if isinstance(result, TimeoutError):
            self.counters.unconfirmed += len(batch.quotes)
            _log.debug("no acknowledgement of a batch of %d quotes within %s s", len(batch.quotes), self.ack_timeout_s)
            return
        if isinstance(result, BaseException):
            # Refused, or no stream takes it, or the broker is away: stale by the time it could be sent again.
            self.counters.dropped += len(batch.quotes)
            _log.debug("dropped a batch of %d quotes: %s", len(batch.quotes), result)
            return
        self.counters.quotes += len(batch.quotes)
        self.counters.batches += 1
        if self.on_sent is not None:
            self.on_sent(batch)
