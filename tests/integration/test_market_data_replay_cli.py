"""`rrr-market-data replay` as a user runs it, on files that are broken, careless or hostile.

Each case runs the command as a subprocess against the test's own nats-server and checks its exit status,
its one line of error and that nothing reached the market-data stream.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import nats.js.errors
import pytest

from tests.support.services import client_bus
from tests.support.streams import count_quotes

BIN = Path(sys.executable).parent
HEADER = "ts,symbol,bid,ask"
RANGE = "expected a time from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z"


def _rows(count: int) -> list[str]:
    """``count`` good EUR/USD rows, one millisecond apart."""
    return [
        f"2020-01-01T17:{i // 60_000:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z,EURUSD,1.1212,1.1217"
        for i in range(count)
    ]


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


async def _replay(nats_url: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    # A one-shard system whose services have started: a replay publishes only where someone consumes.
    async with client_bus(nats_url) as bus:
        await bus.check_shards(1)
    argv = [str(BIN / "rrr-market-data"), "replay", str(path), "--no-progress", "--nats-url", nats_url, *flags]
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False, env=os.environ.copy()
    )


async def _quotes_stored(nats_url: str) -> int | None:
    """How many quotes the market-data stream holds, single or batched; None when the replay never created it."""
    nc = await nats.connect(nats_url)
    try:
        try:
            await nc.jetstream().stream_info("RRR_MD")
        except nats.js.errors.NotFoundError:
            return None
        return await count_quotes(nc.jetstream())
    finally:
        await nc.close()


async def _assert_refused(nats_url: str, path: Path, expected: str, *flags: str) -> None:
    done = await _replay(nats_url, path, *flags)
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == f"rrr-market-data replay: error: {expected}\n"
    assert await _quotes_stored(nats_url) in (None, 0)


async def test_replay_of_a_time_past_2262_on_line_5002_stops_before_publishing_anything(
    nats_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "far.csv", HEADER, *_rows(5000), "9999-12-31T00:00:00Z,EURUSD,1.1212,1.1217")
    await _assert_refused(nats_url, path, f"{path}:5002: ts: {RANGE}, got '9999-12-31T00:00:00Z'")


@pytest.mark.parametrize("ts", ["1969-12-31T23:59:59.999999999Z", "2262-04-11T23:47:16.854775808Z"])
async def test_replay_of_a_time_the_messages_cannot_carry_is_a_bad_row_and_publishes_nothing(
    nats_url: str, tmp_path: Path, ts: str
) -> None:
    path = _write(tmp_path / "quotes.csv", HEADER, *_rows(2), f"{ts},EURUSD,1.1212,1.1217")
    await _assert_refused(nats_url, path, f"{path}:4: ts: {RANGE}, got {ts!r}")


async def test_replay_of_a_csv_renamed_parquet_is_refused_in_one_line(nats_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "quotes.parquet", HEADER, *_rows(3))
    await _assert_refused(
        nats_url,
        path,
        f"{path}: not readable as Parquet: Parquet magic bytes not found in footer. Either the file is corrupted or "
        "this is not a parquet file.",
    )


async def test_replay_of_a_directory_is_refused_in_one_line(nats_url: str, tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.mkdir()
    await _assert_refused(nats_url, path, f"{path}: is a directory; expected a .csv or .parquet file")


async def test_replay_of_a_price_of_100000_digits_names_it_in_one_short_line(nats_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "quotes.csv", HEADER, *_rows(2), f"2020-01-01T18:00:00Z,EURUSD,{'1' * 100_000},2")
    await _assert_refused(
        nats_url,
        path,
        f"{path}:4: bid {'1' * 80}... (100,000 characters) is out of range: at most 18 digits before the point "
        "and 28 after",
    )


async def test_replay_skips_repeated_rows_and_warns_once_about_rows_out_of_order(nats_url: str, tmp_path: Path) -> None:
    t0, t1, t2 = _rows(3)
    path = _write(
        tmp_path / "quotes.csv",
        HEADER,
        t0,
        t1,
        t0,  # line 4: a repeat of line 2
        t0.replace("1.1212", "1.1211"),  # line 5: a new quote, earlier than line 3
        t2,
        t1.replace("1.1212", "1.1211"),  # line 7: a new quote, earlier than line 6
        t2,  # a repeat of line 6
    )

    done = await _replay(nats_url, path)

    assert done.returncode == 0, done
    assert (
        f"replayed {path}: rows=7 published=5 duplicates=0 duplicate_rows=2 first_duplicate_line=4 out_of_order=2 "
        "bad_rows=0 "
    ) in done.stdout
    assert done.stderr == (
        f"rrr-market-data replay: warning: {path}: 2 rows out of order (first at line 5), earlier than a row before "
        "them of the same symbol; they were published in file order, and the strategy skips them: it applies a "
        "symbol's quotes only in event-time order\n"
    )
    assert await _quotes_stored(nats_url) == 5


async def test_replay_of_a_file_larger_than_the_limit_is_refused_in_one_line(nats_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "quotes.csv", HEADER, *_rows(30_000))
    size_mb = path.stat().st_size / 2**20
    await _assert_refused(
        nats_url,
        path,
        f"{path}: expected a file of at most 1 MB (--replay-max-file-mb raises the limit), got {size_mb:,.1f} MB",
        "--replay-max-file-mb",
        "1",
    )


async def test_replay_of_more_rows_than_the_limit_publishes_nothing_even_skipping_bad_rows(
    nats_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "quotes.csv", HEADER, *_rows(5))
    await _assert_refused(
        nats_url,
        path,
        f"{path}:5: expected at most 3 data rows (--replay-max-rows raises the limit), got more",
        "--replay-max-rows",
        "3",
        "--skip-bad-rows",
    )


async def test_replay_skipping_bad_rows_lists_the_first_hundred_and_counts_the_rest(
    nats_url: str, tmp_path: Path
) -> None:
    good = _rows(2)
    path = _write(tmp_path / "quotes.csv", HEADER, good[0], *["x,EURUSD,1,2"] * 150, good[1])

    done = await _replay(nats_url, path, "--skip-bad-rows")

    assert done.returncode == 0, done
    assert "rows=152 published=2 duplicates=0 duplicate_rows=0 out_of_order=0 bad_rows=150 " in done.stdout
    lines = done.stderr.splitlines()
    assert lines[0] == (f"skipped bad row: {path}:3: ts 'x' is not an ISO-8601 time such as 2020-01-01T17:00:00.065Z")
    assert len(lines) == 101
    assert lines[-1] == "skipped 50 more bad rows"
    assert await _quotes_stored(nats_url) == 2


# A row at line 2 that reads cleanly, then the case's own lines from line 3 on.
_GOOD = "2020-01-01T17:00:00.065Z,EURUSD,1.1212,1.1217"
_SYMBOL_RULE = "expected 1-32 characters of A-Z, 0-9, '_' or '-', starting with a letter or digit"
_COLUMNS = "expected columns ts,symbol,bid,ask[,bid_size,ask_size], got"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "1: file is empty; expected a header line"),
        (b"ts,symbol,bid\n2020-01-01T17:00:00Z,EURUSD,1.1\n", f"1: {_COLUMNS} 'ts,symbol,bid' (missing ask)"),
        (f"{HEADER},venue\n{_GOOD},X\n".encode(), f"1: {_COLUMNS} 'ts,symbol,bid,ask,venue' (unknown 'venue')"),
        (f"{HEADER},\n{_GOOD},\n".encode(), f"1: {_COLUMNS} 'ts,symbol,bid,ask,' (unknown '')"),
        (f"{HEADER},ask\n{_GOOD},1.2\n".encode(), f"1: {_COLUMNS} 'ts,symbol,bid,ask,ask' (twice ask)"),
        (f"{HEADER}\n{_GOOD}\n{_GOOD},1\n".encode(), "3: expected 4 fields, got 5"),
        (f"{HEADER}\n{_GOOD}\n   \n".encode(), "3: expected 4 fields, got 1"),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,NaN,1.1217\n".encode(),
            "3: bid 'NaN' is not a finite number",
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,1.1212,Infinity\n".encode(),
            "3: ask 'Infinity' is not a finite number",
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,-1.1212,1.1217\n".encode(),
            "3: bid must be > 0, got -1.1212",
        ),
        (f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,0,1.1217\n".encode(), "3: bid must be > 0, got 0"),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,1.1218,1.1217\n".encode(),
            "3: crossed quote: bid 1.1218 > ask 1.1217",
        ),
        (
            f"{HEADER},bid_size,ask_size\n{_GOOD},1,1\n2020-01-01T17:00:01Z,EURUSD,1.1212,1.1217,-1,1\n".encode(),
            "3: bid_size must be >= 0, got -1",
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,1_000,2000\n".encode(),
            "3: bid '1_000' is not a decimal number",
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,\u0661,2\n".encode(),
            "3: bid '\u0661' is not a decimal number",
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,EURUSD,1.1\x00,2\n".encode(),
            "3: bid '1.1\\x00' is not a decimal number",
        ),
        (f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,md.>,1,2\n".encode(), f"3: invalid symbol 'md.>': {_SYMBOL_RULE}"),
        (f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,*,1,2\n".encode(), f"3: invalid symbol '*': {_SYMBOL_RULE}"),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01Z,\x1b[2J,1,2\n".encode(),
            f"3: invalid symbol '\\x1b[2J': {_SYMBOL_RULE}",  # a terminal escape is shown, not obeyed
        ),
        (
            f"{HEADER}\n{_GOOD}\n2020-01-01T17:00:01,EURUSD,1,2\n".encode(),
            "3: ts '2020-01-01T17:00:01' has no zone; expected UTC such as 2020-01-01T17:00:00.065Z",
        ),
        (
            f"{HEADER}\n{_GOOD}\n".encode() + b"2020-01-01T17:00:01Z,EUR\xe9,1,2\n",
            "3: expected UTF-8 text, got byte 0xe9 at character 25 of the line",
        ),
    ],
    ids=[
        "empty",
        "missing-column",
        "extra-column",
        "trailing-comma-in-header",
        "column-twice",
        "extra-field",
        "blank-looking-line",
        "nan",
        "infinity",
        "negative-price",
        "zero-price",
        "bid-above-ask",
        "negative-size",
        "underscore-digits",
        "arabic-indic-digit",
        "nul-byte",
        "subject-wildcards",
        "subject-star",
        "terminal-escape",
        "no-zone",
        "not-utf8",
    ],
)
async def test_replay_of_a_careless_or_hostile_file_fails_in_one_line_and_publishes_nothing(
    nats_url: str, tmp_path: Path, content: bytes, error: str
) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(content)
    await _assert_refused(nats_url, path, f"{path}:{error}")


async def test_replay_of_a_spreadsheet_export_with_a_byte_order_mark_and_crlf_publishes_every_row(
    nats_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(f"{line}\r\n" for line in [HEADER, *_rows(2)]).encode())
    done = await _replay(nats_url, path)
    assert (done.returncode, done.stderr) == (0, ""), done
    assert "rows=2 published=2 " in done.stdout
    assert await _quotes_stored(nats_url) == 2


async def test_replay_of_a_header_alone_publishes_nothing_and_says_so(nats_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "quotes.csv", HEADER)
    done = await _replay(nats_url, path)
    assert (done.returncode, done.stderr) == (0, ""), done
    assert "rows=0 published=0 " in done.stdout
    assert await _quotes_stored(nats_url) in (None, 0)
