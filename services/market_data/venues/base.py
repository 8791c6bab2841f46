"""What every venue shares: the sink ticks go to, what a decoded frame yields, the sequencer, and the bounds.

A venue module (``binance``, ``coinbase``, ``kraken``) gives a ``Venue``: where to connect, how to subscribe,
its documented limits, and a ``Normaliser`` that turns one frame's text into ``Quote`` and ``Trade`` objects.
A normaliser does no I/O: it is given the frame's bytes and its receive time, so that a recording replays
through exactly the code that ran live.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Protocol

import msgspec

from rrr.shared.errors import RRRError, excerpt
from rrr.shared.messages import NANOS_MAX, Quote, Trade, check_number

Tick = Quote | Trade

# A price or size as the venues write it: decimal text (or a JSON number), far shorter than this.
DecimalText = Annotated[str, msgspec.Meta(max_length=48)]
VenueSymbolText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
# Milliseconds since the epoch that still fit the messages' nanoseconds.
MillisSinceEpoch = Annotated[int, msgspec.Meta(ge=0, le=NANOS_MAX // 1_000_000)]
Sequence64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class TickSink(Protocol):
    """Where a feed hands its normalised ticks.

    ``put`` is awaited once per burst of frames read together, with their ticks in arrival order, by one
    task per venue: an implementation may publish them one by one or as a batch. A feed never waits long on
    it (a live tick is stale soon), so an implementation drops what it cannot send now and counts it.
    """

    async def put(self, ticks: Sequence[Tick]) -> None:
        """Take the ticks of one burst."""
        ...


class MalformedFrameError(RRRError):
    """A frame could not be read as any message of its venue's documented protocol, or holds values no
    market has (a negative or non-finite price, a crossed book, a symbol not subscribed ...)."""

    def __init__(self, venue: str, reason: str, frame: bytes | str) -> None:
        self.venue = venue
        self.reason = reason
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        super().__init__(f"{venue}: malformed frame ({reason}): {excerpt(text)}")


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of a contiguous sequence that never arrived: ``first`` to ``last`` of ``symbol``'s ``what``."""

    symbol: str
    what: str
    first: int
    last: int

    @property
    def missed(self) -> int:
        """How many were missed."""
        return self.last - self.first + 1


@dataclass(slots=True)
class Decoded:
    """What one frame yields.

    ``ticks`` are new events, in frame order; ``duplicates`` the events of the frame already seen (from a
    repeated frame or the other connection of a rollover); ``gaps`` the events of a contiguous sequence
    found missing; ``acks`` the subscriptions the venue confirmed; ``alive`` the (system) symbols the frame
    shows to be alive without carrying a tick (a per-symbol heartbeat); ``error`` what the venue said was
    wrong (a refused subscription).
    """

    ticks: list[Tick] = field(default_factory=list)
    duplicates: int = 0
    gaps: list[Gap] = field(default_factory=list)
    acks: int = 0
    alive: list[str] = field(default_factory=list)
    error: str = ""


class Normaliser(Protocol):
    """Turns the frames of one venue into ticks; one is shared by every connection to that venue, so that
    what two connections deliver twice is published once."""

    def decode(self, frame: bytes, ts_init: int) -> Decoded:
        """Decode one frame received at ``ts_init`` (nanoseconds since the epoch).

        Raises:
            MalformedFrameError: the frame is not a message of the venue's protocol, or holds values no market
                has. Nothing of it is published.
        """
        ...


