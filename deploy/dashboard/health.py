"""What the dashboard reads from NATS: each instance's health, its feeds, throughput and handler times.

Two sources, both there already for other readers. The heartbeats (``ctl.heartbeat.>``, one a second from
every instance) carry each instance's status and counters: the rates of quotes, orders and rows are the
changes of those counters from one heartbeat to the next, and a live feed's
health is its ``live_<venue>_*`` counters. NATS service discovery (``$SRV.STATS``, asked once a second on one
inbox) gives each consumer's messages, handler time, pending messages and lag, whatever service runs it.

Everything held is bounded: at most ``MAX_INSTANCES`` instances (those not heard of for ``FORGET_S`` are
forgotten), the throughput's last ``HISTORY`` samples, and what a message may hold is checked on decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.msg import Msg

from rrr.deploy.dashboard.board import Board
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.discovery import Stats
from rrr.shared.messages import Heartbeat, heartbeat_decoder

__all__ = ["FeedLine", "Health", "HealthWatch", "InstanceLine", "Throughput"]

_log = logging.getLogger("rrr.ui.health")

MAX_INSTANCES = 128
FORGET_S = 120.0
# Throughput samples kept: one a second, five minutes.
HISTORY = 300
# An instance whose heartbeat is this many periods late (and at least STALE_MIN_S) is shown as stale.
_STALE_PERIODS = 3
_STALE_MIN_S = 3.0
_TEXT_MAX = 64
_LIVE = re.compile(r"live_([a-z0-9]{1,32})_([a-z_]{1,32})")
# What the throughput chart draws: a name, and the counters of one service whose changes add up to it.
SERIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("quotes in/s", "strategy", ("quotes",)),
    ("orders/s", "execution", ("orders_filled", "orders_rejected")),
    ("rows stored/s", "persistence", ("rows_quotes", "rows_trades", "rows_signals", "rows_orders", "rows_fills")),
)
_stats_decoder = msgspec.json.Decoder(Stats)


class InstanceLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One service instance: its health by heartbeat, its consumers by discovery."""

    instance: str
    service: str
    shard: int
    status: str  # ok, starting, stopping, stale
    beat_age_s: float | None
    messages_per_s: float | None
    handler_ms: float | None  # handler time per batch since the last STATS answer
    pending: int | None
    lag_s: float | None


