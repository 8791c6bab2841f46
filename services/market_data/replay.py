"""Reading recorded quote files in the canonical layout: ``ts,symbol,bid,ask[,bid_size,ask_size]``.

CSV and Parquet. Prices and sizes are read from their decimal text, never through a binary float; a row
that cannot be read raises BadRowError naming the file and line, or is skipped and counted.
"""

from __future__ import annotations

import csv
import hashlib
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from rrr.shared.errors import BadRowError, RRRError, excerpt
from rrr.shared.messages import NANOS_MAX, NANOS_MIN, Quote, check_number
from rrr.shared.subjects import check_symbol

REQUIRED = ("ts", "symbol", "bid", "ask")
OPTIONAL = ("bid_size", "ask_size")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_ISO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?")


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


class UnsupportedFileError(RRRError):
    """A replay file of a kind this reader does not know."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


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
    not_a_time = f"ts {excerpt(text)} is not an ISO-8601 time such as 2020-01-01T17:00:00.065Z"
    no_zone = f"ts {excerpt(text)} has no zone; expected UTC such as 2020-01-01T17:00:00.065Z"
    match = _ISO_TIME.fullmatch(text.strip())
    if match is None:
        try:
            naive = datetime.fromisoformat(text).tzinfo is None
        except ValueError:
            naive = False
        raise ValueError(no_zone if naive else not_a_time)
    base, fraction, zone = match.groups()
    if zone is None:
        raise ValueError(no_zone)
    try:
        ts = datetime.fromisoformat(base + ("+00:00" if zone in ("Z", "z") else zone))
    except ValueError:
        raise ValueError(not_a_time) from None
    return _datetime_ns(ts) + int((fraction or "").ljust(9, "0"))


def _decimal(name: str, text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{name} {excerpt(text)} is not a decimal number") from None
    if not value.is_finite():
        raise ValueError(f"{name} {excerpt(text)} is not a finite number")
    return value


def _row(line: int, values: dict[str, Any]) -> QuoteRow:
    def text(name: str) -> str:
        value = values.get(name)
        if value is None or value == "":
            raise ValueError(f"{name} is empty")
        # Parquet floats are taken at their shortest round-trip text, which is what their writer meant.
        return value if isinstance(value, str) else str(value)

    ts_value = values.get("ts")
    # Parquet timestamps arrive as integer nanoseconds (see _parquet_rows, which refuses plain integers).
    if isinstance(ts_value, int):
        ts_ns, ts_text = ts_value, _ns_text(ts_value)
    else:
        ts_text = text("ts")
        ts_ns = parse_ts(ts_text)
    # The wire's bounds (Nanos): outside them a quote would fail to encode, or be dead-lettered downstream.
    if not NANOS_MIN <= ts_ns <= NANOS_MAX:
        raise ValueError(
            f"ts: expected a time from {_ns_text(NANOS_MIN)} to {_ns_text(NANOS_MAX)}, got {excerpt(ts_text)}"
        )
    symbol = check_symbol(text("symbol"))
    bid, ask = _decimal("bid", text("bid")), _decimal("ask", text("ask"))
    # The same checks the wire applies, so that a file that reads cleanly also publishes cleanly.
    check_number("bid", bid, positive=True)
    check_number("ask", ask, positive=True)
    if bid > ask:
        raise ValueError(f"crossed quote: bid {bid} > ask {ask}")
    sizes = []
    for name in OPTIONAL:
        raw = values.get(name)
        size = None if raw is None or raw == "" else _decimal(name, raw if isinstance(raw, str) else str(raw))
        if size is not None:
            check_number(name, size)
        sizes.append(size)
    return QuoteRow(line, ts_ns, symbol, bid, ask, sizes[0], sizes[1])


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
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise BadRowError(
            str(path),
            1,
            f"expected columns {','.join(REQUIRED)}[,{','.join(OPTIONAL)}], got {excerpt(','.join(columns))}"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + (f" (unknown {excerpt(', '.join(unknown), quoted=False)})" if unknown else ""),
        )


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # utf-8-sig: a byte-order mark some spreadsheet programs write is not part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise BadRowError(str(path), 1, "file is empty; expected a header line")
        columns = [c.strip() for c in header]
        _check_columns(path, columns)
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(columns):
                yield reader.line_num, {"__error__": f"expected {len(columns)} fields, got {len(fields)}"}
                continue
            yield reader.line_num, dict(zip(columns, fields, strict=True))


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow as pa
    except ImportError:
        raise UnsupportedFileError(
            path, "reading Parquet needs pyarrow: pip install 'rrralgorithms[parquet]'"
        ) from None
    try:
        yield from _parquet_records(path)
    except (pa.ArrowException, OSError) as exc:
        # A CSV renamed .parquet, a truncated or corrupt file: Arrow's reason is the useful part.
        reason = str(exc).strip().partition("\n")[0]
        raise UnsupportedFileError(path, f"not readable as Parquet: {excerpt(reason, 200, quoted=False)}") from None


def _parquet_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
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
    for batch in parquet.iter_batches(batch_size=65_536):
        if scale is not None:
            batch = batch.set_column(batch.schema.get_field_index("ts"), "ts", batch.column("ts").cast(pa.int64()))
        for record in batch.to_pylist():
            row += 1
            if scale is not None and record["ts"] is not None:
                record["ts"] *= scale
            yield row, record


def count_rows(path: Path) -> int | None:
    """How many data rows a file holds, cheaply where the format says so (for a progress bar)."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return int(pq.ParquetFile(path).metadata.num_rows)
    newlines, last = 0, b"\n"
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (last != b"\n")  # a last line without its newline still counts
    return max(lines - 1, 0)


def read_quotes(
    path: Path,
    *,
    skip_bad_rows: bool = False,
    on_bad_row: Callable[[BadRowError], None] | None = None,
) -> Iterator[QuoteRow]:
    """Yield the quotes of a CSV or Parquet file in file order.

    Raises:
        BadRowError: a row cannot be read and ``skip_bad_rows`` is false (or the header is wrong).
        UnsupportedFileError: the file is missing, not a regular file, unreadable, or not the CSV or Parquet
            it claims to be.
    """
    _check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise UnsupportedFileError(path, f"unknown file type {suffix!r}; expected .csv or .parquet")
    try:
        for line, values in rows:
            try:
                if "__error__" in values:
                    raise ValueError(values["__error__"])
                yield _row(line, values)
            except ValueError as exc:
                error = BadRowError(str(path), line, str(exc))
                if not skip_bad_rows:
                    raise error from None
                if on_bad_row is not None:
                    on_bad_row(error)
    except UnicodeDecodeError as exc:
        raise UnsupportedFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UnsupportedFileError(path, f"not readable as CSV: {exc}") from None
    except OSError as exc:
        raise UnsupportedFileError(path, f"cannot be read: {exc.strerror or exc}") from None


def _check_regular_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UnsupportedFileError(path, "no such file") from None
    except OSError as exc:
        raise UnsupportedFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise UnsupportedFileError(path, "is a directory; expected a .csv or .parquet file")
    if not stat.S_ISREG(mode):
        # A named pipe or a device: opening it could block for ever or read without end.
        raise UnsupportedFileError(path, "is not a regular file; expected a .csv or .parquet file")