@dataclass(frozen=True, slots=True)
class Venue:
    """A venue: where its public feed is, what it documents as limits, how to talk to it.

    ``max_symbols_per_connection`` keeps each connection within the venue's documented limit on streams per
    connection; ``subscribe_messages_per_s`` paces the subscribe messages within its limit on incoming
    messages; ``max_connect_lifetime_s`` is when the venue closes a connection by design (0: never), before
    which the feed opens the replacement; ``app_ping`` builds the venue's own ping message, if it has one.
    """

    name: str
    url: str
    max_symbols_per_connection: int
    subscribe_messages_per_s: float
    max_connect_lifetime_s: float
    subscribe: Callable[[Sequence[str], int], list[bytes]]
    expected_acks: Callable[[Sequence[str]], int]
    # Given the venue symbols subscribed, mapped to the system's (``symbols.system_symbols``).
    normaliser: Callable[[Mapping[str, str]], Normaliser]
    app_ping: Callable[[int], bytes] | None = None


class Sequencer:
    """The last sequence number seen per key (``quote:BTCUSDT``): tells a new event from one seen before.

    A venue's sequence numbers only grow, so an event at or below the last one seen is a repeat (a repeated
    frame, or the second connection of a rollover delivering it again) and is dropped. Where the venue
    documents the numbers as contiguous, a jump is a gap: what lies between never arrived. Keys are
    bounded by the symbols subscribed (a few per symbol).
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._fingerprint: dict[str, object] = {}

    def check(self, key: str, seq: int) -> bool:
        """Record ``seq`` for ``key``; False if it is not newer than the last seen."""
        last = self._last.get(key)
        if last is not None and seq <= last:
            return False
        self._last[key] = seq
        return True

    def check_contiguous(self, key: str, seq: int) -> tuple[bool, tuple[int, int] | None]:
        """Like ``check``, and the range skipped (first, last) when ``seq`` is beyond the next expected."""
        last = self._last.get(key)
        if last is not None and seq <= last:
            return False, None
        self._last[key] = seq
        if last is not None and seq > last + 1:
            return True, (last + 1, seq - 1)
        return True, None

    def check_timed(self, key: str, ts: int, fingerprint: object) -> bool:
        """For a venue without sequence numbers: an event earlier than the last one is a repeat, and so is
        one at the same time with the same content (``fingerprint``)."""
        last = self._last.get(key)
        if last is not None and (ts < last or (ts == last and self._fingerprint.get(key) == fingerprint)):
            return False
        self._last[key] = ts
        self._fingerprint[key] = fingerprint
        return True

    def forget(self, keys: Sequence[str]) -> None:
        """Drop what is known of ``keys`` (tests, and symbols no longer subscribed)."""
        for key in keys:
            self._last.pop(key, None)
            self._fingerprint.pop(key, None)


def number(venue: str, name: str, text: str | Decimal, frame: bytes, *, positive: bool = True) -> Decimal:
    """A price or size of a frame as an exact Decimal, within the wire's bounds."""
    try:
        value = text if isinstance(text, Decimal) else Decimal(text)
        check_number(name, value, positive=positive)
    except (ValueError, ArithmeticError) as exc:
        if isinstance(exc, InvalidOperation):
            raise MalformedFrameError(venue, f"{name} is not a decimal number", frame) from None
        raise MalformedFrameError(venue, str(exc), frame) from None
    return value


# RFC 3339 in UTC as the venues write it: 2022-10-19T23:28:22.061769Z, up to nanoseconds.
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z", re.ASCII)
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def rfc3339_ns(venue: str, text: str, frame: bytes) -> int:
    """Nanoseconds since the epoch of a UTC RFC 3339 time, exact to the nanosecond."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise MalformedFrameError(venue, "time is not RFC 3339 UTC (2022-10-19T23:28:22.061769Z)", frame)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1970 <= year <= 2262 and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise MalformedFrameError(venue, f"time {excerpt(text)} is out of range", frame)
    # Days since the epoch by the proleptic Gregorian calendar: no datetime, so nanoseconds stay exact.
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400 - 719162 + _DAYS_BEFORE_MONTH[month - 1] + day - 1
    if leap and month > 2:
        days += 1
    fraction = match.group(7) or ""
    ns = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)
    if not 0 <= ns <= NANOS_MAX:
        raise MalformedFrameError(venue, f"time {excerpt(text)} is out of range", frame)
    return ns
