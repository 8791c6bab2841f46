"""A replay file read to its end before anything of it is published: every row checked and kept as the wire
carries it, in a temporary file. A large CSV file is read in parts, a process each, on as many cores as there
are (up to four); the parts are put together as if read in one pass, or the file is read again in one pass."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from rrr.market_data.replay import (
    FileSpan,
    ReadCounts,
    ReadLimits,
    check_regular_file,
    csv_spans,
    read_quotes,
    source_id,
    to_quote,
)
from rrr.market_data.replay import QuoteRow as FileRow
from rrr.shared.errors import BadRowError
from rrr.shared.messages import Quote, QuoteRow, fixed_row

MAX_BAD_ROWS_LISTED = 100
# Wire rows per frame of a checked file's spill (``CheckedFile``).
_SPILL_ROWS = 4096
_FRAME_LENGTH = struct.Struct("<I")
# A CSV file from this size on is read in parts (130,000 to 170,000 rows): below it, starting a process (about
# 0.3 s) costs more than it saves. At most this many parts: each costs a process and its own memory for telling
# repeats.
_PARTS_MIN_BYTES = 8 << 20
_MAX_PARTS = 4


class _Rows(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """Consecutive rows of a checked file, as a quote batch carries them."""

    rows: list[QuoteRow]


class _Alone(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """A row beyond a batch's fixed point (more than 18 digits or places): it travels alone, as a Quote."""

    quote: Quote


_frame_decoder = msgspec.msgpack.Decoder(_Rows | _Alone)


class _FixedRows:
    """``fixed_row``, with the fixed point of each combination of prices and sizes worked out once: the reader
    hands out one number object per distinct text (``1.10`` and ``1.1`` are two), so the objects themselves
    are the key. An entry holds its numbers, so no other object can take their ids while it is kept."""

    __slots__ = ("_known",)
    _MAX_KEPT = 65_536

    def __init__(self) -> None:
        self._known: dict[tuple[int, ...], tuple[tuple[object, ...], tuple[int, ...] | None]] = {}

    def __call__(
        self,
        quote_id: str,
        symbol: str,
        ts_event: int,
        bid: Decimal,
        ask: Decimal,
        bid_size: Decimal | None,
        ask_size: Decimal | None,
    ) -> QuoteRow | None:
        key = (id(bid), id(ask), id(bid_size), id(ask_size))
        known = self._known.get(key)
        if known is None:
            row = fixed_row("", "", 0, bid, ask, bid_size, ask_size)
            numbers = None if row is None else msgspec.structs.astuple(row)[3:]
            if len(self._known) >= self._MAX_KEPT:
                self._known.clear()
            known = self._known[key] = ((bid, ask, bid_size, ask_size), numbers)
        numbers = known[1]
        return None if numbers is None else QuoteRow(quote_id, symbol, ts_event, *numbers)


@dataclass(slots=True)
class CheckedFile:
    """A quote file read to its end and found publishable (``check_file``): its rows, in file order and as the
    wire carries them, in temporary files (one per part it was read in) of about 60 bytes a row (bounded by
    ``ReadLimits``: the file's size and rows), and what the reading counted. Publishing reads them from there,
    not from the file again: what goes out is what was checked, even if the file changes meanwhile, and no row
    is parsed twice."""

    path: Path
    source: str
    spills: list[BinaryIO] = field(default_factory=list)
    counts: ReadCounts = field(default_factory=ReadCounts)
    # The errors of the first MAX_BAD_ROWS_LISTED rows that could not be read (with skip_bad_rows).
    bad_rows: list[str] = field(default_factory=list)
    quotes: int = 0

    def frames(self) -> Iterator[_Rows | _Alone]:
        """The spilled rows, in file order, from the start."""
        for spill in self.spills:
            spill.seek(0)
            while header := spill.read(_FRAME_LENGTH.size):
                (length,) = _FRAME_LENGTH.unpack(header)
                yield _frame_decoder.decode(spill.read(length))

    def close(self) -> None:
        """Remove the spills."""
        for spill in self.spills:
            spill.close()

    def listed(self, error: BadRowError | str) -> None:
        """Keep the reason a row could not be read, if it is among the first MAX_BAD_ROWS_LISTED."""
        _keep(self.bad_rows, error)


def _keep(reasons: list[str], error: BadRowError | str) -> None:
    # The first ones say what is wrong; a million lines of it would say nothing more.
    if len(reasons) < MAX_BAD_ROWS_LISTED:
        reasons.append(str(error))


