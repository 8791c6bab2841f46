"""Reading recorded quote files in the canonical layout: ``ts,symbol,bid,ask[,bid_size,ask_size]``.

CSV and Parquet. Prices and sizes are read from their decimal text, never through a binary float. Every
row is held to what the messages accept, so a file that reads cleanly also publishes cleanly; a row that
cannot be read raises BadRowError naming the file and line, or is skipped and counted. A file that is not
what it claims, or is beyond the limits given, raises UnsupportedFileError. Every error is one line, and
quotes at most 80 characters of what it saw.
"""

from __future__ import annotations

import bisect
import csv
import functools
import hashlib
import io
import mmap
import operator
import os
import re
import stat
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TextIO

from rrr.shared.errors import BadRowError, RRRError, excerpt
from rrr.shared.messages import NANOS_MAX, NANOS_MIN, Quote, check_number
from rrr.shared.subjects import check_symbol

REQUIRED = ("ts", "symbol", "bid", "ask")
OPTIONAL = ("bid_size", "ask_size")
_COLUMNS = REQUIRED + OPTIONAL
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MB = 1 << 20
# A quote row is under 300 characters; a line this long is a broken or hostile file, not a row.
_MAX_LINE_CHARS = 1 << 20
# What the surrogateescape error handler turns a byte that is not UTF-8 into.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Per process: a file cannot be made so that two different quotes share a digest (see _SymbolRows). A str's
# hash is SipHash keyed with a secret of the process's own, unless PYTHONHASHSEED fixed it: then BLAKE2b with
# this key (five times slower).
_DIGEST_KEY = os.urandom(16)
_KEYED_HASH = bool(sys.flags.hash_randomization)
_U64 = (1 << 64) - 1
# Wider than the 46 digits of the largest price or size the wire accepts.
_EXACT = Context(prec=64)
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# ASCII: a Unicode \d would read a fraction of Arabic-Indic digits as nanoseconds.
_ISO_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}", re.ASCII)
_ISO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?", re.ASCII)


@dataclass(frozen=True, slots=True)
class QuoteRow:
    """One quote as read from a file; ``line`` is the 1-based line (CSV) or row + 1 (Parquet)."""

    line: int
    ts_ns: int
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal | None
    ask_size: Decimal | None


@dataclass(slots=True)
class ReadCounts:
    """What reading a file found besides its quotes, counted as its rows are read."""

    rows: int = 0  # data rows, bad and duplicate ones included
    bad_rows: int = 0
    # Rows equal to an earlier row in time, symbol, prices and sizes: skipped, not yielded.
    duplicate_rows: int = 0
    first_duplicate_line: int = 0  # 0 while there is none
    # Rows earlier than a row before them of the same symbol: yielded in file order all the same.
    out_of_order: int = 0
    first_out_of_order_line: int = 0


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Bounds on a replay file, beyond which it is refused rather than read into memory (None: no bound).

    Telling repeated rows and rows out of order costs memory for every row (16 bytes in a file in time
    order, about 80 in a shuffled one) and every symbol (about 1.3 KB).
    """

    max_file_mb: int | None = None
    max_rows: int | None = None
    max_symbols: int | None = None


@dataclass(frozen=True, slots=True)
class FileSpan:
    """A stretch of a CSV file read on its own (``csv_spans``): bytes ``start`` to ``end`` (None: the end of the
    file), whose first line is line ``first_line`` of the file. The header is read from the top all the same."""

    start: int
    end: int | None
    first_line: int


class UnsupportedFileError(RRRError):
    """A replay file this reader cannot or will not read: missing, unreadable, mislabelled or too large."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}{'' if line is None else f':{line}'}: {reason}")


