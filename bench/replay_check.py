"""What checking a replay file costs a row: ``rrr.market_data.checked.check_file``, the pass that reads every row
(and keeps it as the wire carries it) before the replay publishes anything.

    python bench/replay_check.py [--rows 200000] [--repeats 3] [--parts 1 --parts 0] [FILE]

Without FILE, the quotes of ``just bench-compare`` (its seeded EUR/USD random walk, ``ts,symbol,bid,ask``, one
quote a millisecond), the first ``--rows`` of them, written to a temporary CSV. Each repeat a fresh check of the
whole file, for each ``--parts`` in turn (1: one pass on one core; 0: as the replay does, in parts on the cores
there are, for a file of 8 MB or more); prints the wall time per row of each repeat and the median of each.
Run it with each checkout's interpreter to compare them (``/path/to/checkout/.venv/bin/python
bench/replay_check.py --parts 1``; a checkout before parts existed takes no ``--parts``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compare_nautilus import generate, write_csv  # bench/, beside this file

from rrr.market_data.checked import check_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, help="a quote file (default: the comparison's quotes)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the comparison's quotes [200000]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parts", type=int, action="append", help="processes to check in (0: the replay's own choice) [1 and 0]"
    )
    args = parser.parse_args()
    parts_runs = args.parts or [1, 0]
    with tempfile.TemporaryDirectory(prefix="rrr-check-") as tmp:
        path = args.file
        if path is None:
            path = write_csv(Path(tmp) / "eurusd.csv", generate(args.rows, 20200101), args.rows)
        runs: dict[int, list[float]] = {parts: [] for parts in parts_runs}
        for _ in range(args.repeats):
            for parts in parts_runs:
                started = time.perf_counter()
                checked = check_file(path, skip_bad_rows=False, parts=parts or None)
                seconds = time.perf_counter() - started
                checked.close()
                runs[parts].append(seconds / checked.quotes * 1e6)
                print(
                    f"check_file, parts={parts or 'auto'} ({len(checked.spills)} read): {checked.quotes:,} rows in "
                    f"{seconds:.2f} s = {runs[parts][-1]:.2f} us/row",
                    file=sys.stderr,
                )
    for parts, times in runs.items():
        print(
            f"parts={parts or 'auto'}: median of {args.repeats}: {statistics.median(times):.2f} us/row "
            f"({path.name}, {checked.quotes:,} rows)"
        )


if __name__ == "__main__":
    main()
