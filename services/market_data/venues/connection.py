"""Connections to a venue and their supervision: the feed of one venue, from sockets to ticks in a sink.

A ``VenueFeed`` splits its symbols into groups of at most the venue's per-connection limit and keeps one
connection up per group (a *slot*). Each slot, on its own:

- connects and subscribes its symbols, paced under the venue's limit on incoming messages;
- after a drop, reconnects after a back-off that doubles from ``backoff_initial_s`` up to
  ``backoff_max_s``, each delay drawn at random from its upper half (so that connections dropped together
  spread out instead of reconnecting at the same instant), and reset once a connection has lived
  ``backoff_reset_s``;
- pings (WebSocket pings, and the venue's own where it has one) and drops a connection that answers none;
- reconnects, and says so, when the connection has carried no frame for ``stale_connection_s`` or one of
  its symbols no tick (nor per-symbol heartbeat) for ``stale_symbol_s``;
- before the venue's scheduled close (Binance: 24 hours) opens the replacement, and closes the old
  connection once the new one is subscribed: the overlap's repeats are dropped by the normaliser.

Frames from every connection of the venue go, with their receive time, through one queue to one task
that records them (if asked), normalises them and hands the ticks to the sink: one normaliser per venue
sees both connections of a rollover, so what both deliver is published once. A frame over
``max_frame_bytes``, or one the normaliser refuses, is counted and logged, and the feed goes on.

The first connection of a venue that cannot be made at all (a name that does not resolve, a port that
refuses) stops the feed with ``VenueUnreachableError`` naming the host: a misconfigured or offline
machine says so at once. Once a venue was reached, every later failure is retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from picows import WSAutoPingStrategy, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from rrr.market_data.venues.base import MalformedFrameError, Tick, TickSink, Venue
from rrr.market_data.venues.recorder import Recorder
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.errors import RRRError, excerpt

_log = logging.getLogger(__name__)

# Frames waiting for the normaliser: beyond this the newest are dropped and counted (a stalled sink must
# not grow memory without bound).
MAX_PENDING_FRAMES = 200_000
# At most this many lines a minute say why a frame was refused; the counters say how many.
_LOGGED_PER_MINUTE = 20


class VenueUnreachableError(RRRError):
    """The first connection to a venue could not be made."""

    def __init__(self, venue: str, url: str, reason: str) -> None:
        self.venue = venue
        self.host = urlsplit(url).hostname or url
        super().__init__(f"{venue}: cannot reach {self.host} ({excerpt(url)}): {reason}")


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """How a venue feed connects and when it gives up on a connection (see the module's documentation)."""

    url: str
    symbols_per_connection: int
    max_frame_bytes: int = 64 * 1024
    connect_timeout_s: float = 10.0
    ping_interval_s: float = 10.0
    stale_connection_s: float = 30.0
    stale_symbol_s: float = 600.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_s: float = 60.0
    # 0: the venue's own lifetime less ten minutes (never, for a venue without one).
    rollover_after_s: float = 0.0
    # How long a replacement may take to be subscribed before the old connection closes anyway.
    rollover_overlap_max_s: float = 30.0

    def rollover_s(self, venue: Venue) -> float:
        """Age at which a connection is replaced, or 0 for never."""
        if self.rollover_after_s > 0:
            return self.rollover_after_s
        return max(venue.max_connect_lifetime_s - 600.0, 0.0) if venue.max_connect_lifetime_s else 0.0


@dataclass(slots=True)
class FeedHealth:
    """What a venue feed counts; ``values`` names them ``live_<venue>_<what>`` for the heartbeat."""

    venue: str
    connected: int = 0
    frames: int = 0
    ticks: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    gaps: int = 0
    gap_events_missed: int = 0
    malformed: int = 0
    duplicates: int = 0
    stale_connections: int = 0
    stale_symbols: int = 0
    rollovers: int = 0
    venue_errors: int = 0
    dropped_backlog: int = 0
    last_frame_ns: int = 0
    # The largest gap between a tick's venue time and its receive time since the last read.
    lag_max_ns: int = 0

    def values(self, now_ns: int) -> dict[str, int]:
        """Every figure by its heartbeat name; the last frame's age in ms (-1 before any: reported as 0)."""
        prefix = f"live_{self.venue}_"
        figures = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("venue", "last_frame_ns", "lag_max_ns")
        }
        age_ms = (now_ns - self.last_frame_ns) // 1_000_000 if self.last_frame_ns else 0
        figures["last_frame_age_ms"] = max(age_ms, 0)
        figures["lag_max_us"] = max(self.lag_max_ns // 1000, 0)
        self.lag_max_ns = 0
        return {prefix + name: value for name, value in figures.items()}


class Backoff:
    """Delays between reconnects: doubling from ``initial_s`` up to ``max_s``, each drawn from the upper half
    of its range ("equal jitter"), so that it grows and never falls to nothing, yet connections dropped at
    the same instant spread out over half the delay."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"back-off: expected 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        ceiling: float = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a connection that lived long enough)."""
        self.attempt = 0


class StaleWatch:
    """When each key (a symbol) last showed life; those silent for ``timeout_ns`` are stale.

    A key is expected from when it was added, and is reported once until it is seen again.
    """

    def __init__(self, keys: Sequence[str], timeout_ns: int, now_ns: int) -> None:
        self.timeout_ns = timeout_ns
        self._last = dict.fromkeys(keys, now_ns)
        self._reported: set[str] = set()

    def seen(self, key: str, now_ns: int) -> None:
        """``key`` showed life at ``now_ns``."""
        if key in self._last:
            self._last[key] = now_ns
            self._reported.discard(key)

    def restart(self, now_ns: int) -> None:
        """Expect every key afresh from ``now_ns`` (a new connection)."""
        for key in self._last:
            self._last[key] = now_ns
        self._reported.clear()

    def stale(self, now_ns: int) -> list[str]:
        """Keys silent for the timeout and not reported yet, now reported."""
        if self.timeout_ns <= 0:
            return []
        found = [k for k, t in self._last.items() if now_ns - t >= self.timeout_ns and k not in self._reported]
        self._reported.update(found)
        return found


class _Listener(WSListener):
    """picows calls this on the event loop for every frame: it only stamps and queues."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # picows answers pings and takes the pongs of its own pings itself: only what the venue sends of its own
        # accord reaches here, so a venue that answers pings but sends no data still goes stale.
        conn = self.connection
        now = conn.feed.clock()
        conn.last_frame_ns = now
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if not frame.fin:
                conn.fragmented = True  # venues send whole messages; pieces are refused whole
                conn.feed.refuse("a fragmented message")
                return
            if frame.payload_size > conn.feed.settings.max_frame_bytes:
                conn.feed.refuse(f"a frame of {frame.payload_size:,} bytes, over the bound")
                return
            conn.feed.enqueue(now, conn, frame.get_payload_as_bytes())
        elif kind == WSMsgType.CONTINUATION:
            conn.feed.refuse("a fragmented message")
        elif kind == WSMsgType.CLOSE:
            conn.close_reason = f"closed by the venue (code {frame.get_close_code()})"
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.connection.closed.set()


@dataclass(eq=False, slots=True)
class _Connection:
    feed: VenueFeed
    number: int
    symbols: Sequence[str]
    opened_ns: int
    transport: WSTransport | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    last_frame_ns: int = 0
    acks: int = 0
    close_reason: str = ""
    fragmented: bool = False

    def subscribed(self) -> bool:
        return self.acks >= self.feed.venue.expected_acks(self.symbols)

    def close(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if self.transport is not None:
            self.transport.send_close()
            self.transport.disconnect()
        self.closed.set()


class VenueFeed:
    """The live feed of one venue: its connections, their supervision, and its ticks handed to a sink.

    Args:
        venue: The venue.
        symbols: The venue symbols to subscribe, mapped to the system's (this shard's only).
        settings: How to connect and when to give up on a connection.
        sink: Where the ticks go.
        stop: Set to stop; ``run`` then closes every connection and returns.
        clock: Receive times (``ts_init``) and staleness are read from it.
        recorder: Every frame received, with its receive time, is written to it when given.
        rng: The source of the back-off's jitter.
    """

    def __init__(
        self,
        venue: Venue,
        symbols: Mapping[str, str],
        settings: FeedSettings,
        sink: TickSink,
        stop: asyncio.Event,
        *,
        clock: Clock = wall_clock,
        recorder: Recorder | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.symbols = dict(symbols)
        self.settings = settings
        self.sink = sink
        self.stop = stop
        self.clock = clock
        self.recorder = recorder
        self.rng = rng or random.Random()
        self.health = FeedHealth(venue.name)
        self.normaliser = venue.normaliser(self.symbols)
        self.reached = False
        # Every delay a slot waited before reconnecting, for the record (and the tests of the back-off).
        self.delays: list[float] = []
        self._pending: collections.deque[tuple[int, _Connection, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._numbers = itertools.count(1)
        self._requests = itertools.count(1)
        self._next_request_at = 0.0
        self._logged: collections.deque[float] = collections.deque(maxlen=_LOGGED_PER_MINUTE)
        self._watches: dict[_Connection, StaleWatch] = {}

    # -- the frame path ----------------------------------------------------------------------------------

    def enqueue(self, ts_init: int, conn: _Connection, frame: bytes) -> None:
        """Queue a frame for the normaliser (called from the listener, on the loop)."""
        if len(self._pending) >= MAX_PENDING_FRAMES:
            self.health.dropped_backlog += 1
            return
        self._pending.append((ts_init, conn, frame))
        self._wake.set()

    def refuse(self, reason: str, frame: bytes = b"") -> None:
        """Count a frame that was not taken, and say why (at most a few lines a minute)."""
        self.health.malformed += 1
        now = time.monotonic()
        if len(self._logged) < _LOGGED_PER_MINUTE or now - self._logged[0] > 60:
            self._logged.append(now)
            shown = f": {excerpt(frame.decode('utf-8', 'replace'))}" if frame else ""
            _log.warning("%s: refused %s%s", self.venue.name, reason, shown)

    def process(self, frames: Sequence[tuple[int, _Connection | None, bytes]]) -> list[Tick]:
        """Record and normalise ``frames``; their ticks, and the health and liveness they show."""
        health = self.health
        ticks: list[Tick] = []
        for ts_init, conn, frame in frames:
            health.frames += 1
            health.last_frame_ns = max(health.last_frame_ns, ts_init)
            if self.recorder is not None:
                self.recorder.frame(self.venue.name, conn.number if conn else 0, ts_init, frame)
            try:
                decoded = self.normaliser.decode(frame, ts_init)
            except MalformedFrameError as exc:
                self.refuse(exc.reason, frame)
                continue
            health.duplicates += decoded.duplicates
            watch = self._watches.get(conn) if conn is not None else None
            if conn is not None:
                conn.acks += decoded.acks
            if decoded.error:
                health.venue_errors += 1
                _log.error("%s: the venue says: %s", self.venue.name, excerpt(decoded.error, 200, quoted=False))
            for gap in decoded.gaps:
                health.gaps += 1
                health.gap_events_missed += gap.missed
                _log.warning(
                    "%s: %s %s %d to %d missed (%d)",
                    self.venue.name,
                    gap.symbol,
                    gap.what,
                    gap.first,
                    gap.last,
                    gap.missed,
                )
            for tick in decoded.ticks:
                if tick.ts_event != ts_init:
                    health.lag_max_ns = max(health.lag_max_ns, ts_init - tick.ts_event)
                if watch is not None:
                    watch.seen(tick.symbol, ts_init)
            if watch is not None:
                for symbol in decoded.alive:
                    watch.seen(symbol, ts_init)
            ticks.extend(decoded.ticks)
        health.ticks += len(ticks)
        return ticks

    async def _consume(self) -> None:
        while True:
            if not self._pending:
                if self.stop.is_set():
                    return
                self._wake.clear()
                await _first(self._wake.wait(), self.stop.wait())
                continue
            # One burst: whatever arrived since the last one, bounded so the loop stays responsive.
            burst = [self._pending.popleft() for _ in range(min(len(self._pending), 4096))]
            ticks = self.process(burst)
            if ticks:
                await self.sink.put(ticks)
            if self.recorder is not None:
                await self.recorder.flush()

    # -- connections -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect every slot and feed the sink until ``stop`` is set."""
        names = list(self.symbols)
        size = self.settings.symbols_per_connection
        groups = [names[i : i + size] for i in range(0, len(names), size)]
        _log.info(
            "%s: %d symbols over %d connections to %s", self.venue.name, len(names), len(groups), self.settings.url
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                consumer = tasks.create_task(self._consume())
                slots = [tasks.create_task(self._slot(group)) for group in groups]
                await asyncio.gather(*slots)
                self._wake.set()
                await consumer
        finally:
            if self.recorder is not None:
                await self.recorder.flush()

    async def _paced(self) -> None:
        """Wait for this venue's next request slot (connects and subscribe messages alike)."""
        gap = 1.0 / self.venue.subscribe_messages_per_s
        now = time.monotonic()
        at = max(now, self._next_request_at)
        self._next_request_at = at + gap
        if at > now:
            # Pacing under the venue's rate limit, not synchronisation.
            await _first(asyncio.sleep(at - now), self.stop.wait())

    async def _open(self, symbols: Sequence[str], watch: StaleWatch) -> _Connection:
        """Connect and send the subscriptions; the venue's acknowledgements arrive as frames.

        ``watch`` is the slot's record of its symbols' liveness, which every connection of the slot feeds.
        """
        conn = _Connection(self, next(self._numbers), symbols, self.clock())
        settings = self.settings
        await self._paced()
        try:
            transport, _ = await asyncio.wait_for(
                ws_connect(
                    lambda: _Listener(conn),
                    settings.url,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=settings.ping_interval_s,
                    auto_ping_reply_timeout=settings.ping_interval_s,
                    auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                    max_frame_size=max(settings.max_frame_bytes * 4, 1 << 20),
                    websocket_handshake_timeout=settings.connect_timeout_s,
                    logger_name=f"venue.{self.venue.name}",
                ),
                timeout=settings.connect_timeout_s,
            )
        except (OSError, WSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not self.reached:
                raise VenueUnreachableError(self.venue.name, settings.url, reason) from None
            raise _ConnectFailedError(reason) from None
        conn.transport = transport
        conn.last_frame_ns = self.clock()
        self.reached = True
        self.health.connected += 1
        self._watches[conn] = watch
        for message in self.venue.subscribe(symbols, next(self._requests)):
            await self._paced()
            if conn.closed.is_set():
                break
            transport.send(WSMsgType.TEXT, message)
        return conn

    def _forget(self, conn: _Connection) -> None:
        if self._watches.pop(conn, None) is not None:
            self.health.connected -= 1

    async def _slot(self, symbols: Sequence[str]) -> None:
        settings = self.settings
        backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, self.rng)
        # One liveness record per slot: both connections of a rollover feed it.
        watch = StaleWatch([self.symbols[s] for s in symbols], int(settings.stale_symbol_s * 1e9), self.clock())
        conn: _Connection | None = None
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = await self._open(symbols, watch)
                except _ConnectFailedError as exc:
                    self.health.connect_failures += 1
                    delay = backoff.next_delay()
                    self.delays.append(delay)
                    _log.warning("%s: connecting failed (%s); again in %.2f s", self.venue.name, exc, delay)
                    await _first(asyncio.sleep(delay), self.stop.wait())  # back-off, not synchronisation
                    continue
                watch.restart(self.clock())
            conn = await self._supervise(conn, symbols, backoff)
        if conn is not None:
            conn.close("stopping")
            self._forget(conn)

    async def _supervise(self, conn: _Connection, symbols: Sequence[str], backoff: Backoff) -> _Connection | None:
        """Watch ``conn`` until it must go; return its replacement (a rollover) or None (reconnect)."""
        settings = self.settings
        venue = self.venue
        rollover_ns = int(settings.rollover_s(venue) * 1e9)
        period = max(min(settings.stale_connection_s / 4, settings.ping_interval_s / 2, 1.0), 0.01)
        next_ping = time.monotonic() + settings.ping_interval_s
        watch = self._watches[conn]
        while not self.stop.is_set():
            # A periodic check, woken early by a close or a stop.
            await _first(asyncio.sleep(period), conn.closed.wait(), self.stop.wait())
            if self.stop.is_set():
                return conn
            now = self.clock()
            reason = conn.close_reason or ("closed" if conn.closed.is_set() else "")
            if not reason and now - conn.last_frame_ns >= settings.stale_connection_s * 1e9:
                self.health.stale_connections += 1
                reason = f"stale: no frame for {settings.stale_connection_s:g} s"
            if not reason:
                silent = watch.stale(now)
                if silent:
                    self.health.stale_symbols += len(silent)
                    shown = ", ".join(silent[:10]) + (f" and {len(silent) - 10} more" if len(silent) > 10 else "")
                    reason = f"stale: no data for {settings.stale_symbol_s:g} s of {shown}"
            if reason:
                lived_s = (now - conn.opened_ns) / 1e9
                conn.close(reason)
                self._forget(conn)
                self.health.reconnects += 1
                if lived_s >= settings.backoff_reset_s:
                    backoff.reset()
                delay = backoff.next_delay()
                self.delays.append(delay)
                _log.warning("%s: connection %d %s; reconnecting in %.2f s", venue.name, conn.number, reason, delay)
                await _first(asyncio.sleep(delay), self.stop.wait())  # back-off, not synchronisation
                return None
            if venue.app_ping is not None and time.monotonic() >= next_ping and conn.transport is not None:
                next_ping = time.monotonic() + settings.ping_interval_s
                conn.transport.send(WSMsgType.TEXT, venue.app_ping(next(self._requests)))
            if rollover_ns and now - conn.opened_ns >= rollover_ns:
                return await self._rollover(conn, symbols)
        return conn

    async def _rollover(self, old: _Connection, symbols: Sequence[str]) -> _Connection | None:
        """Open the replacement of ``old`` and close ``old`` once the new one is subscribed."""
        try:
            new = await self._open(symbols, self._watches[old])
        except _ConnectFailedError as exc:
            _log.warning("%s: rollover of connection %d failed (%s); keeping it", self.venue.name, old.number, exc)
            old.opened_ns = self.clock()  # try again after another lifetime (or when the venue closes it)
            return old
        deadline = time.monotonic() + self.settings.rollover_overlap_max_s
        # Waiting for the venue's acknowledgements, checked periodically and bounded by a deadline.
        while not (new.subscribed() or new.closed.is_set() or self.stop.is_set()) and time.monotonic() < deadline:
            await _first(asyncio.sleep(0.05), new.closed.wait(), self.stop.wait())
        old.close("replaced before the venue's scheduled close")
        self._forget(old)
        self.health.rollovers += 1
        _log.info("%s: connection %d replaced by %d", self.venue.name, old.number, new.number)
        return new


class _ConnectFailedError(RRRError):
    """A reconnect failed; the slot backs off and tries again."""


async def _first(*waits: Awaitable[object]) -> None:
    """Wait for the first of ``waits`` to finish, cancelling the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