def source_id(path: Path) -> str:
    """A stable id of a file's content (not its name): replaying it again yields the same quote ids.

    The quote ids (``<source_id>:<line>``) are the de-duplication keys downstream, so a file replayed
    twice, or a renamed copy of it, is stored once.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise UnsupportedFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    return f"f{digest.hexdigest()[:16]}"


def parse_ts(text: str) -> int:
    """ISO-8601 time (``2020-01-01T17:00:00.065Z``) to integer nanoseconds since the epoch, exactly.

    Up to nine fractional digits are kept: the fraction is read as an integer of nanoseconds, since
    ``datetime`` itself stops at microseconds.
    """
    # The common spelling, to the millisecond in UTC (2020-01-01T17:00:00.065Z): its second is read and checked
    # once (_whole_seconds_ns), its milliseconds here; any other goes the long way.
    millis = text[20:23]
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and millis.isdigit() and millis.isascii():
        try:
            return _whole_seconds_ns(text[:19], "Z") + int(millis) * 1_000_000
        except ValueError:
            pass  # the long way says what is wrong
    match = _ISO_TIME.fullmatch(text.strip())
    if match is None:
        try:
            naive = datetime.fromisoformat(text).tzinfo is None
        except ValueError:
            naive = False
        raise _no_zone(text) if naive else _not_a_time(text)
    base, fraction, zone = match.groups()
    if zone is None:
        raise _no_zone(text)
    try:
        seconds = _whole_seconds_ns(base, zone)
    except ValueError:
        raise _not_a_time(text) from None
    return seconds + int((fraction or "").ljust(9, "0"))


@functools.lru_cache(maxsize=1024)
def _whole_seconds_ns(base: str, zone: str) -> int:
    # The rows of a file mostly share their second with the rows around them: each is read once.
    if not _ISO_SECOND.fullmatch(base):
        raise ValueError(base)
    return _datetime_ns(datetime.fromisoformat(base + ("+00:00" if zone in ("Z", "z") else zone)))


def _not_a_time(text: str) -> ValueError:
    return ValueError(f"ts {excerpt(text)} is not an ISO-8601 time such as 2020-01-01T17:00:00.065Z")


def _no_zone(text: str) -> ValueError:
    return ValueError(f"ts {excerpt(text)} has no zone; expected UTC such as 2020-01-01T17:00:00.065Z")


def _decimal(name: str, text: str) -> Decimal:
    stripped = text.strip()
    try:
        value = Decimal(stripped)
    except InvalidOperation:
        raise ValueError(f"{name} {excerpt(text)} is not a decimal number") from None
    if not value.is_finite():
        raise ValueError(f"{name} {excerpt(text)} is not a finite number")
    # Decimal also reads 1_000 and digits of other scripts (Arabic-Indic, say): a file holding them is not
    # what it seems.
    if not _DECIMAL_TEXT.fullmatch(stripped):
        raise ValueError(f"{name} {excerpt(text)} is not a decimal number")
    return value


# Prices and sizes repeat from row to row: each distinct text is read and checked once per this many (an error
# is not kept, so a bad one is refused again wherever it appears).
_NUMBERS_CACHED = 16_384


@functools.lru_cache(maxsize=_NUMBERS_CACHED)
def _price(name: str, text: str) -> Decimal:
    value = _decimal(name, text)
    # The same checks the wire applies, so that a file that reads cleanly also publishes cleanly.
    check_number(name, value, positive=True)
    return value


@functools.lru_cache(maxsize=_NUMBERS_CACHED)
def _size(name: str, text: str) -> Decimal:
    value = _decimal(name, text)
    check_number(name, value)
    return value


def _text(value: Any, name: str) -> str:
    if value is None or value == "":
        raise ValueError(f"{name} is empty")
    # Parquet floats are taken at their shortest round-trip text, which is what their writer meant.
    return value if isinstance(value, str) else str(value)


# A row's values in the order of the canonical columns (ts, symbol, bid, ask, bid_size, ask_size), None for a
# column the file does not have. The readers yield the reason instead for a row that has no values.
_Values = tuple[Any, Any, Any, Any, Any, Any]


def _row(line: int, values: _Values) -> QuoteRow:
    ts_value, raw_symbol, raw_bid, raw_ask, raw_bid_size, raw_ask_size = values
    # Parquet timestamps arrive as integer nanoseconds (see _parquet_records, which refuses plain integers).
    if isinstance(ts_value, int):
        ts_ns, ts_text = ts_value, _ns_text(ts_value)
    else:
        ts_text = ts_value if ts_value and isinstance(ts_value, str) else _text(ts_value, "ts")
        ts_ns = parse_ts(ts_text)
    # The wire's bounds (Nanos): outside them a quote would fail to encode, or be dead-lettered downstream.
    if not NANOS_MIN <= ts_ns <= NANOS_MAX:
        raise ValueError(
            f"ts: expected a time from {_ns_text(NANOS_MIN)} to {_ns_text(NANOS_MAX)}, got {excerpt(ts_text)}"
        )
    # A CSV's values are text; anything else (empty, or a Parquet number) goes through _text.
    symbol = check_symbol(raw_symbol if raw_symbol and isinstance(raw_symbol, str) else _text(raw_symbol, "symbol"))
    bid = _price("bid", raw_bid if raw_bid and isinstance(raw_bid, str) else _text(raw_bid, "bid"))
    ask = _price("ask", raw_ask if raw_ask and isinstance(raw_ask, str) else _text(raw_ask, "ask"))
    if bid > ask:
        raise ValueError(f"crossed quote: bid {bid} > ask {ask}")
    bid_size = (
        None if raw_bid_size is None or raw_bid_size == "" else _size("bid_size", _text(raw_bid_size, "bid_size"))
    )
    ask_size = (
        None if raw_ask_size is None or raw_ask_size == "" else _size("ask_size", _text(raw_ask_size, "ask_size"))
    )
    return QuoteRow(line, ts_ns, symbol, bid, ask, bid_size, ask_size)


def to_quote(row: QuoteRow, source: str, ts_init: int) -> Quote:
    """The message of a row read from the file ``source`` (see source_id), made at ``ts_init``.

    Its id is ``<source>:<line>``; every field was checked by the reader against the wire's bounds.
    """
    return Quote(
        id=f"{source}:{row.line}",
        ts_event=row.ts_ns,
        ts_init=ts_init,
        symbol=row.symbol,
        bid=row.bid,
        ask=row.ask,
        bid_size=row.bid_size,
        ask_size=row.ask_size,
    )


def _ns_text(ns: int) -> str:
    """Integer nanoseconds since the epoch as ISO-8601 UTC, to the nanosecond; raw, if beyond year 9999."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return f"{ns:,} ns from the epoch"
    digits = f".{fraction:09d}".rstrip("0") if fraction else ""
    return f"{moment.replace(tzinfo=None).isoformat()}{digits}Z"


