"""Raw frames to a file and back: what a feed received, so that a feed bug seen live replays offline.

A recording is JSON lines. First one line per venue naming its symbols, then one line per frame in the
order received::

    {"kind":"venue","venue":"binance","symbols":{"BTCUSDT":"BTCUSDT"}}
    {"kind":"frame","venue":"binance","conn":1,"ns":1700000000123456789,"frame":"{\\"stream\\":..."}

``ns`` is the receive time (the ticks' ``ts_init``), ``conn`` the connection it came on, ``frame`` the
frame's text exactly. A recording is bounded: once the next line would take it past ``max_bytes`` it
stops, says so once, and counts what it leaves out. ``read_recording`` puts every frame of a recording
through its venue's normaliser, the code that ran live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.market_data.venues.base import MalformedFrameError, Normaliser, Tick
from rrr.shared.errors import RRRError, excerpt

_log = logging.getLogger(__name__)

# A line of a recording holds one frame; nothing longer is read back.
MAX_LINE_BYTES = 4 << 20


class _VenueLine(msgspec.Struct, tag="venue", tag_field="kind"):
    venue: Annotated[str, msgspec.Meta(max_length=32)]
    symbols: Annotated[dict[str, str], msgspec.Meta(max_length=100_000)]


class _FrameLine(msgspec.Struct, tag="frame", tag_field="kind"):
    venue: Annotated[str, msgspec.Meta(max_length=32)]
    conn: int
    ns: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    frame: str


_encoder = msgspec.json.Encoder()
_line = msgspec.json.Decoder(_VenueLine | _FrameLine)


class RecordingError(RRRError):
    """A recording cannot be read."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {reason}")


class Recorder:
    """Writes the frames of the feeds to ``path``, at most ``max_bytes``; written in the background by
    ``flush`` (no blocking write on the event loop)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0
        self.frames = 0
        self.left_out = 0
        self._lines: list[bytes] = []
        # Several feeds flush into one file: one write at a time keeps the lines in the order taken.
        self._writing = asyncio.Lock()
        self._file = path.open("wb")

    def venue(self, name: str, symbols: Mapping[str, str]) -> None:
        """Name a venue's symbols, before its frames."""
        self._add(_encoder.encode(_VenueLine(venue=name, symbols=dict(symbols))))

    def frame(self, venue: str, conn: int, ns: int, frame: bytes) -> None:
        """Record one frame received at ``ns`` on connection ``conn``."""
        text = frame.decode("utf-8", "replace")
        if self._add(_encoder.encode(_FrameLine(venue=venue, conn=conn, ns=ns, frame=text))):
            self.frames += 1

    def _add(self, line: bytes) -> bool:
        if self.written + len(line) + 1 > self.max_bytes:
            if not self.left_out:
                _log.warning(
                    "recording %s reached its bound of %d bytes: later frames are left out",
                    self.path,
                    self.max_bytes,
                )
            self.left_out += 1
            return False
        self.written += len(line) + 1
        self._lines.append(line + b"\n")
        return True

    async def flush(self) -> None:
        """Write what was recorded so far."""
        async with self._writing:
            lines, self._lines = self._lines, []
            if lines:
                await asyncio.to_thread(self._write, lines)

    def _write(self, lines: list[bytes]) -> None:
        self._file.writelines(lines)
        self._file.flush()

    async def close(self) -> None:
        """Write the rest and close the file."""
        await self.flush()
        await asyncio.to_thread(self._file.close)


@dataclass(slots=True)
class ReplayCounts:
    """What reading a recording found."""

    frames: int = 0
    ticks: int = 0
    malformed: int = 0
    duplicates: int = 0
    gaps: int = 0
    reasons: list[str] = field(default_factory=list)


def read_recording(path: Path, counts: ReplayCounts | None = None) -> Iterator[Tick]:
    """Every tick of a recording, through its venues' normalisers: the code that ran live.

    Raises:
        RecordingError: a line that is not a recording's, or a frame of a venue not named before it.
    """
    from rrr.market_data.venues import VENUES

    counts = counts if counts is not None else ReplayCounts()
    active: dict[str, Normaliser] = {}
    try:
        file = path.open("rb")
    except OSError as exc:
        raise RecordingError(path, 0, f"cannot be read ({exc.strerror or exc})") from None
    with file:
        for number, line in enumerate(file, 1):
            if len(line) > MAX_LINE_BYTES:
                raise RecordingError(path, number, f"a line over {MAX_LINE_BYTES} bytes")
            try:
                record = _line.decode(line)
            except msgspec.DecodeError as exc:
                raise RecordingError(path, number, f"not a recording's line ({exc})") from None
            if isinstance(record, _VenueLine):
                venue = VENUES.get(record.venue)
                if venue is None:
                    raise RecordingError(path, number, f"unknown venue {excerpt(record.venue)}")
                active[record.venue] = venue.normaliser(record.symbols)
                continue
            normaliser = active.get(record.venue)
            if normaliser is None:
                raise RecordingError(path, number, f"a frame of {excerpt(record.venue)} before its venue line")
            counts.frames += 1
            try:
                decoded = normaliser.decode(record.frame.encode(), record.ns)
            except MalformedFrameError as exc:
                counts.malformed += 1
                if len(counts.reasons) < 100:
                    counts.reasons.append(f"line {number}: {exc}")
                continue
            counts.duplicates += decoded.duplicates
            counts.gaps += len(decoded.gaps)
            counts.ticks += len(decoded.ticks)
            yield from decoded.ticks