class FeedLine(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One live venue feed of one market-data instance."""

    instance: str
    venue: str
    connected: int
    last_frame_age_ms: int
    ticks_per_s: float | None
    reconnects: int
    gaps: int
    malformed: int


class Throughput(msgspec.Struct, frozen=True, kw_only=True):
    """The rates of the last minutes, one sample a second (wall time, seconds)."""

    ts: list[float]
    names: list[str]
    values: list[list[float]]


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The system as NATS shows it."""

    nats: str  # connected, connecting, or what went wrong
    instances: list[InstanceLine]
    feeds: list[FeedLine]
    forgotten: int
    malformed: int


@dataclass(slots=True)
class _Instance:
    beat: Heartbeat
    heard: float  # monotonic time of its last heartbeat
    period_s: float | None = None
    rates: dict[str, float] = field(default_factory=dict)
    stats: Stats | None = None
    stats_heard: float = 0.0
    messages_per_s: float | None = None
    handler_ms: float | None = None
    # What its counters grew by since the last throughput sample, restarts included.
    grown: dict[str, int] = field(default_factory=dict)


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "..."


class HealthWatch:
    """Listens to heartbeats and asks for STATS, until stopped; puts ``health`` and ``throughput`` on the board."""

    def __init__(
        self,
        url: str,
        board: Board,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ) -> None:
        self._url = url
        self._board = board
        self._clock = clock
        self._wall_clock = wall_clock
        self._tick_s = tick_s
        self._instances: dict[str, _Instance] = {}
        self._nats = "connecting"
        self.bus: Bus | None = None
        self.forgotten = 0
        self.malformed = 0
        self._ts: deque[float] = deque(maxlen=HISTORY)
        self._values: list[deque[float]] = [deque(maxlen=HISTORY) for _ in SERIES]

    async def run(self, stop: asyncio.Event, connected: asyncio.Event | None = None) -> None:
        """Connect (waiting for NATS as long as it takes), listen and ask, until ``stop`` is set."""
        self._publish()
        connecting = asyncio.ensure_future(Bus.connect(self._url, service="ui", name="rrr-ui"))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((connecting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            return
        try:
            self.bus = connecting.result()
        except Exception as exc:  # refused credentials, a bad URL: shown on the page, the page stays up
            self._nats = _cut(f"{type(exc).__name__}: {exc}")
            _log.error("NATS: %s", exc)
            self._publish()
            return
        try:
            nc = self.bus.nc
            self._nats = "connected"
            await nc.subscribe(
                subjects.HEARTBEAT_ALL, cb=self._on_heartbeat, pending_msgs_limit=4096, pending_bytes_limit=2**22
            )
            inbox = nc.new_inbox()
            await nc.subscribe(inbox, cb=self._on_stats, pending_msgs_limit=1024, pending_bytes_limit=2**23)
            if connected is not None:
                connected.set()
            while not stop.is_set():
                if nc.is_connected:
                    self._nats = "connected"
                    await nc.publish(subjects.discovery("STATS"), b"", reply=inbox)
                else:
                    self._nats = "reconnecting"
                self._sample()
                self._publish()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._tick_s)
        finally:
            await self.bus.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = heartbeat_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        now = self._clock()
        held = self._instances.get(beat.instance)
        if held is None:
            if len(self._instances) >= MAX_INSTANCES:
                self.forgotten += 1
                return
            self._instances[beat.instance] = _Instance(beat, now)
            return
        # By the time of arrival: a service stamps its heartbeats with its own clock, which runs on event time
        # during a replay.
        elapsed_s = now - held.heard
        if elapsed_s > 0:
            held.period_s = elapsed_s
            for name, value in beat.counters.items():
                before = held.beat.counters.get(name, 0)
                # A counter that went down belongs to a restarted process, which counted from 0 again.
                grown = value - before if value >= before else value
                held.grown[name] = held.grown.get(name, 0) + grown
                held.rates[name] = grown / elapsed_s
        held.beat, held.heard = beat, now

    async def _on_stats(self, msg: Msg) -> None:
        try:
            stats = _stats_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1
            return
        held = self._instances.get(stats.metadata.get("instance", ""))
        if held is None:
            return  # not (yet) heard of by heartbeat: only instances of the system are shown
        now = self._clock()
        previous, elapsed_s = held.stats, now - held.stats_heard
        if previous is not None and previous.id == stats.id and elapsed_s > 0:
            messages = sum(e.num_requests for e in stats.endpoints) - sum(e.num_requests for e in previous.endpoints)
            handled_ns = sum(e.processing_time for e in stats.endpoints) - sum(
                e.processing_time for e in previous.endpoints
            )
            batches = sum(_int(e.data.get("batches")) for e in stats.endpoints) - sum(
                _int(e.data.get("batches")) for e in previous.endpoints
            )
            held.messages_per_s = max(messages, 0) / elapsed_s
            if batches > 0:
                held.handler_ms = handled_ns / batches / 1e6
        held.stats, held.stats_heard = stats, now

    def _sample(self) -> None:
        """Forget the long gone; add a throughput sample from the newest rates of the instances alive."""
        now = self._clock()
        for name in [n for n, i in self._instances.items() if now - i.heard > FORGET_S]:
            del self._instances[name]
        alive = [i for i in self._instances.values() if not self._stale(i, now)]
        self._ts.append(self._wall_clock())
        for values, (_, service, counters) in zip(self._values, SERIES, strict=True):
            values.append(sum(i.rates.get(c, 0.0) for i in alive if i.beat.service == service for c in counters))

    def _stale(self, instance: _Instance, now: float) -> bool:
        period = instance.period_s or 1.0
        return now - instance.heard > max(_STALE_PERIODS * period, _STALE_MIN_S)

    def health(self) -> Health:
        """The instances and feeds as known now."""
        now = self._clock()
        lines, feeds = [], []
        for name, held in sorted(self._instances.items()):
            beat, stats = held.beat, held.stats
            endpoints = stats.endpoints if stats is not None else []
            lags = [lag for e in endpoints if isinstance(lag := e.data.get("lag_s"), int | float)]
            lines.append(
                InstanceLine(
                    instance=_cut(name),
                    service=_cut(beat.service),
                    shard=beat.shard,
                    status="stale" if self._stale(held, now) else beat.status,
                    beat_age_s=round(now - held.heard, 1),
                    messages_per_s=held.messages_per_s,
                    handler_ms=held.handler_ms,
                    pending=sum(_int(e.data.get("pending")) for e in endpoints) if stats is not None else None,
                    lag_s=max(lags) if lags else None,
                )
            )
            feeds += _feeds(name, held)
        return Health(nats=self._nats, instances=lines, feeds=feeds, forgotten=self.forgotten, malformed=self.malformed)

    def _publish(self) -> None:
        self._board.update("health", self.health())
        self._board.update(
            "throughput",
            Throughput(
                ts=list(self._ts),
                names=[name for name, _, _ in SERIES],
                values=[[round(v, 3) for v in values] for values in self._values],
            ),
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _feeds(instance: str, held: _Instance) -> list[FeedLine]:
    """The live venue feeds in an instance's counters (``live_<venue>_<figure>``)."""
    figures: dict[str, dict[str, int]] = {}
    for name, value in held.beat.counters.items():
        match = _LIVE.fullmatch(name)
        if match is not None:
            figures.setdefault(match[1], {})[match[2]] = value
    return [
        FeedLine(
            instance=_cut(instance),
            venue=venue,
            connected=of.get("connected", 0),
            last_frame_age_ms=of.get("last_frame_age_ms", 0),
            ticks_per_s=held.rates.get(f"live_{venue}_ticks"),
            reconnects=of.get("reconnects", 0),
            gaps=of.get("gaps", 0),
            malformed=of.get("malformed", 0),
        )
        for venue, of in sorted(figures.items())
    ]
