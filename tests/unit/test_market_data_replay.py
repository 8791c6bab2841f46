"""Reading recorded quote files: exact times and decimals, bad rows named by file and line.

The files are the bundled test data or small files written to ``tmp_path``; nothing leaves the process.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.market_data.replay import (
    QuoteRow,
    ReadCounts,
    ReadLimits,
    UnsupportedFileError,
    parse_ts,
    read_quotes,
    source_id,
    to_quote,
)
from rrr.shared.errors import BadRowError
from rrr.shared.fixed import to_decimal
from rrr.shared.messages import encode, market_data_decoder

DATA = Path(__file__).resolve().parents[1] / "data"
BTCUSDT = DATA / "btcusdt_quotes_2021-01-08.csv"
HEADER = "ts,symbol,bid,ask,bid_size,ask_size"
GOOD = "2021-01-08T00:00:01.076Z,BTCUSDT,39432.99,39433.62,0.0031,0.066851"


def _csv(tmp_path: Path, *lines: str, name: str = "quotes.csv", end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes((end.join(lines) + end).encode())
    return path


# -- parse_ts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01T17:00:00.065Z", 1_577_898_000_065_000_000),
        ("2021-01-08T00:00:01.076Z", 1_610_064_001_076_000_000),
        ("2020-01-01T17:00:00Z", 1_577_898_000_000_000_000),
        ("2020-01-01T18:00:00.065+01:00", 1_577_898_000_065_000_000),
        ("2020-01-01T17:00:00.065+00:00", 1_577_898_000_065_000_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999Z", -1_000),
        # Far from the epoch a float of seconds has no room for the microseconds: 4102444800.000001
        # times 1e9 is not 4102444800000001000 in binary floating point.
        ("2100-01-01T00:00:00.000001Z", 4_102_444_800_000_001_000),
        ("2262-04-11T23:47:16.854775Z", 9_223_372_036_854_775_000),
    ],
)
def test_parse_ts_gives_exact_integer_nanoseconds(text, expected):
    assert parse_ts(text) == expected


def test_parse_ts_of_every_millisecond_of_a_second_is_exact():
    base = parse_ts("2020-01-01T17:00:00Z")
    for ms in range(1000):
        assert parse_ts(f"2020-01-01T17:00:00.{ms:03d}Z") == base + ms * 1_000_000


def test_parse_ts_keeps_nanoseconds():
    assert parse_ts("2020-01-01T17:00:00.065123456Z") == 1_577_898_000_065_123_456


@pytest.mark.parametrize("text", ["2020-01-01T17:00:00.065", "2020-01-01"])
def test_parse_ts_without_a_zone_raises_saying_utc_is_expected(text):
    with pytest.raises(ValueError, match="has no zone"):
        parse_ts(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "1577898000065",
        "2020-13-01T00:00:00Z",
        "2020-01-01T25:00Z",
        "2020-01-01T17:00:00.\u0661Z",  # an Arabic-Indic digit one
        "\u0662\u0660\u0662\u0660-01-01T17:00:00Z",
    ],
)
def test_parse_ts_of_something_else_raises_showing_an_example(text):
    with pytest.raises(ValueError, match=r"not an ISO-8601 time such as 2020-01-01T17:00:00\.065Z"):
        parse_ts(text)


@pytest.mark.parametrize(
    "text",
    [
        "2020-13-01T17:00:00.065Z",  # the shape of the common spelling, each with something wrong
        "2020-02-30T17:00:00.065Z",
        "2020-01-01T24:00:00.065Z",
        "2020-01-01T17:00:60.065Z",
        "2020-01-01T17:00:00.0\u0666\u0665Z",
        "2020-01-01T17:00:00.06xZ",
        "2020-01-01\u00a017:00:00.065Z",
        "2020-01-01T17:00:0\u0660.065Z",
    ],
)
def test_parse_ts_of_the_common_spelling_gone_wrong_raises_as_any_other(text):
    with pytest.raises(ValueError, match=r"not an ISO-8601 time such as 2020-01-01T17:00:00\.065Z"):
        parse_ts(text)


@given(st.integers(min_value=-(10**11), max_value=253_402_300_799_999))
def test_parse_ts_of_any_millisecond_in_the_common_spelling_is_exact(millis):
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"
    if len(text) != 24:  # a year before 1000 is written with fewer digits
        return
    assert parse_ts(text) == millis * 1_000_000
    assert parse_ts(text.replace("Z", "+00:00")) == millis * 1_000_000  # the long way agrees


# -- the bundled data ----------------------------------------------------------------------------------


def test_reading_the_btcusdt_file_gives_its_451_quotes_in_file_order():
    rows = list(read_quotes(BTCUSDT))
    assert len(rows) == 451
    assert rows[0] == QuoteRow(
        line=2,
        ts_ns=1_610_064_001_076_000_000,
        symbol="BTCUSDT",
        bid=Decimal("39432.99"),
        ask=Decimal("39433.62"),
        bid_size=Decimal("0.0031"),
        ask_size=Decimal("0.066851"),
    )
    assert [r.line for r in rows] == list(range(2, 453))
    assert all(a.ts_ns <= b.ts_ns for a, b in itertools.pairwise(rows))


def test_reading_the_btcusdt_file_keeps_float_artefacts_in_sizes_exactly():
    row = list(read_quotes(BTCUSDT))[3]
    assert row.line == 5
    assert str(row.bid_size) == "0.031035000000000004"
    assert str(row.ask_size) == "0.093829"
    assert str(row.ask) == "39444.95"


def test_reading_a_file_keeps_trailing_zeros_of_prices():
    rows = list(read_quotes(DATA / "eurusd_quotes_2020-01-01.csv"))
    assert str(rows[0].bid) == "1.121200"
    assert rows[0].bid_size is None
    assert rows[0].ts_ns == 1_577_898_000_065_000_000


# -- bad rows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2021-01-08T00:00:01.157Z,BTCUSDT,abc,39433.6,2.0,0.018027", "bid 'abc' is not a decimal number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39433.6,1e,2.0,0.018027", "ask '1e' is not a decimal number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,NaN,39433.6,2.0,0.018027", "bid 'NaN' is not a finite number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39434,39433.6,2.0,0.018027", "crossed quote: bid 39434 > ask 39433.6"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,0,39433.6,2.0,0.018027", "bid must be > 0"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39430.29,39433.6,0.33", "expected 6 fields, got 5"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39430.29,39433.6,0.33,1,2", "expected 6 fields, got 7"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,,39433.6,2.0,0.018027", "bid is empty"),
        ("yesterday,BTCUSDT,39430.29,39433.6,2.0,0.018027", "ts 'yesterday' is not an ISO-8601 time"),
        ("2021-01-08T00:00:01.157,BTCUSDT,39430.29,39433.6,2.0,0.018027", "has no zone"),
        ("2021-01-08T00:00:01.157Z,btcusdt,39430.29,39433.6,2.0,0.018027", "invalid symbol 'btcusdt'"),
        ("2021-01-08T00:00:01.157Z,BTC.USDT,39430.29,39433.6,2.0,0.018027", "invalid symbol 'BTC.USDT'"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39430.29,39433.6,-2.0,0.018027", "bid_size must be >= 0"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39430.29,39433.6,2.0,x", "ask_size 'x' is not a decimal number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,39_430.29,39433.6,2.0,1", "bid '39_430.29' is not a decimal number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,1,\u0662,2.0,1", "ask '\u0662' is not a decimal number"),
        ("2021-01-08T00:00:01.157Z,BTCUSDT,1,2,2.0,0x10", "ask_size '0x10' is not a decimal number"),
    ],
)
def test_bad_row_raises_naming_the_file_and_its_line(tmp_path, row, reason):
    path = _csv(tmp_path, HEADER, GOOD, row, GOOD)
    rows = read_quotes(path)
    assert next(rows).line == 2
    with pytest.raises(BadRowError) as info:
        next(rows)
    assert (info.value.path, info.value.line) == (str(path), 3)
    assert str(info.value).startswith(f"{path}:3: ")
    assert reason in str(info.value)


def test_bad_row_line_is_the_physical_line_counting_blank_lines(tmp_path):
    path = _csv(tmp_path, HEADER, GOOD, "", "", GOOD, "", "bad-time,BTCUSDT,1,2,3,4", end="\r\n")
    with pytest.raises(BadRowError) as info:
        list(read_quotes(path))
    assert info.value.line == 7


def test_bad_row_line_after_a_quoted_multiline_field_is_the_physical_line(tmp_path):
    multiline = '2021-01-08T00:00:01.076Z,BTCUSDT,39432.99,39433.62,"0.0031\n",0.066851'
    path = _csv(tmp_path, HEADER, multiline, "bad-time,BTCUSDT,1,2,3,4")
    rows = read_quotes(path)
    next(rows)
    with pytest.raises(BadRowError) as info:
        next(rows)
    assert info.value.line == 4


def test_skip_bad_rows_yields_the_good_ones_and_reports_each_bad_one(tmp_path):
    path = _csv(
        tmp_path,
        HEADER,
        GOOD,
        "2021-01-08T00:00:02Z,BTCUSDT,abc,1,1,1",
        GOOD.replace("01.076", "03.000"),
        "2021-01-08T00:00:04Z,BTCUSDT,2,1,1,1",
        "2021-01-08T00:00:05Z,BTCUSDT,1,2",
        GOOD.replace("01.076", "06.000"),
    )
    reported: list[BadRowError] = []
    rows = list(read_quotes(path, skip_bad_rows=True, on_bad_row=reported.append))
    assert [r.line for r in rows] == [2, 4, 7]
    assert [e.line for e in reported] == [3, 5, 6]
    assert all(e.path == str(path) for e in reported)
    assert "crossed quote" in reported[1].reason


def test_skip_bad_rows_without_a_callback_just_skips(tmp_path):
    path = _csv(tmp_path, HEADER, "x,BTCUSDT,1,2,3,4", GOOD)
    assert [r.line for r in read_quotes(path, skip_bad_rows=True)] == [3]


def test_skip_bad_rows_does_not_skip_a_wrong_header(tmp_path):
    path = _csv(tmp_path, "ts,symbol,bid", GOOD)
    with pytest.raises(BadRowError):
        list(read_quotes(path, skip_bad_rows=True))


# -- header --------------------------------------------------------------------------------------------


def test_header_without_a_required_column_names_the_missing_one(tmp_path):
    path = _csv(tmp_path, "ts,symbol,bid,bid_size", "2021-01-08T00:00:01Z,BTCUSDT,1,1")
    with pytest.raises(BadRowError) as info:
        next(read_quotes(path))
    assert info.value.line == 1
    assert "(missing ask)" in str(info.value)
    assert "unknown" not in str(info.value)


def test_header_with_an_unknown_column_names_it(tmp_path):
    path = _csv(tmp_path, "ts,symbol,bid,ask,venue,price", "2021-01-08T00:00:01Z,BTCUSDT,1,2,X,1")
    with pytest.raises(BadRowError) as info:
        next(read_quotes(path))
    assert "(unknown 'venue', 'price')" in str(info.value)
    assert "missing" not in str(info.value)


def test_header_with_renamed_columns_names_missing_and_unknown(tmp_path):
    path = _csv(tmp_path, "time,symbol,bid_price,ask", "2021-01-08T00:00:01Z,BTCUSDT,1,2")
    with pytest.raises(BadRowError) as info:
        next(read_quotes(path))
    message = str(info.value)
    assert message.startswith(f"{path}:1: expected columns ts,symbol,bid,ask[,bid_size,ask_size]")
    assert "(missing ts, bid)" in message
    assert "(unknown 'time', 'bid_price')" in message


def test_header_with_a_column_twice_names_it(tmp_path):
    path = _csv(tmp_path, "ts,symbol,bid,ask,bid,ask_size", "2021-01-08T00:00:01Z,BTCUSDT,1,2,3,4")
    with pytest.raises(BadRowError) as info:
        next(read_quotes(path))
    assert str(info.value) == (
        f"{path}:1: expected columns ts,symbol,bid,ask[,bid_size,ask_size], got 'ts,symbol,bid,ask,bid,ask_size' "
        "(twice bid)"
    )


def test_parquet_with_a_column_twice_names_it(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    columns = [pa.array([v]) for v in ("2020-01-01T17:00:00Z", "X", "1", "2", "3")]
    pq.write_table(pa.table(columns, names=["ts", "symbol", "bid", "ask", "ask"]), path)
    with pytest.raises(BadRowError, match=r":1: .* \(twice ask\)$"):
        next(read_quotes(path))


@pytest.mark.parametrize("text", ["1", "1.", ".5", "+1.5", "1.5e3", "1.5E-3", " 1.5 "])
def test_decimal_text_in_every_plain_spelling_is_read(tmp_path: Path, text: str) -> None:
    path = _csv(tmp_path, HEADER, f"2021-01-08T00:00:01Z,BTCUSDT,{text},2000,,")
    (row,) = read_quotes(path)
    assert row.bid == Decimal(text.strip())


def test_header_columns_may_be_in_any_order_and_padded(tmp_path):
    path = _csv(tmp_path, " ask , bid,symbol,ts", "2,1,BTCUSDT,2021-01-08T00:00:01Z")
    (row,) = read_quotes(path)
    assert (row.bid, row.ask, row.symbol, row.bid_size) == (Decimal(1), Decimal(2), "BTCUSDT", None)


def test_empty_file_is_an_error_asking_for_a_header(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(BadRowError, match="file is empty; expected a header line") as info:
        next(read_quotes(path))
    assert info.value.line == 1


def test_header_only_file_has_no_quotes(tmp_path):
    path = _csv(tmp_path, HEADER)
    assert list(read_quotes(path)) == []


# -- files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quotes.json", "quotes.csv.gz", "quotes", "quotes.txt"])
def test_file_of_an_unknown_kind_is_unsupported(tmp_path, name):
    path = tmp_path / name
    path.write_text(f"{HEADER}\n{GOOD}\n")
    with pytest.raises(UnsupportedFileError, match=r"expected \.csv or \.parquet") as info:
        next(read_quotes(path))
    assert info.value.path == path


def test_upper_case_csv_suffix_is_read(tmp_path):
    path = _csv(tmp_path, HEADER, GOOD, name="QUOTES.CSV")
    assert len(list(read_quotes(path))) == 1


def test_missing_file_is_unsupported_saying_so(tmp_path):
    with pytest.raises(UnsupportedFileError, match="no such file"):
        next(read_quotes(tmp_path / "nope.csv"))


# -- source_id -----------------------------------------------------------------------------------------


def test_source_id_is_a_sha256_prefix_of_the_content_whatever_the_file_is_called(tmp_path):
    path = _csv(tmp_path, "ts,symbol,bid,ask", name="eur usd.2020.csv")
    renamed = _csv(tmp_path, "ts,symbol,bid,ask", name="other.csv")
    assert source_id(path) == "f" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert source_id(renamed) == source_id(path)


def test_source_id_is_the_same_for_the_same_content_wherever_the_file_is(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _csv(tmp_path / "a", HEADER, GOOD)
    second = _csv(tmp_path / "b", HEADER, GOOD)
    assert source_id(first) == source_id(second)
    assert source_id(first) == source_id(first)


def test_source_id_differs_when_one_byte_of_the_content_differs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _csv(tmp_path / "a", HEADER, GOOD)
    second = _csv(tmp_path / "b", HEADER, GOOD.replace("0.0031", "0.0032"))
    assert source_id(first) != source_id(second)


# -- line ends ---------------------------------------------------------------------------------------


def test_a_csv_with_crlf_line_ends_reads_every_row(tmp_path):
    path = _csv(tmp_path, HEADER, GOOD, GOOD.replace("01.076", "02.000"), GOOD.replace("01.076", "03.000"), end="\r\n")
    assert [r.line for r in read_quotes(path)] == [2, 3, 4]
    assert str(next(read_quotes(path)).ask_size) == "0.066851"  # no carriage return left on the last field


def test_a_csv_without_a_final_newline_reads_every_row(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text(f"{HEADER}\n{GOOD}\n{GOOD.replace('01.076', '02.000')}")
    assert [r.line for r in read_quotes(path)] == [2, 3]


# -- Parquet -------------------------------------------------------------------------------------------


def _columns(rows: list[QuoteRow]) -> dict[str, list[object]]:
    return {
        "symbol": [r.symbol for r in rows],
        "bid": [r.bid for r in rows],
        "ask": [r.ask for r in rows],
        "bid_size": [r.bid_size for r in rows],
        "ask_size": [r.ask_size for r in rows],
    }


def test_a_file_with_one_size_column_of_two_reads_it_as_that_size_in_csv_and_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    header, row = "ask,ask_size,symbol,ts,bid", "1.2,7.5,EURUSD,2020-01-01T17:00:01Z,1.1"
    csv_path = _csv(tmp_path, header, row)
    parquet_path = tmp_path / "quotes.parquet"
    pq.write_table(pa.table({n: [v] for n, v in zip(header.split(","), row.split(","), strict=True)}), parquet_path)
    for path in (csv_path, parquet_path):
        (quote,) = read_quotes(path)
        assert (str(quote.bid), str(quote.ask), quote.bid_size, str(quote.ask_size)) == ("1.1", "1.2", None, "7.5")


def test_parquet_with_text_columns_reads_back_the_same_quotes_as_the_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_rows = list(read_quotes(BTCUSDT))
    lines = BTCUSDT.read_text().splitlines()[1:]
    columns = {
        name: pa.array([line.split(",")[i] for line in lines], pa.string()) for i, name in enumerate(HEADER.split(","))
    }
    path = tmp_path / "btcusdt.parquet"
    pq.write_table(pa.table(columns), path, row_group_size=100)
    parquet_rows = list(read_quotes(path))
    assert parquet_rows == csv_rows
    assert [str(r.bid_size) for r in parquet_rows] == [str(r.bid_size) for r in csv_rows]


@pytest.mark.parametrize("zone", ["UTC", None])
def test_parquet_with_decimal_and_timestamp_columns_reads_back_the_same_quotes_as_the_csv(tmp_path, zone):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_rows = list(read_quotes(BTCUSDT))
    columns = _columns(csv_rows)
    table = pa.table(
        {
            "ts": pa.array([r.ts_ns // 1_000_000 for r in csv_rows], pa.timestamp("ms", tz=zone)),
            "symbol": pa.array(columns["symbol"], pa.string()),
            "bid": pa.array(columns["bid"], pa.decimal128(12, 2)),
            "ask": pa.array(columns["ask"], pa.decimal128(12, 2)),
            "bid_size": pa.array(columns["bid_size"], pa.decimal128(38, 21)),
            "ask_size": pa.array(columns["ask_size"], pa.decimal128(38, 21)),
        }
    )
    path = tmp_path / "btcusdt.parquet"
    pq.write_table(table, path)
    parquet_rows = list(read_quotes(path))
    assert parquet_rows == csv_rows  # Decimal equality is by value: 2.0 == 2.000...0
    assert parquet_rows[3].bid_size == Decimal("0.031035000000000004")


def test_parquet_with_a_nanosecond_timestamp_column_of_whole_microseconds_is_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    ts = [1_577_898_000_065_001_000, 1_577_898_000_066_000_000]
    table = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "symbol": ["EURUSD", "EURUSD"],
            "bid": ["1.1212", "1.1213"],
            "ask": ["1.1217", "1.1218"],
        }
    )
    pq.write_table(table, path)
    assert [r.ts_ns for r in read_quotes(path)] == ts


def test_parquet_with_nanosecond_timestamps_keeps_the_nanoseconds(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    ts = [1_577_898_000_065_123_456]
    table = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "symbol": ["EURUSD"],
            "bid": ["1.1212"],
            "ask": ["1.1217"],
        }
    )
    pq.write_table(table, path)
    assert [r.ts_ns for r in read_quotes(path)] == ts


def test_parquet_bad_row_names_the_file_and_row_plus_one(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    table = pa.table(
        {
            "ts": ["2020-01-01T17:00:00Z", "2020-01-01T17:00:01Z", "2020-01-01T17:00:02Z"],
            "symbol": ["EURUSD", "EURUSD", "EURUSD"],
            "bid": ["1.1212", "1.1300", None],
            "ask": ["1.1217", "1.1218", "1.1218"],
        }
    )
    pq.write_table(table, path)
    reported: list[BadRowError] = []
    rows = list(read_quotes(path, skip_bad_rows=True, on_bad_row=reported.append))
    assert [r.line for r in rows] == [2]
    assert [(e.path, e.line) for e in reported] == [(str(path), 3), (str(path), 4)]
    assert "crossed quote" in reported[0].reason
    assert "bid is empty" in reported[1].reason


def test_parquet_with_a_wrong_schema_names_the_missing_and_unknown_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"time": ["2020-01-01T17:00:00Z"], "symbol": ["X"], "bid": ["1"], "ask": ["2"]}), path)
    with pytest.raises(BadRowError, match=r"\(missing ts\) \(unknown 'time'\)"):
        next(read_quotes(path))


def test_parquet_naive_timestamp_is_taken_as_utc(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    moment = datetime(2020, 1, 1, 17, 0, 0, 65_000)
    table = pa.table({"ts": pa.array([moment], pa.timestamp("us")), "symbol": ["X"], "bid": ["1"], "ask": ["2"]})
    pq.write_table(table, path)
    (row,) = read_quotes(path)
    assert row.ts_ns == parse_ts("2020-01-01T17:00:00.065Z")
    assert row.ts_ns == int(moment.replace(tzinfo=UTC).timestamp()) * 10**9 + 65_000_000


# -- files that are not what they claim ---------------------------------------------------------------


def test_a_csv_starting_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\n{GOOD}\n".encode())
    assert [r.symbol for r in read_quotes(path)] == ["BTCUSDT"]


def test_a_file_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n{GOOD}\n".encode() + b"2021-01-08T00:00:01.076Z,BTC\xe9,1,2,,\n")
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:3: expected UTF-8 text, got byte 0xe9 at character 29 of the line"


def test_a_price_beyond_the_wire_bounds_is_a_bad_row_before_anything_is_published(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD, "2021-01-08T00:00:01.157Z,BTCUSDT,1E+19,2E+19,,")
    with pytest.raises(BadRowError, match=r"quotes.csv:3: bid 1E\+19 is out of range"):
        list(read_quotes(path))


def test_parquet_with_integer_times_is_refused_rather_than_guessing_their_unit(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "int_ts.parquet"
    pq.write_table(pa.table({"ts": [1610064001076], "symbol": ["BTCUSDT"], "bid": ["1"], "ask": ["2"]}), path)
    with pytest.raises(UnsupportedFileError, match="column ts is int64"):
        list(read_quotes(path))


def test_parquet_with_float32_prices_is_refused(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "f32.parquet"
    table = pa.table(
        {
            "ts": ["2021-01-08T00:00:01.076Z"],
            "symbol": ["BTCUSDT"],
            "bid": pa.array([1.1], type=pa.float32()),
            "ask": pa.array([1.2], type=pa.float32()),
        }
    )
    pq.write_table(table, path)
    with pytest.raises(UnsupportedFileError, match="bid is float32"):
        list(read_quotes(path))


# -- times the messages cannot carry ------------------------------------------------------------------

RANGE = "expected a time from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z"


@pytest.mark.parametrize(
    "ts",
    [
        "9999-12-31T00:00:00Z",  # would not even encode: beyond msgpack's integers
        "2262-04-11T23:47:16.854775808Z",  # one nanosecond past the bigint
        "2500-01-01T00:00:00Z",  # encodes as an unsigned integer, which the decoders refuse
        "1969-12-31T23:59:59.999999999Z",
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:30:00+01:00",
    ],
)
def test_a_time_outside_what_messages_carry_is_a_bad_row_naming_the_accepted_range(tmp_path: Path, ts: str) -> None:
    path = _csv(tmp_path, HEADER, GOOD, f"{ts},BTCUSDT,1,2,,")
    with pytest.raises(BadRowError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:3: ts: {RANGE}, got {ts!r}"


def test_the_first_and_the_last_nanosecond_messages_carry_are_read(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, "1970-01-01T00:00:00Z,BTCUSDT,1,2,,", "2262-04-11T23:47:16.854775807Z,BTCUSDT,1,2,,")
    assert [r.ts_ns for r in read_quotes(path)] == [0, 2**63 - 1]


@pytest.mark.parametrize(
    ("unit", "value", "shown"),
    [
        ("us", datetime(3000, 1, 1), "3000-01-01T00:00:00Z"),
        ("s", datetime(1969, 12, 31, 23, 59, 59), "1969-12-31T23:59:59Z"),
        ("ms", datetime(2262, 4, 11, 23, 47, 17), "2262-04-11T23:47:17Z"),
    ],
)
def test_parquet_time_outside_what_messages_carry_is_a_bad_row_of_its_own(
    tmp_path: Path, unit: str, value: datetime, shown: str
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "q.parquet"
    table = pa.table(
        {
            "ts": pa.array([datetime(2020, 1, 1), value, datetime(2020, 1, 2)], pa.timestamp(unit, tz="UTC")),
            "symbol": ["X", "X", "X"],
            "bid": ["1", "1", "1"],
            "ask": ["2", "2", "2"],
        }
    )
    pq.write_table(table, path)
    reported: list[BadRowError] = []
    rows = list(read_quotes(path, skip_bad_rows=True, on_bad_row=reported.append))
    assert [r.line for r in rows] == [2, 4]
    assert [str(e) for e in reported] == [f"{path}:3: ts: {RANGE}, got {shown!r}"]


# -- what reads cleanly publishes cleanly -------------------------------------------------------------

_DIGITS = "0123456789"
_times = st.one_of(
    st.builds(
        lambda moment, fraction, zone: moment.isoformat(timespec="seconds") + (fraction and "." + fraction) + zone,
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.text(_DIGITS, max_size=9),
        st.sampled_from(["Z", "+00:00", "+14:00", "-12:00"]),
    ),
    st.sampled_from(
        [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "2554-07-21T23:34:33.709551615Z",
            "2554-07-21T23:34:33.709551616Z",
        ]
    ),
)
_numbers = st.one_of(
    st.decimals().map(str),
    st.from_regex(r"[+-]?[0-9]{0,22}(\.[0-9]{0,32})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["1E+17", "9.99E+17", "1E+18", "1E-28", "1E-29", "0", "-0", "1_000", "NaN", "-Infinity"]),
)
_symbols = st.one_of(
    st.sampled_from(["EURUSD", "BTC-USDT", "A"]), st.from_regex(r"[A-Za-z0-9_.*>\- ]{0,40}", fullmatch=True)
)


@settings(deadline=None, max_examples=300)
@given(
    ts=_times,
    symbol=_symbols,
    bid=_numbers,
    ask=_numbers,
    bid_size=st.one_of(st.just(""), _numbers),
    ask_size=st.one_of(st.just(""), _numbers),
)
def test_every_row_read_publishes_as_a_quote_the_consumers_decode_unchanged(
    tmp_path_factory: pytest.TempPathFactory, ts: str, symbol: str, bid: str, ask: str, bid_size: str, ask_size: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "property.csv"
    path.write_text(f"{HEADER}\n{ts},{symbol},{bid},{ask},{bid_size},{ask_size}\n")
    try:
        (row,) = read_quotes(path)
    except BadRowError:
        return  # refused before anything is published: what the check pass is for
    quote = to_quote(row, "f0123456789abcdef", 1_700_000_000_000_000_000)
    assert market_data_decoder.decode(encode(quote)) == quote


# -- files that cannot be read as what they claim to be -----------------------------------------------

_NOT_PARQUET = "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."


def _parquet_bytes(tmp_path: Path) -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "good.parquet"
    rows = 1000
    table = pa.table(
        {
            "ts": ["2020-01-01T17:00:00Z"] * rows,
            "symbol": ["EURUSD"] * rows,
            "bid": [f"1.{i}" for i in range(rows)],
            "ask": ["2"] * rows,
        }
    )
    pq.write_table(table, path, compression="none")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda good: BTCUSDT.read_bytes(), _NOT_PARQUET),  # a CSV renamed .parquet
        (lambda good: good[: len(good) // 2], _NOT_PARQUET),  # cut short
        (lambda good: b"", "Parquet file size is 0 bytes"),
        (lambda good: good[:4] + b"\xff" * 200 + good[204:], "Couldn't deserialize thrift"),  # a page overwritten
    ],
    ids=["csv-renamed", "truncated", "empty", "corrupt-page"],
)
def test_a_file_that_is_not_readable_as_parquet_is_refused_in_one_line_naming_it(
    tmp_path: Path, damage: Callable[[bytes], bytes], reason: str
) -> None:
    path = tmp_path / "quotes.parquet"
    path.write_bytes(damage(_parquet_bytes(tmp_path)))
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    message = str(info.value)
    assert message.startswith(f"{path}: not readable as Parquet: {reason}")
    assert "\n" not in message


def test_a_directory_is_not_a_quote_file(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(UnsupportedFileError) as info:
        next(read_quotes(tmp_path / "dir.csv"))
    assert str(info.value) == f"{tmp_path / 'dir.csv'}: is a directory; expected a .csv or .parquet file"


def test_a_named_pipe_is_refused_without_opening_it(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    os.mkfifo(path)  # opening it would wait for a writer for ever
    with pytest.raises(UnsupportedFileError) as info:
        next(read_quotes(path))
    assert str(info.value) == f"{path}: is not a regular file; expected a .csv or .parquet file"


def _unreadable(tmp_path: Path) -> Path:
    # A regular file whose reading fails even for root: the kernel refuses to read a process's memory at 0.
    memory = Path("/proc/self/mem")
    if not memory.exists():
        pytest.skip("needs Linux /proc")
    path = tmp_path / "quotes.csv"
    path.symlink_to(memory)
    return path


def test_a_file_that_fails_to_read_is_refused_saying_why(tmp_path: Path) -> None:
    path = _unreadable(tmp_path)
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}: cannot be read: Input/output error"


def test_source_id_of_a_file_that_fails_to_read_is_refused_saying_why(tmp_path: Path) -> None:
    path = _unreadable(tmp_path)
    with pytest.raises(UnsupportedFileError, match="cannot be read: Input/output error"):
        source_id(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_without_read_permission_is_refused_saying_so(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD)
    path.chmod(0)
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}: cannot be read: Permission denied"


# -- every error line is bounded ----------------------------------------------------------------------

_HUGE = 100_000


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            f"2021-01-08T00:00:01Z,BTCUSDT,{'1' * _HUGE},{'2' * _HUGE},,",
            f"bid {'1' * 80}... (100,000 characters) is out of range: at most 18 digits before the point and 28 after",
        ),
        (
            f"2021-01-08T00:00:01Z,BTCUSDT,{'x' * _HUGE},2,,",
            f"bid {'x' * 80!r}... (100,000 characters) is not a decimal number",
        ),
        (
            f"2021-01-08T00:00:01Z,BTCUSDT,1,2,{'-' + '9' * _HUGE},",
            f"bid_size must be >= 0, got -{'9' * 79}... (100,001 characters)",
        ),
        (
            f"{'2' * _HUGE},BTCUSDT,1,2,,",
            f"ts {'2' * 80!r}... (100,000 characters) is not an ISO-8601 time such as 2020-01-01T17:00:00.065Z",
        ),
        (
            f"2021-01-08T00:00:01Z,{'A' * _HUGE},1,2,,",
            f"invalid symbol {'A' * 80!r}... (100,000 characters): expected 1-32 characters of A-Z, 0-9, '_' or "
            "'-', starting with a letter or digit",
        ),
    ],
    ids=["price", "not-a-number", "size", "time", "symbol"],
)
def test_a_huge_bad_value_is_quoted_in_80_characters_with_its_length(tmp_path: Path, row: str, reason: str) -> None:
    path = _csv(tmp_path, HEADER, GOOD, row)
    with pytest.raises(BadRowError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:3: {reason}"


def test_a_header_of_a_hundred_thousand_columns_is_named_in_a_bounded_line(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER + "".join(f",c{i}" for i in range(_HUGE)), GOOD)
    with pytest.raises(BadRowError) as info:
        next(read_quotes(path))
    message = str(info.value)
    assert message.startswith(f"{path}:1: expected columns ts,symbol,bid,ask[,bid_size,ask_size], got 'ts,symbol")
    assert len(message) < 400 + len(str(path))
    assert "characters) (unknown 'c0', 'c1', 'c2'," in message


# -- repeated rows and rows out of time order ---------------------------------------------------------


def _quote(second: int, symbol: str = "EURUSD", bid: str = "1.1", ask: str = "1.2", size: str = "") -> str:
    return f"2020-01-01T17:00:{second:02d}Z,{symbol},{bid},{ask},{size},"


def _read(path: Path) -> tuple[list[int], ReadCounts]:
    counts = ReadCounts()
    return [r.line for r in read_quotes(path, counts=counts)], counts


def test_a_row_repeating_an_earlier_one_is_skipped_and_counted_with_its_first_line(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        HEADER,
        _quote(1),
        _quote(1),  # line 3: the same row again
        _quote(1, bid="1.10", ask="1.200"),  # line 4: the same prices, written otherwise
        _quote(1, size="5"),  # another size: another quote
        _quote(1, symbol="GBPUSD"),  # another symbol: another quote
        _quote(2),
        _quote(1, size="5"),  # line 8: repeats line 5, though a later time came in between
    )
    lines, counts = _read(path)
    assert lines == [2, 5, 6, 7]
    assert (counts.rows, counts.duplicate_rows, counts.first_duplicate_line) == (7, 3, 3)
    assert (counts.out_of_order, counts.first_out_of_order_line) == (0, 0)


def test_a_file_repeated_after_itself_reads_as_the_file_once(tmp_path: Path) -> None:
    body = BTCUSDT.read_text().splitlines()[1:]
    path = _csv(tmp_path, HEADER, *body, *body)
    lines, counts = _read(path)
    assert lines == list(range(2, 453))
    assert (counts.duplicate_rows, counts.first_duplicate_line, counts.out_of_order) == (451, 453, 0)


def test_rows_out_of_time_order_are_read_in_file_order_and_counted_from_the_first(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        HEADER,
        _quote(5),
        _quote(3, symbol="GBPUSD"),  # a symbol of its own: in order
        _quote(7),
        _quote(6),  # line 5: earlier than line 4
        _quote(6, bid="1.05"),  # line 6: later than line 5, still earlier than line 4
        _quote(7, bid="1.05"),  # at the newest time: in order
    )
    lines, counts = _read(path)
    assert lines == [2, 3, 4, 5, 6, 7]
    assert (counts.out_of_order, counts.first_out_of_order_line, counts.duplicate_rows) == (2, 5, 0)


def test_a_file_newest_first_is_out_of_order_from_its_second_row_and_its_repeats_are_found(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, _quote(9), _quote(8), _quote(8, bid="1.05"), _quote(7), _quote(8), _quote(9))
    lines, counts = _read(path)
    assert lines == [2, 3, 4, 5]
    assert (counts.out_of_order, counts.first_out_of_order_line) == (3, 3)
    assert (counts.duplicate_rows, counts.first_duplicate_line) == (2, 6)


_row_text = st.builds(
    lambda second, symbol, bid, size: _quote(second, symbol=symbol, bid=bid, size=size),
    st.integers(0, 6),
    st.sampled_from(["EURUSD", "GBPUSD"]),
    st.sampled_from(["1.1", "1.10", "1.05", "1"]),
    st.sampled_from(["", "0", "0.00", "2"]),
)


@settings(deadline=None, max_examples=300)
@given(texts=st.lists(_row_text, max_size=40))
def test_repeats_and_rows_out_of_order_in_any_file_are_what_a_plain_search_finds(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> None:
    path = _csv(tmp_path_factory.getbasetemp(), HEADER, *texts, name="orders.csv")
    seen: set[tuple[object, ...]] = set()
    newest: dict[str, int] = {}
    expected_lines, duplicates, late = [], [], []
    for line, row in enumerate(csv.DictReader(texts, fieldnames=HEADER.split(",")), start=2):
        ts, symbol = parse_ts(row["ts"]), row["symbol"]
        key = (ts, symbol, *(Decimal(row[c]) if row[c] else None for c in HEADER.split(",")[2:]))
        if key in seen:
            duplicates.append(line)
            continue
        seen.add(key)
        if ts < newest.get(symbol, ts):
            late.append(line)
        newest[symbol] = max(ts, newest.get(symbol, ts))
        expected_lines.append(line)
    lines, counts = _read(path)
    assert lines == expected_lines
    assert (counts.duplicate_rows, counts.first_duplicate_line) == (len(duplicates), duplicates[0] if duplicates else 0)
    assert (counts.out_of_order, counts.first_out_of_order_line) == (len(late), late[0] if late else 0)


# -- bounds on the input ------------------------------------------------------------------------------


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD)
    with path.open("ab") as fh:
        fh.truncate(3 * 1024 * 1024 // 2)  # 1.5 MB: the rest is zero bytes, never read
    with pytest.raises(UnsupportedFileError) as info:
        next(read_quotes(path, limits=ReadLimits(max_file_mb=1)))
    assert str(info.value) == (
        f"{path}: expected a file of at most 1 MB (--replay-max-file-mb raises the limit), got 1.5 MB"
    )


def test_a_csv_of_more_rows_than_the_limit_is_refused_at_the_first_row_past_it(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, *(_quote(s) for s in range(5)))
    assert len(list(read_quotes(path, limits=ReadLimits(max_rows=5)))) == 5
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path, limits=ReadLimits(max_rows=4)))
    assert str(info.value) == f"{path}:6: expected at most 4 data rows (--replay-max-rows raises the limit), got more"


def test_a_parquet_file_of_more_rows_than_the_limit_is_refused_from_its_footer(tmp_path: Path) -> None:
    path = tmp_path / "quotes.parquet"
    path.write_bytes(_parquet_bytes(tmp_path))
    with pytest.raises(UnsupportedFileError) as info:
        next(read_quotes(path, limits=ReadLimits(max_rows=999)))
    assert str(info.value) == f"{path}: expected at most 999 data rows (--replay-max-rows raises the limit), got 1,000"


def test_a_file_of_more_symbols_than_the_limit_is_refused_at_the_first_row_past_it(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, _quote(1, "A"), _quote(1, "B"), _quote(2, "A"), _quote(1, "C"))
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path, limits=ReadLimits(max_symbols=2)))
    assert str(info.value) == f"{path}:5: expected at most 2 symbols (--replay-max-symbols raises the limit), got more"


def test_a_line_of_more_than_a_million_characters_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD, "," * (1 << 21))
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:3: expected lines of at most 1,048,576 characters, got a longer one"


def test_an_unclosed_quote_is_refused_where_the_reader_gave_up(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, GOOD, "", '2021-01-08T00:00:02Z,BTCUSDT,"1,2,,', *([GOOD] * 20_000))
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:4: not readable as CSV from this line on: field larger than field limit (131072)"


def test_a_csv_with_carriage_returns_alone_as_line_ends_reads_every_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER, _quote(1), _quote(2), "bad-time,EURUSD,1,2,,", end="\r")
    reported: list[BadRowError] = []
    assert [r.line for r in read_quotes(path, skip_bad_rows=True, on_bad_row=reported.append)] == [2, 3]
    assert [e.line for e in reported] == [4]


def test_a_byte_that_is_not_utf8_far_into_a_file_is_named_by_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    body = "".join(f"{_quote(s % 60, bid=f'1.0{s:04d}')}\n" for s in range(3000))
    path.write_bytes(f"{HEADER}\n{body}".encode() + b"2020-01-01T17:00:00Z,EUR\xff,1,2,,\n")
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:3002: expected UTF-8 text, got byte 0xff at character 25 of the line"


def test_an_unclosed_quote_in_the_header_is_refused_naming_line_1(tmp_path: Path) -> None:
    path = _csv(tmp_path, '"ts,symbol,bid,ask', *([GOOD] * 20_000))
    with pytest.raises(UnsupportedFileError) as info:
        list(read_quotes(path))
    assert str(info.value) == f"{path}:1: not readable as CSV from this line on: field larger than field limit (131072)"


# -- numbers read once per spelling ---------------------------------------------------------------------


def test_a_bad_price_is_refused_on_every_row_it_appears_on_not_only_the_first(tmp_path: Path) -> None:
    # Prices are read and checked once per distinct text; a refusal must not be remembered as a value.
    path = _csv(tmp_path, HEADER, _quote(1, bid="0"), _quote(2), _quote(3, bid="0"), _quote(4, ask="abc"),
                _quote(5, ask="abc"))  # fmt: skip
    reported: list[BadRowError] = []
    assert [r.line for r in read_quotes(path, skip_bad_rows=True, on_bad_row=reported.append)] == [3]
    assert [(e.line, e.reason) for e in reported] == [
        (2, "bid must be > 0, got 0"),
        (4, "bid must be > 0, got 0"),
        (5, "ask 'abc' is not a decimal number"),
        (6, "ask 'abc' is not a decimal number"),
    ]


def test_a_price_written_two_ways_keeps_its_spelling_on_each_row_and_on_the_wire(tmp_path: Path) -> None:
    from rrr.market_data.checked import check_file

    # 1.10 and 1.1 are one value but not one spelling: each row keeps its own, in the reader and in the fixed
    # point of the rows checked for publishing, whichever came first.
    path = _csv(tmp_path, HEADER, _quote(1, bid="1.10", ask="1.20"), _quote(2, bid="1.1", ask="1.2"),
                _quote(3, bid="1.10", ask="1.20"), _quote(4, bid="1.1", ask="1.2", size="2.50"))  # fmt: skip
    assert [(str(r.bid), str(r.ask)) for r in read_quotes(path)] == [("1.10", "1.20"), ("1.1", "1.2")] * 2
    checked = check_file(path, skip_bad_rows=False)
    try:
        rows = [row for frame in checked.frames() for row in frame.rows]  # type: ignore[union-attr]
    finally:
        checked.close()
    assert [(r.bid, r.ask, r.places, r.bid_size, r.bid_size_places) for r in rows] == [
        (110, 120, 2, None, 0),
        (11, 12, 1, None, 0),
        (110, 120, 2, None, 0),
        (11, 12, 1, 250, 2),
    ]
    assert [r.ts_event % 60_000_000_000 // 1_000_000_000 for r in rows] == [1, 2, 3, 4]


def test_the_fixed_point_of_checked_rows_is_right_after_its_memory_is_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rrr.market_data import checked

    monkeypatch.setattr(checked._FixedRows, "_MAX_KEPT", 3)
    prices = [f"1.{n:0{places}d}" for places in (1, 2, 3) for n in range(1, 6)]
    path = _csv(tmp_path, HEADER, *(_quote(i, bid=p, ask="2") for i, p in enumerate(prices + prices[::-1])))
    found = checked.check_file(path, skip_bad_rows=False)
    try:
        rows = [row for frame in found.frames() for row in frame.rows]  # type: ignore[union-attr]
    finally:
        found.close()
    assert [to_decimal(r.bid, r.places) for r in rows] == [Decimal(p) for p in prices + prices[::-1]]
    assert [r.places for r in rows] == [len(p) - 2 for p in prices + prices[::-1]]