def _datetime_ns(ts: datetime) -> int:
    # Integer arithmetic on the timedelta: a float timestamp would lose precision.
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [repr(c) for c in columns if c not in REQUIRED + OPTIONAL]
    # A column given twice: which of the two is the price?
    twice = [c for c, n in Counter(columns).items() if n > 1 and c in REQUIRED + OPTIONAL]
    if missing or unknown or twice:
        raise BadRowError(
            str(path),
            1,
            f"expected columns {','.join(REQUIRED)}[,{','.join(OPTIONAL)}], got {excerpt(','.join(columns))}"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + (f" (unknown {excerpt(', '.join(unknown), quoted=False)})" if unknown else "")
            + (f" (twice {', '.join(twice)})" if twice else ""),
        )


def _csv_rows(path: Path, span: FileSpan | None = None) -> Iterator[tuple[int, _Values | str]]:
    # utf-8-sig: a byte-order mark some spreadsheet programs write is not part of the first column's name.
    # surrogateescape: a byte that is not UTF-8 is kept, for _text_lines to name it with its line; a strict
    # decoder fails on a whole buffer, lines ahead of the row being read.
    with path.open("rb") as raw:
        start, end, first_line = (0, None, 1) if span is None else (span.start, span.end, span.first_line)
        fh = _decoded(raw, 0, end if start == 0 else None, "utf-8-sig")
        lines = _text_lines(path, fh, 1)
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
            if header is None:
                raise BadRowError(str(path), 1, "file is empty; expected a header line")
            columns = [c.strip() for c in header]
            _check_columns(path, columns)
            width = len(columns)
            # The fields in the canonical order; a column the file lacks reads the None appended to its rows.
            canonical = operator.itemgetter(*(columns.index(c) if c in columns else width for c in _COLUMNS))
            complete = all(c in columns for c in _COLUMNS)
        except csv.Error as exc:
            raise UnsupportedFileError(path, f"not readable as CSV from this line on: {exc}", line=1) from None
        if start > 0:
            # A stretch further on: no byte-order mark there, and its lines numbered from where it starts.
            reader = csv.reader(_text_lines(path, _decoded(raw, start, end, "utf-8"), first_line))
        offset = first_line - 1 if start > 0 else 0
        begins = offset + reader.line_num + 1
        try:
            for fields in reader:
                line = offset + reader.line_num
                begins = line + 1  # where the next row begins, if this one is fine
                if not fields:
                    continue
                if len(fields) != width:
                    yield line, f"expected {width} fields, got {len(fields)}"
                    continue
                if not complete:
                    fields.append(None)  # type: ignore[arg-type]
                yield line, canonical(fields)
        except csv.Error as exc:
            # An unclosed quote runs on to the field size limit, lines later: name the line the row began on.
            raise UnsupportedFileError(path, f"not readable as CSV from this line on: {exc}", line=begins) from None


