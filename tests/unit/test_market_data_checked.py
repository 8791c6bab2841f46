"""A replay file checked in parts, a process each: the same rows, ids, counts and errors as one pass, or one pass."""

from __future__ import annotations

import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import pytest

from rrr.market_data.checked import CheckedFile, check_file
from rrr.market_data.replay import ReadLimits, UnsupportedFileError, csv_spans
from rrr.shared.errors import BadRowError

HEADER = b"ts,symbol,bid,ask"


def _row(second: int, symbol: str = "EURUSD", bid: str = "1.1", ask: str = "1.2") -> bytes:
    clock = f"{17 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    return f"2020-01-01T{clock}.000Z,{symbol},{bid},{ask}".encode()


def _file(tmp_path: Path, lines: list[bytes], ends: list[bytes] | None = None) -> Path:
    """The lines, each ended by LF, or by the line end of ``ends`` in turn."""
    ends = ends or [b"\n"]
    path = tmp_path / "quotes.csv"
    path.write_bytes(b"".join(line + ends[i % len(ends)] for i, line in enumerate([HEADER, *lines])))
    return path


def _everything(checked: CheckedFile) -> dict[str, Any]:
    try:
        rows = [(r.id, r.symbol, r.ts_event, r.bid, r.ask, r.places) for f in checked.frames() for r in f.rows]  # type: ignore[union-attr]
        return {"rows": rows, "counts": checked.counts, "bad": checked.bad_rows, "quotes": checked.quotes}
    finally:
        checked.close()


def _check(path: Path, parts: int, **kwargs: Any) -> tuple[dict[str, Any], list[int]]:
    told: list[int] = []
    checked = check_file(path, parts=parts, on_progress=told.append, **kwargs)
    return _everything(checked), told


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    spills = tmp_path / "spills"
    spills.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spills))
    return spills


def _left_behind(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "spills").iterdir()) + [p.name for p in multiprocessing.active_children()]


def test_a_file_checked_in_parts_has_the_rows_ids_counts_and_reasons_of_one_pass(tmp_path: Path) -> None:
    # Two symbols, lines ended by LF, CRLF and CR, blank lines, a repeat and a row out of order inside a part,
    # bad rows skipped: each part numbers its lines from where it starts in the file.
    lines = []
    for i in range(400):
        lines.append(_row(i, "EURUSD", bid=f"1.{1000 + i}", ask="1.9"))
        lines.append(_row(i, "USDJPY", bid="150.1", ask="150.2"))
        if i % 97 == 5:
            lines.append(b"")
        if i % 101 == 7:
            lines.append(_row(i, "USDJPY", bid="0", ask="150.2"))
        if i % 89 == 3:
            lines.append(lines[-1])
        if i % 83 == 11:
            lines.append(_row(i - 5, "EURUSD"))
    path = _file(tmp_path, lines, ends=[b"\n", b"\r\n", b"\n", b"\r"])

    one, told_one = _check(path, 1, skip_bad_rows=True)
    assert min(one["counts"].duplicate_rows, one["counts"].out_of_order, one["counts"].bad_rows) > 0
    for parts in (2, 3, 4):
        assert csv_spans(path, parts, 0) is not None
        found, told = _check(path, parts, skip_bad_rows=True)
        assert found == one
        assert sum(told) == sum(told_one) == one["quotes"]
    assert _left_behind(tmp_path) == []


def test_a_symbol_whose_times_cross_a_cut_is_read_again_in_one_pass_and_its_repeat_stored_once(
    tmp_path: Path,
) -> None:
    # The last row repeats the first: only one pass over the whole file can tell.
    lines = [_row(i, bid=f"1.{1000 + i}") for i in range(200)]
    lines.append(lines[0])
    path = _file(tmp_path, lines)

    one, _ = _check(path, 1, skip_bad_rows=False)
    found, told = _check(path, 2, skip_bad_rows=False)
    assert found == one
    assert (found["quotes"], found["counts"].duplicate_rows, found["counts"].first_duplicate_line) == (200, 1, 202)
    assert sum(told) == 200  # each row told once, the second pass only beyond what the parts told
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("where", [10, 190])
def test_a_bad_row_in_any_part_is_refused_with_its_line_and_reason_as_in_one_pass(tmp_path: Path, where: int) -> None:
    lines = [_row(i) for i in range(200)]
    lines[where] = _row(where, bid="abc")
    path = _file(tmp_path, lines, ends=[b"\r\n"])

    refusals = []
    for parts in (1, 2):
        with pytest.raises(BadRowError) as refused:
            check_file(path, skip_bad_rows=False, parts=parts)
        refusals.append((refused.value.line, refused.value.reason))
    assert refusals == [(where + 2, "bid 'abc' is not a decimal number")] * 2
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (ReadLimits(max_rows=150), "expected at most 150 data rows (--replay-max-rows raises the limit), got more"),
        (ReadLimits(max_symbols=1), "expected at most 1 symbols (--replay-max-symbols raises the limit), got more"),
    ],
)
def test_a_file_beyond_a_limit_only_its_later_parts_reach_is_refused_as_in_one_pass(
    tmp_path: Path, limits: ReadLimits, expected: str
) -> None:
    # The second symbol and the 151st row are in the second half: each part alone is within the limits.
    lines = [_row(i) for i in range(120)] + [_row(i, "USDJPY", bid="150", ask="151") for i in range(80)]
    path = _file(tmp_path, lines)

    for parts in (1, 2):
        with pytest.raises(UnsupportedFileError) as refused:
            check_file(path, skip_bad_rows=False, limits=limits, parts=parts)
        assert str(refused.value).endswith(expected)
    assert _left_behind(tmp_path) == []


def test_a_file_holding_a_quoted_field_is_not_cut_and_reads_as_one_pass(tmp_path: Path) -> None:
    # A quoted field may span lines: only the reader that began the row knows where it ends.
    lines = (
        [_row(i) for i in range(100)]
        + [b'2020-01-01T18:00:00.000Z,"EURUSD",1.1,1.2']
        + [_row(3700 + i) for i in range(100)]
    )
    path = _file(tmp_path, lines)

    assert csv_spans(path, 2, 0) is None
    assert _check(path, 2, skip_bad_rows=False) == _check(path, 1, skip_bad_rows=False)


def test_a_file_is_cut_only_after_a_line_feed_and_each_stretch_starts_at_its_line(tmp_path: Path) -> None:
    path = _file(tmp_path, [_row(i) for i in range(9)], ends=[b"\r\n", b"\r", b"\n"])
    data = path.read_bytes()

    spans = csv_spans(path, 3, 0)
    assert spans is not None
    assert len(spans) == 3
    assert [s.start for s in spans[1:]] == [s.end for s in spans[:-1]]
    assert spans[-1].end is None
    for span in spans[1:]:
        assert data[span.start - 1 : span.start] == b"\n"
        before = data[: span.start].decode()
        assert span.first_line == len(before.splitlines()) + 1
    assert csv_spans(path, 3, len(data) + 1) is None  # smaller than asked for: one pass
    assert csv_spans(path, 1, 0) is None
    cr_only = tmp_path / "cr.csv"
    cr_only.write_bytes(data.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    assert csv_spans(cr_only, 2, 0) is None


def test_a_check_refused_in_its_first_part_leaves_no_process_and_no_file(tmp_path: Path) -> None:
    lines = [_row(i) for i in range(5000)]
    lines[3] = _row(3, bid="-1")
    path = _file(tmp_path, lines)

    with pytest.raises(BadRowError, match="bid must be > 0"):
        check_file(path, skip_bad_rows=False, parts=2)
    assert _left_behind(tmp_path) == []