def check_file(
    path: Path,
    *,
    skip_bad_rows: bool,
    limits: ReadLimits | None = None,
    on_progress: Callable[[int], None] | None = None,
    parts: int | None = None,
) -> CheckedFile:
    """Read every row of ``path`` (``read_quotes``) before anything is published: a bad row (unless
    ``skip_bad_rows``) or a file beyond ``limits`` raises here, with nothing sent. Each row is made the wire's
    row as it is read, with its id ``<source>:<line>``. ``on_progress`` is told of rows read, now and then.

    A CSV file is read in ``parts`` processes at once (None: one per core, up to four, for a file of 8 MB or
    more), each part a stretch of lines. The parts are put together only if that is the same as reading the
    file in one pass: each symbol's rows in a part are all later than its rows in the parts before (so none
    repeats or comes before one of them), and no part met a bad row it could not skip or a limit. Otherwise the
    file is read again in one pass, which finds what the parts found, in the same words.

    Raises:
        BadRowError: a row cannot be read and ``skip_bad_rows`` is false.
        UnsupportedFileError: the file cannot be read, or is beyond ``limits``.
    """
    # What the file is, before reading all of it for its id.
    check_regular_file(path, None if limits is None else limits.max_file_mb)
    source = source_id(path)
    progress = _Progress(on_progress)
    if path.suffix.lower() == ".csv":
        wanted = min(_cores(), _MAX_PARTS) if parts is None else parts
        spans = csv_spans(path, wanted, _PARTS_MIN_BYTES if parts is None else 0)
        if spans is not None:
            checked = _check_in_parts(path, source, spans, skip_bad_rows, limits, progress)
            if checked is not None:
                return checked
    checked = CheckedFile(path=path, source=source, spills=[_spill_file()])
    try:
        rows = read_quotes(
            path, skip_bad_rows=skip_bad_rows, on_bad_row=checked.listed, counts=checked.counts, limits=limits
        )
        checked.quotes = _spill(rows, source, checked.spills[0], progress.told)
    except BaseException:
        checked.close()
        raise
    return checked


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _spill_file() -> BinaryIO:
    # Closed by CheckedFile.close once published (an unnamed file: gone with the process, whatever happens).
    return tempfile.TemporaryFile(prefix="rrr-replay-")


class _Progress:
    """``on_progress`` told of rows as they are read, each row once: a file read again in one pass after its
    parts could not be put together is reported only beyond what its parts reported."""

    def __init__(self, on_progress: Callable[[int], None] | None) -> None:
        self._on_progress = on_progress
        self._told = 0

    def told(self, rows: int) -> None:
        """``rows`` have been read in all."""
        if self._on_progress is not None and rows > self._told:
            self._on_progress(rows - self._told)
            self._told = rows


def _spill(rows: Iterable[FileRow], source: str, spill: BinaryIO, read: Callable[[int], None]) -> int:
    """Write ``rows`` to ``spill`` as the wire carries them, in frames; return how many; ``read`` is told how many
    so far, now and then."""
    encoder = msgspec.msgpack.Encoder()

    def _write(frame: _Rows | _Alone) -> None:
        data = encoder.encode(frame)
        spill.write(_FRAME_LENGTH.pack(len(data)))
        spill.write(data)

    batch: list[QuoteRow] = []
    fixed = _FixedRows()
    quotes = 0
    for row in rows:
        wire = fixed(f"{source}:{row.line}", row.symbol, row.ts_ns, row.bid, row.ask, row.bid_size, row.ask_size)
        if wire is None:
            if batch:
                _write(_Rows(batch))
                batch = []
            _write(_Alone(to_quote(row, source, row.ts_ns)))
        else:
            batch.append(wire)
            if len(batch) == _SPILL_ROWS:
                _write(_Rows(batch))
                batch = []
        quotes += 1
        if quotes % _SPILL_ROWS == 0:
            read(quotes)
    if batch:
        _write(_Rows(batch))
    read(quotes)
    spill.flush()
    return quotes


@dataclass(slots=True)
class _PartRead:
    """What a part's process found: its counts, the first reasons of its bad rows, its quotes, each symbol's
    oldest and newest time; or why it stopped (a bad row it could not skip, a limit, anything)."""

    counts: ReadCounts = field(default_factory=ReadCounts)
    bad_rows: list[str] = field(default_factory=list)
    quotes: int = 0
    times: dict[str, tuple[int, int]] = field(default_factory=dict)
    stopped: str | None = None


def _read_part(
    path: Path,
    span: FileSpan,
    source: str,
    skip_bad_rows: bool,
    limits: ReadLimits | None,
    spill_name: str,
    read: Any,
    conn: Any,
) -> None:
    """A part's process: read ``span`` into the spill named ``spill_name``, counting rows read in ``read``; send
    "open" once the spill is open (the parent then removes its name, its own copy open), then the _PartRead."""
    # Ctrl-C is the parent's to handle: it ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    found = _PartRead()

    def _read(rows: int) -> None:
        read.value = rows

    try:
        spill = open(spill_name, "r+b")  # noqa: SIM115 - closed below, once read into
    except OSError as exc:
        spill, found.stopped = None, f"{type(exc).__name__}: {exc}"
    conn.send("open")  # its name is no longer needed
    if spill is not None:
        with spill:
            try:
                rows = read_quotes(
                    path, skip_bad_rows=skip_bad_rows, on_bad_row=functools.partial(_keep, found.bad_rows),
                    counts=found.counts, limits=limits, span=span, times=found.times,
                )  # fmt: skip
                found.quotes = _spill(rows, source, spill, _read)
            except Exception as exc:  # whatever it is, the one pass meets it again and says what it is
                found.stopped = f"{type(exc).__name__}: {exc}"
    conn.send(found)
    conn.close()