def _decoded(raw: io.BufferedReader, start: int, end: int | None, encoding: str) -> TextIO:
    """The text of bytes ``start`` to ``end`` (None: to the end) of ``raw``, lines ended by CR, LF or CRLF."""
    raw.seek(start)
    region: io.BufferedReader = raw if end is None else io.BufferedReader(_Region(raw, end - start))
    return io.TextIOWrapper(region, encoding=encoding, errors="surrogateescape", newline="")


class _Region(io.RawIOBase):
    """The next ``size`` bytes of a file, then its end."""

    def __init__(self, raw: io.BufferedReader, size: int) -> None:
        super().__init__()
        self._raw, self._left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        got = self._raw.readinto(memoryview(buffer)[:want])
        self._left -= got
        return got


def _text_lines(path: Path, fh: TextIO, first: int) -> Iterator[str]:
    """The lines of a CSV file (ended by CR, LF or CRLF) from line ``first`` on, each checked to be UTF-8 and of a
    bounded length.

    A file of one endless line must not be read into memory whole.
    """
    number = first - 1
    while line := fh.readline(_MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > _MAX_LINE_CHARS:
            raise UnsupportedFileError(
                path, f"expected lines of at most {_MAX_LINE_CHARS:,} characters, got a longer one", line=number
            )
        if (escaped := _NOT_UTF8.search(line)) is not None:
            raise UnsupportedFileError(
                path,
                f"expected UTF-8 text, got byte {ord(escaped.group()) - 0xDC00:#04x} at character "
                f"{escaped.start() + 1} of the line",
                line=number,
            )
        yield line


def _parquet_rows(path: Path, max_rows: int | None) -> Iterator[tuple[int, _Values | str]]:
    try:
        import pyarrow as pa
    except ImportError:
        raise UnsupportedFileError(
            path, "reading Parquet needs pyarrow: pip install 'rrralgorithms[parquet]'"
        ) from None
    try:
        yield from _parquet_records(path, max_rows)
    except (pa.ArrowException, OSError) as exc:
        # A CSV renamed .parquet, a truncated or corrupt file: Arrow's reason is the useful part.
        reason = str(exc).strip().partition("\n")[0]
        raise UnsupportedFileError(path, f"not readable as Parquet: {excerpt(reason, 200, quoted=False)}") from None


def _parquet_records(path: Path, max_rows: int | None) -> Iterator[tuple[int, _Values]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    # The footer says how many rows there are: refuse at once instead of after reading them.
    if max_rows is not None and parquet.metadata.num_rows > max_rows:
        raise UnsupportedFileError(
            path, _too_many("data rows", max_rows, "--replay-max-rows", f"{parquet.metadata.num_rows:,}")
        )
    columns = list(parquet.schema_arrow.names)
    _check_columns(path, columns)
    row = 1
    schema = parquet.schema_arrow
    ts_type = schema.field("ts").type
    if not (pa.types.is_timestamp(ts_type) or pa.types.is_string(ts_type) or pa.types.is_large_string(ts_type)):
        # An integer could be seconds, milliseconds or nanoseconds: guessing would misdate every quote.
        raise UnsupportedFileError(path, f"column ts is {ts_type}; expected a timestamp or ISO-8601 text")
    for name in ("bid", "ask", "bid_size", "ask_size"):
        if name in schema.names and pa.types.is_float32(schema.field(name).type):
            raise UnsupportedFileError(
                path, f"column {name} is float32, too coarse for prices; expected decimal, text or float64"
            )
    # Timestamps are taken as integers in their own unit and scaled in Python: Python datetimes would drop
    # the nanoseconds, and Arrow's cast to nanoseconds fails a whole batch at one time past 2262 instead of
    # letting that row say so. A timestamp without a zone is taken as UTC, as Parquet writers mean it.
    scale = _UNIT_NS[ts_type.unit] if pa.types.is_timestamp(ts_type) else None

    def canonical(record: dict[str, Any]) -> _Values:
        return tuple(record.get(c) for c in _COLUMNS)  # type: ignore[return-value]

    for batch in parquet.iter_batches(batch_size=65_536):
        if scale is not None:
            batch = batch.set_column(batch.schema.get_field_index("ts"), "ts", batch.column("ts").cast(pa.int64()))
        for record in batch.to_pylist():
            row += 1
            if scale is not None and record["ts"] is not None:
                record["ts"] *= scale
            yield row, canonical(record)


def read_quotes(
    path: Path,
    *,
    skip_bad_rows: bool = False,
    on_bad_row: Callable[[BadRowError], None] | None = None,
    counts: ReadCounts | None = None,
    limits: ReadLimits | None = None,
    span: FileSpan | None = None,
    times: dict[str, tuple[int, int]] | None = None,
) -> Iterator[QuoteRow]:
    """Yield the quotes of a CSV or Parquet file in file order, each row that repeats an earlier one skipped.

    A repeat is a row equal to an earlier one in time, symbol, prices and sizes (by value: 1.10 and 1.1 are
    one price); stored again it would be a second quote under another id. A row earlier than a row before it
    of the same symbol is yielded all the same, in file order. ``counts`` (if given) counts both, and the bad
    rows, as the file is read. A file beyond ``limits`` is refused as soon as that is known.

    Raises:
        BadRowError: a row cannot be read and ``skip_bad_rows`` is false (or the header is wrong).
        UnsupportedFileError: the file is missing, not a regular file, unreadable, or not the CSV or Parquet
            it claims to be.
    """
    limits = ReadLimits() if limits is None else limits
    check_regular_file(path, limits.max_file_mb)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, span)
    elif span is not None:
        raise UnsupportedFileError(path, "only a CSV file is read in stretches")
    elif suffix == ".parquet":
        rows = _parquet_rows(path, limits.max_rows)
    else:
        raise UnsupportedFileError(path, f"unknown file type {suffix!r}; expected .csv or .parquet")
    counts = ReadCounts() if counts is None else counts
    seen: dict[str, _SymbolRows] = {}
    try:
        for line, values in rows:
            counts.rows += 1
            if limits.max_rows is not None and counts.rows > limits.max_rows:
                raise UnsupportedFileError(
                    path, _too_many("data rows", limits.max_rows, "--replay-max-rows", "more"), line=line
                )
            try:
                if isinstance(values, str):
                    raise ValueError(values)
                row = _row(line, values)
            except ValueError as exc:
                counts.bad_rows += 1
                error = BadRowError(str(path), line, str(exc))
                if not skip_bad_rows:
                    raise error from None
                if on_bad_row is not None:
                    on_bad_row(error)
                continue
            rows_of_symbol = seen.get(row.symbol)
            if rows_of_symbol is None:
                if limits.max_symbols is not None and len(seen) >= limits.max_symbols:
                    raise UnsupportedFileError(
                        path, _too_many("symbols", limits.max_symbols, "--replay-max-symbols", "more"), line=line
                    )
                rows_of_symbol = seen[row.symbol] = _SymbolRows()
            order = rows_of_symbol.add(row.ts_ns, _digest(row))
            if order == "repeat":
                counts.duplicate_rows += 1
                counts.first_duplicate_line = counts.first_duplicate_line or line
                continue
            if order == "late":
                counts.out_of_order += 1
                counts.first_out_of_order_line = counts.first_out_of_order_line or line
            yield row
    except OSError as exc:
        raise UnsupportedFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if times is not None:
        times.update((symbol, (held.oldest, held.newest)) for symbol, held in seen.items())


def csv_spans(path: Path, parts: int, min_bytes: int) -> list[FileSpan] | None:
    """``parts`` stretches of about equal size that together are all of the CSV file ``path``, each starting at a
    line of its own, to be read each on its own (``read_quotes(span=...)``); None when the file is smaller than
    ``min_bytes`` or cannot be cut so. A file holding a double quote is not cut: a quoted field can span lines,
    and only the reader that started the row can tell. Nor is one that has no LF (a line ended by CR alone
    could be half of a CRLF on the far side of a cut).
    """
    try:
        size = path.stat().st_size
        if parts < 2 or size < max(min_bytes, 1):
            return None
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b'"') != -1:
                return None
            header_end = data.find(b"\n") + 1
            if header_end == 0:
                return None
            cuts = [0]
            for part in range(1, parts):
                cut = data.find(b"\n", max(size * part // parts, header_end, cuts[-1])) + 1
                if cut in (0, size) or cut <= cuts[-1]:
                    break
                cuts.append(cut)
            if len(cuts) < 2:
                return None
            spans = []
            for start, end in zip(cuts, [*cuts[1:], None], strict=True):
                before = data[:start]
                # Lines end at LF, CR or CRLF, as the reader sees them.
                first_line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
                spans.append(FileSpan(start, end, first_line))
            return spans
    except (OSError, ValueError):
        return None  # read as one, which says what is wrong


def _too_many(what: str, limit: int, flag: str, got: str) -> str:
    return f"expected at most {limit:,} {what} ({flag} raises the limit), got {got}"


def check_regular_file(path: Path, max_file_mb: int | None) -> None:
    """Raise UnsupportedFileError unless ``path`` is a regular file of at most ``max_file_mb``."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise UnsupportedFileError(path, "no such file") from None
    except OSError as exc:
        raise UnsupportedFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):
        raise UnsupportedFileError(path, "is a directory; expected a .csv or .parquet file")
    if not stat.S_ISREG(status.st_mode):
        # A named pipe or a device: opening it could block for ever or read without end.
        raise UnsupportedFileError(path, "is not a regular file; expected a .csv or .parquet file")
    if max_file_mb is not None and status.st_size > max_file_mb * _MB:
        raise UnsupportedFileError(
            path,
            f"expected a file of at most {max_file_mb:,} MB (--replay-max-file-mb raises the limit), "
            f"got {status.st_size / _MB:,.1f} MB",
        )


def _digest(row: QuoteRow) -> int:
    return _digest_of(row.bid, row.ask, row.bid_size, row.ask_size)


@functools.lru_cache(maxsize=_NUMBERS_CACHED)
def _digest_of(bid: Decimal, ask: Decimal, bid_size: Decimal | None, ask_size: Decimal | None) -> int:
    # By value, so 1.10 and 1.1 are one price: no consumer tells them apart (nor does this cache, which holds
    # equal numbers as one). Normalised in a context wider than any number the reader accepts, so normalising
    # never rounds.
    parts = ("" if v is None else str(v.normalize(_EXACT)) if v else "0" for v in (bid, ask, bid_size, ask_size))
    text = "|".join(parts)
    if _KEYED_HASH:
        return hash(text) & _U64
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, key=_DIGEST_KEY).digest())


class _SymbolRows:
    """The rows of one symbol read so far: enough to tell an exact repeat of one of them from a new row.

    A row is held as its time and a 64-bit digest of its prices and sizes, keyed per process so that no
    file can be made to collide; only rows at the same nanosecond are ever compared. Rows from the newest
    time on go to one array and rows up to the oldest time to another, each sorted and searched by
    bisection: a file in time order, in reverse time order or repeating a stretch already read costs 16
    bytes a row. Rows in between the oldest and the newest time, as in a shuffled file, go to a set at about
    80 bytes a row.
    """

    __slots__ = (
        "_at_newest",
        "_at_oldest",
        "_between",
        "_earlier_digests",
        "_earlier_ts",
        "_later_digests",
        "_later_ts",
    )

    def __init__(self) -> None:
        self._later_ts = array("q")  # non-decreasing
        self._later_digests = array("Q")
        self._earlier_ts = array("q")  # negated, so non-decreasing as well
        self._earlier_digests = array("Q")
        self._between: set[int] = set()  # time << 64 | digest
        self._at_newest: set[int] = set()  # digests of the rows at the newest time, wherever they are
        self._at_oldest: set[int] = set()  # and at the oldest time

    @property
    def oldest(self) -> int:
        """The earliest time of the symbol's rows read so far."""
        return -self._earlier_ts[-1] if self._earlier_ts else self._later_ts[0]

    @property
    def newest(self) -> int:
        """The latest time of the symbol's rows read so far."""
        return self._later_ts[-1]

    def add(self, ts: int, digest: int) -> Literal["new", "late", "repeat"]:
        """Record a row unless it repeats one: in time order (new), earlier than a row before it (late)."""
        later_ts = self._later_ts
        if not later_ts or ts > later_ts[-1]:
            if not later_ts:
                self._at_oldest = {digest}
            self._at_newest = {digest}
            later_ts.append(ts)
            self._later_digests.append(digest)
            return "new"
        newest = later_ts[-1]
        oldest = -self._earlier_ts[-1] if self._earlier_ts else later_ts[0]
        if ts == newest:
            if digest in self._at_newest:
                return "repeat"
            self._at_newest.add(digest)
            if ts == oldest:
                self._at_oldest.add(digest)
            later_ts.append(ts)
            self._later_digests.append(digest)
            return "new"
        if ts <= oldest:
            if ts == oldest and digest in self._at_oldest:
                return "repeat"
            if ts < oldest:
                self._at_oldest = set()
            self._at_oldest.add(digest)
            self._earlier_ts.append(-ts)
            self._earlier_digests.append(digest)
            return "late"
        key = ts << 64 | digest
        if (
            key in self._between
            or _holds(self._later_ts, self._later_digests, ts, digest)
            or _holds(self._earlier_ts, self._earlier_digests, -ts, digest)
        ):
            return "repeat"
        self._between.add(key)
        return "late"


def _holds(times: array[int], digests: array[int], ts: int, digest: int) -> bool:
    start = bisect.bisect_left(times, ts)
    return digest in digests[start : bisect.bisect_right(times, ts, start)]
