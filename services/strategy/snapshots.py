"""Strategy state snapshots, tagged with the quote stream's sequence they cover (see rrr.shared.bus.snapshots).

A restarted strategy loads its snapshot and consumes the quote stream from the sequence after it, so it
continues exactly where the snapshot left off. Quotes processed after the snapshot but before a crash are
processed again; the orders and signals they yield carry the same ids as the first time, so the streams
and the database drop them as duplicates.

Snapshots are saved in chunks on RRR_SNAPSHOTS, so they may be of any size. A snapshot of the key-value
bucket RRR_STRATEGY_STATE (one entry, at most 1 MiB, what earlier versions saved) is still read when there
is no newer one, and deleted once a newer one is saved: the move is one way.

Snapshots are ``strategy_snapshot.v4``: every strategy of the instance (rrr.strategy.engine), each with
its id, how it was named, its parameters, its own state (what its ``snapshot`` returned), its position per
symbol, open orders (as their events say they are), lockstep progress, timers and whether it was stopped; and
per symbol the watermark, the latest quote and where it is in the stream. ``strategy_snapshot.v3`` (whose open
orders were the orders awaiting an outcome) is still read as it is; ``strategy_snapshot.v2`` (one
``sma_cross``: each symbol's window in fixed-point integers with its places) and ``strategy_snapshot.v1`` (the
window as Decimal sums) are still read, and converted exactly into the state of the ``sma_cross`` strategy of the
same name and parameters; an earlier version refuses a newer
snapshot rather than misreading it. ``encode`` and ``decode`` are the v2 format's, kept for that reading.
"""

from __future__ import annotations

import decimal
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

import msgspec
import nats.errors
import nats.js.errors

from rrr.shared.bus import Bus
from rrr.shared.errors import RRRError
from rrr.shared.messages import QuoteRow
from rrr.shared.watermark import Watermark
from rrr.strategy.engine import Engine, RunnerState, describe, encode_params
from rrr.strategy.sma_cross import SmaCross, SmaCrossParams, SmaCrossState

# The key-value bucket of earlier versions: read, never written.
LEGACY_BUCKET = "RRR_STRATEGY_STATE"
# Converts a v1 window to units: wide enough for any v1 sum, and trapping rather than rounding.
_V1_CONTEXT = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation])
_log = logging.getLogger(__name__)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_snapshot.v2"):
    """The state of every symbol of one strategy instance after stream sequence ``seq``."""

    seq: int
    strategy: str
    fast: int
    slow: int
    qty: Decimal
    books: dict[str, SmaCrossState]
    watermarks: dict[str, Watermark]