def _check_in_parts(
    path: Path,
    source: str,
    spans: list[FileSpan],
    skip_bad_rows: bool,
    limits: ReadLimits | None,
    progress: _Progress,
) -> CheckedFile | None:
    """Read the first span here and the others each in a process of its own; the checked file, or None if the
    parts cannot be put together as one pass."""
    context = multiprocessing.get_context("spawn")
    checked = CheckedFile(path=path, source=source, spills=[_spill_file()])
    workers: list[tuple[Any, Any, Any]] = []
    # The names of the spills the parts' processes have yet to open: each goes once they have.
    names: dict[int, str] = {}

    def _opened(index: int, wait: bool) -> None:
        process, receiving, _ = workers[index]
        if index in names and (wait or receiving.poll(0)):
            _receive(process, receiving, progress, _all_read)
            with contextlib.suppress(OSError):
                os.unlink(names.pop(index))

    mine = 0

    def _all_read() -> int:
        return mine + sum(int(read.value) for _, _, read in workers)

    def _read(rows: int) -> None:
        nonlocal mine
        mine = rows
        progress.told(_all_read())
        for index in list(names):
            _opened(index, wait=False)

    try:
        for span in spans[1:]:
            descriptor, name = tempfile.mkstemp(prefix="rrr-replay-")
            names[len(workers)] = name
            checked.spills.append(os.fdopen(descriptor, "r+b"))
            read = context.RawValue("q", 0)
            receiving, sending = context.Pipe(duplex=False)
            process = context.Process(
                target=_read_part, args=(path, span, source, skip_bad_rows, limits, name, read, sending), daemon=True
            )
            workers.append((process, receiving, read))
            try:
                process.start()
            except OSError:
                checked.close()
                return None  # no process to be had: one pass
            finally:
                sending.close()
        times: dict[str, tuple[int, int]] = {}
        rows = read_quotes(
            path, skip_bad_rows=skip_bad_rows, on_bad_row=checked.listed, counts=checked.counts, limits=limits,
            span=spans[0], times=times,
        )  # fmt: skip
        checked.quotes = _spill(rows, source, checked.spills[0], _read)
        parts = []
        for index, (process, receiving, _) in enumerate(workers):
            _opened(index, wait=True)
            parts.append(_receive(process, receiving, progress, _all_read))
        if not _put_together(checked, times, parts, limits):
            checked.close()
            return None
        progress.told(checked.quotes)
        return checked
    except BaseException:
        checked.close()
        raise
    finally:
        for process, receiving, _ in workers:
            receiving.close()
            if process.is_alive():
                process.terminate()
            if process.pid is not None:
                process.join()
        for name in names.values():
            with contextlib.suppress(OSError):
                os.unlink(name)


def _receive(process: Any, receiving: Any, progress: _Progress, read: Callable[[], int]) -> object:
    """The next thing a part's process sends, or None if it ended without sending it; rows read are reported
    meanwhile."""
    while not receiving.poll(0.1):
        progress.told(read())
        if not process.is_alive() and not receiving.poll(0):
            return None
    try:
        return receiving.recv()
    except EOFError:
        return None


def _put_together(
    checked: CheckedFile, times: dict[str, tuple[int, int]], parts: list[object], limits: ReadLimits | None
) -> bool:
    """Add each part's findings to ``checked``, in file order; False if that would not be reading the file in one
    pass (see check_file)."""
    newest = {symbol: last for symbol, (_, last) in times.items()}
    counts = checked.counts
    for part in parts:
        if not isinstance(part, _PartRead) or part.stopped is not None:
            return False
        for symbol, (first, last) in part.times.items():
            if first <= newest.get(symbol, first - 1):
                return False
            newest[symbol] = last
        found = part.counts
        counts.rows += found.rows
        counts.bad_rows += found.bad_rows
        counts.duplicate_rows += found.duplicate_rows
        counts.first_duplicate_line = counts.first_duplicate_line or found.first_duplicate_line
        counts.out_of_order += found.out_of_order
        counts.first_out_of_order_line = counts.first_out_of_order_line or found.first_out_of_order_line
        for reason in part.bad_rows:
            checked.listed(reason)
        checked.quotes += part.quotes
    if limits is not None:
        if limits.max_rows is not None and counts.rows > limits.max_rows:
            return False
        if limits.max_symbols is not None and len(newest) > limits.max_symbols:
            return False
    return True
