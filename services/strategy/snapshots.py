"""Strategy state snapshots in a JetStream key-value bucket, tagged with the stream sequence they cover.

A restarted strategy loads its snapshot and consumes the quote stream from the sequence after it, so it
continues exactly where the snapshot left off. Quotes processed after the snapshot but before a crash are
processed again; the orders and signals they yield carry the same ids as the first time, so the streams
and the database drop them as duplicates.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from rrr.shared.bus import Bus
from rrr.shared.errors import RRRError
from rrr.shared.watermark import Watermark
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams, SmaCrossState

BUCKET = "RRR_STRATEGY_STATE"
_log = logging.getLogger(__name__)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_snapshot.v1"):
    """The state of every symbol of one strategy instance after stream sequence ``seq``."""

    seq: int
    strategy: str
    fast: int
    slow: int
    qty: Decimal
    books: dict[str, SmaCrossState]
    # Added in a later version, so last and with a default: an older snapshot decodes with none.
    watermarks: dict[str, Watermark] = {}


class SnapshotMismatchError(RRRError):
    """The stored snapshot was taken with other parameters than the service now has."""

    def __init__(self, key: str, stored: str, configured: str) -> None:
        super().__init__(
            f"snapshot {BUCKET}/{key} was taken with {stored}, but this strategy runs with {configured}; "
            f"start it with the same parameters, or delete the snapshot to start over from the stream's start"
        )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def key(strategy: str, shard: int, shards: int) -> str:
    """Bucket key of one strategy instance (a change of shard count is a different key)."""
    return f"{strategy}.s{shard}-of-{shards}"


async def open_bucket(bus: Bus) -> KeyValue:
    """The snapshot bucket, created on first use (file storage, one revision per key)."""
    try:
        return await bus.js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await bus.js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE))


Books = dict[str, SmaCross]
Watermarks = dict[str, Watermark]


async def load(bucket: KeyValue, key_: str, name: str, params: SmaCrossParams) -> tuple[int, Books, Watermarks]:
    """The last stream sequence the snapshot covers, its books and watermarks; (0, {}, {}) when there is none.

    Raises:
        SnapshotMismatchError: the snapshot was taken with other parameters.
    """
    try:
        entry = await bucket.get(key_)
    except nats.js.errors.KeyNotFoundError:
        return 0, {}, {}
    if not entry.value:
        return 0, {}, {}
    snapshot = _decoder.decode(entry.value)
    stored = f"{snapshot.strategy} fast={snapshot.fast} slow={snapshot.slow} qty={snapshot.qty}"
    configured = f"{name} fast={params.fast} slow={params.slow} qty={params.qty}"
    if stored != configured:
        raise SnapshotMismatchError(key_, stored, configured)
    books = {symbol: SmaCross.from_state(params, state) for symbol, state in snapshot.books.items()}
    _log.info("restored %d symbols from snapshot %s at stream sequence %d", len(books), key_, snapshot.seq)
    return snapshot.seq, books, dict(snapshot.watermarks)


async def save(
    bucket: KeyValue, key_: str, seq: int, name: str, params: SmaCrossParams, books: Books, watermarks: Watermarks
) -> None:
    """Store the books as covering every quote up to stream sequence ``seq``."""
    snapshot = Snapshot(
        seq=seq,
        strategy=name,
        fast=params.fast,
        slow=params.slow,
        qty=params.qty,
        books={symbol: book.state() for symbol, book in books.items()},
        watermarks=watermarks,
    )
    await bucket.put(key_, _encoder.encode(snapshot))


class Saver:
    """Saves a strategy's snapshot at most every ``every_s`` seconds, and once more when it stops."""

    def __init__(self, bucket: KeyValue, key_: str, every_s: float) -> None:
        self._bucket = bucket
        self._key = key_
        self._every_s = every_s
        self._saved_seq = -1
        self._saved_at = time.monotonic()

    async def maybe_save(
        self, seq: int, name: str, params: SmaCrossParams, books: Books, watermarks: Watermarks
    ) -> bool:
        """Save if the last save is older than the period and something changed; True if it saved."""
        if seq == self._saved_seq or time.monotonic() - self._saved_at < self._every_s:
            return False
        return await self.save(seq, name, params, books, watermarks)

    async def save(self, seq: int, name: str, params: SmaCrossParams, books: Books, watermarks: Watermarks) -> bool:
        """Save now. A failure is logged, not raised: the previous snapshot stays valid, only older."""
        if seq == self._saved_seq:
            return False
        try:
            await save(self._bucket, self._key, seq, name, params, books, watermarks)
        except (nats.errors.Error, TimeoutError) as exc:
            _log.warning("could not save snapshot %s at sequence %d: %s", self._key, seq, exc)
            return False
        self._saved_seq, self._saved_at = seq, time.monotonic()
        return True