class SnapshotV3(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_snapshot.v3"):
    """Every strategy of one instance after stream sequence ``seq``, and per symbol what the engine holds (read,
    no longer written: its closed-loop strategies' open orders are the orders awaiting an outcome)."""

    seq: int
    strategies: list[RunnerState]
    watermarks: dict[str, Watermark]
    latest: dict[str, QuoteRow] = {}
    # The order-event stream's sequence covered (rrr.strategy.outcomes): the events after it are read again.
    event_seq: int = 0


class SnapshotV4(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_snapshot.v4"):
    """As v3, with each closed-loop strategy's open orders as their events say they are and its lockstep
    progress (``RunnerState.orders``, ``marker``, ``through``), and where each symbol's latest quote is in the
    market-data stream (``latest_at``)."""

    seq: int
    strategies: list[RunnerState]
    watermarks: dict[str, Watermark]
    latest: dict[str, QuoteRow] = {}
    event_seq: int = 0
    latest_at: dict[str, tuple[int, int]] = {}


class SmaCrossStateV1(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A symbol's state as ``strategy_snapshot.v1`` holds it: the window as Decimal sums ``bid + ask``."""

    window: list[Decimal]
    prev_relation: int | None
    target: Decimal
    quotes_seen: int

    def upgrade(self) -> SmaCrossState:
        """The same state with the window in units of 10**-places, places being the most it needs."""
        exponents = [value.as_tuple().exponent for value in self.window]
        places = max([0] + [-exponent for exponent in exponents if isinstance(exponent, int)])
        # v1's sums have at most 28 places and 19 digits before the point (its wire's bounds): at most 47
        # digits, exact at 100. A value that is no finite number fails int(): the load stops, loudly.
        window: list[int | str] = [int(_V1_CONTEXT.scaleb(value, places)) for value in self.window]
        return SmaCrossState(
            window=window,
            places=places,
            prev_relation=self.prev_relation,
            target=self.target,
            quotes_seen=self.quotes_seen,
        )


class SnapshotV1(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_snapshot.v1"):
    """What earlier versions saved (read, never written)."""

    seq: int
    strategy: str
    fast: int
    slow: int
    qty: Decimal
    books: dict[str, SmaCrossStateV1]
    # Added in a later version of v1, so last and with a default: an older snapshot decodes with none.
    watermarks: dict[str, Watermark] = {}

    def upgrade(self) -> Snapshot:
        """The same snapshot as v2, exactly."""
        return Snapshot(
            seq=self.seq,
            strategy=self.strategy,
            fast=self.fast,
            slow=self.slow,
            qty=self.qty,
            books={symbol: state.upgrade() for symbol, state in self.books.items()},
            watermarks=self.watermarks,
        )


class SnapshotMismatchError(RRRError):
    """The stored snapshot was taken with other parameters than the service now has."""

    def __init__(self, name: str, stored: str, configured: str) -> None:
        super().__init__(
            f"snapshot {name} was taken with {stored}, but this strategy runs with {configured}; "
            f"start it with the same parameters, or delete the snapshot to start over from the stream's start"
        )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SnapshotV4 | SnapshotV3 | Snapshot | SnapshotV1)


def name(strategy: str, shard: int, shards: int) -> str:
    """Snapshot name of one strategy instance (a change of shard count is a different name)."""
    return f"strategy-{strategy}-s{shard}-of-{shards}"


def legacy_key(strategy: str, shard: int, shards: int) -> str:
    """Key of the same instance in the key-value bucket of earlier versions."""
    return f"{strategy}.s{shard}-of-{shards}"


Books = dict[str, SmaCross]
Watermarks = dict[str, Watermark]


class Covered(NamedTuple):
    """Where a snapshot leaves off: the last quote-stream and order-event-stream sequences it covers."""

    seq: int = 0
    event_seq: int = 0


async def load(bus: Bus, name_: str, legacy_key_: str, engine: Engine) -> Covered:
    """Restore ``engine`` from the snapshot; return the stream sequences it covers (0 when there is none).

    Raises:
        SnapshotMismatchError: a configured strategy's stored state was taken with another strategy or
            other parameters.
        SnapshotCorruptError: the snapshot's chunks do not add up.
    """
    data = await bus.load_snapshot(name_)
    where = name_
    if data is None:
        data = await _load_legacy(bus, legacy_key_)
        where = f"{LEGACY_BUCKET}/{legacy_key_}"
    if not data:
        return Covered()
    snapshot = decode_any(data)
    if isinstance(snapshot, Snapshot):
        snapshot = _upgrade_sma_cross(snapshot, engine, where)
    for saved in snapshot.strategies:
        if saved.id not in {runner.spec.id for runner in engine.runners}:
            continue
        spec = engine.runner(saved.id).spec
        configured = encode_params(spec.params)
        if saved.ref != spec.ref or bytes(saved.params) != configured:
            raise SnapshotMismatchError(
                where,
                f"{saved.id}: {describe(saved.ref, bytes(saved.params))}",
                f"{spec.id}: {describe(spec.ref, configured)}",
            )
    dropped = engine.restore(snapshot.strategies)
    if dropped:
        _log.warning("snapshot %s holds strategies no longer configured, their state dropped: %s", where, dropped)
    new = sorted({runner.spec.id for runner in engine.runners} - {saved.id for saved in snapshot.strategies})
    if new:
        _log.info("strategies new to snapshot %s start from its sequence %d, empty: %s", where, snapshot.seq, new)
    # In place: every strategy's context reads the engine's latest quotes.
    engine.watermarks.update(snapshot.watermarks)
    engine.latest.update(snapshot.latest)
    if isinstance(snapshot, SnapshotV4):
        engine.latest_at.update(snapshot.latest_at)
    _log.info(
        "restored %d strategies and %d symbols from snapshot %s at stream sequence %d",
        len(snapshot.strategies) - len(dropped),
        len(engine.watermarks),
        where,
        snapshot.seq,
    )
    return Covered(snapshot.seq, snapshot.event_seq)


def _upgrade_sma_cross(snapshot: Snapshot, engine: Engine, where: str) -> SnapshotV3:
    """A v1/v2 snapshot (one ``sma_cross``) as v3, for the configured strategy of its name.

    Raises:
        SnapshotMismatchError: no configured strategy of that id is ``sma_cross`` with the same parameters.
    """
    stored = f"{snapshot.strategy} fast={snapshot.fast} slow={snapshot.slow} qty={snapshot.qty}"
    runner = next((r for r in engine.runners if r.spec.id == snapshot.strategy), None)
    params = runner.spec.params if runner is not None else None
    if runner is None or runner.spec.ref != "sma_cross" or not isinstance(params, SmaCrossParams):
        configured = ", ".join(f"{r.spec.id} ({r.spec.ref})" for r in engine.runners)
        raise SnapshotMismatchError(where, stored, configured)
    configured = f"{runner.spec.id} fast={params.fast} slow={params.slow} qty={params.qty}"
    if stored != configured:
        raise SnapshotMismatchError(where, stored, configured)
    # A snapshot from before watermarks has none: every symbol gets an empty one, so that the watermarks
    # hold every symbol the strategy knows (the symbol cap counts them).
    watermarks = {symbol: Watermark() for symbol in snapshot.books}
    watermarks.update(snapshot.watermarks)
    state = RunnerState(
        id=snapshot.strategy,
        ref="sma_cross",
        params=msgspec.Raw(encode_params(params)),
        state=msgspec.Raw(_encoder.encode(snapshot.books)),
    )
    return SnapshotV3(seq=snapshot.seq, strategies=[state], watermarks=watermarks)


def decode_any(data: bytes) -> SnapshotV4 | SnapshotV3 | Snapshot:
    """The snapshot ``data`` holds: v4 and v3 as they are, v1 converted to v2 exactly."""
    snapshot = _decoder.decode(data)
    return snapshot.upgrade() if isinstance(snapshot, SnapshotV1) else snapshot


def decode(data: bytes) -> Snapshot:
    """The v1 or v2 snapshot ``data`` holds, as v2 (v1 converted exactly)."""
    snapshot = decode_any(data)
    if isinstance(snapshot, SnapshotV4 | SnapshotV3):
        raise msgspec.ValidationError("a strategy_snapshot.v3 or v4, not the single sma_cross of v1 or v2")
    return snapshot


def encode_engine(seq: int, engine: Engine, event_seq: int = 0) -> bytes:
    """The v4 snapshot of ``engine`` as covering every quote up to stream sequence ``seq`` and every order
    event up to ``event_seq``."""
    snapshot = SnapshotV4(
        seq=seq, strategies=engine.state(), watermarks=engine.watermarks, latest=engine.latest, event_seq=event_seq,
        latest_at=engine.latest_at,
    )  # fmt: skip
    return _encoder.encode(snapshot)


async def _load_legacy(bus: Bus, key_: str) -> bytes | None:
    try:
        bucket = await bus.js.key_value(LEGACY_BUCKET)
        entry = await bucket.get(key_)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return None
    return entry.value


def encode(seq: int, strategy: str, params: SmaCrossParams, books: Books, watermarks: Watermarks) -> bytes:
    """The v2 snapshot of one ``sma_cross``'s books (the format of the previous version, still read)."""
    snapshot = Snapshot(
        seq=seq,
        strategy=strategy,
        fast=params.fast,
        slow=params.slow,
        qty=params.qty,
        books={symbol: book.state() for symbol, book in books.items()},
        watermarks=watermarks,
    )
    return _encoder.encode(snapshot)


class Saver:
    """Saves a strategy's snapshot at most every ``every_s`` seconds, and once more when it stops."""

    def __init__(self, bus: Bus, name_: str, legacy_key_: str, every_s: float) -> None:
        self._bus = bus
        self._name = name_
        self._legacy_key: str | None = legacy_key_
        self._every_s = every_s
        self._saved_seq = -1
        self._saved_at = time.monotonic()
        # Saves that failed (a full stream, an outage): the previous snapshot stayed the current one.
        self.failures = 0

    async def maybe_save(self, seq: int, encode_: Callable[[], bytes]) -> bool:
        """Save if the last save is older than the period and something changed; True if it saved.

        ``encode_`` gives the snapshot's bytes: called only when a save is due.
        """
        if seq == self._saved_seq or time.monotonic() - self._saved_at < self._every_s:
            return False
        return await self.save(seq, encode_)

    async def save(self, seq: int, encode_: Callable[[], bytes]) -> bool:
        """Save now. A failure is logged, not raised: the previous snapshot stays valid, only older."""
        if seq == self._saved_seq:
            return False
        try:
            await self._bus.save_snapshot(self._name, encode_())
        except (nats.errors.Error, TimeoutError) as exc:
            self.failures += 1
            _log.warning("could not save snapshot %s at sequence %d: %s", self._name, seq, exc)
            return False
        self._saved_seq, self._saved_at = seq, time.monotonic()
        if self._legacy_key is not None:
            await self._drop_legacy(self._legacy_key)
        return True

    async def _drop_legacy(self, key_: str) -> None:
        try:
            bucket = await self._bus.js.key_value(LEGACY_BUCKET)
            await bucket.purge(key_)
        except nats.js.errors.BucketNotFoundError:
            pass
        except (nats.errors.Error, TimeoutError) as exc:
            _log.warning(
                "could not delete the older snapshot %s/%s (tried again at the next save): %s", LEGACY_BUCKET, key_, exc
            )
            return
        self._legacy_key = None
