"""What checking a replay file costs a row: ``rrr.market_data.feeds.check_file``, the pass that reads every row
(and keeps it as the wire carries it) before the replay publishes anything.

    python bench/replay_check.py [--rows 200000] [--repeats 3] [FILE]

Without FILE, the quotes of ``just bench-compare`` (its seeded EUR/USD random walk, ``ts,symbol,bid,ask``, one
quote a millisecond), the first ``--rows`` of them, written to a temporary CSV. One process, one core; each
repeat a fresh check of the whole file; prints microseconds per row of each repeat and their median. Run it
with each checkout's interpreter to compare them (``/path/to/checkout/.venv/bin/python bench/replay_check.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compare_nautilus import generate, write_csv  # bench/, beside this file

from rrr.market_data.feeds import check_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, help="a quote file (default: the comparison's quotes)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the comparison's quotes [200000]")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rrr-check-") as tmp:
        path = args.file
        if path is None:
            path = write_csv(Path(tmp) / "eurusd.csv", generate(args.rows, 20200101), args.rows)
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            checked = check_file(path, skip_bad_rows=False)
            seconds = time.perf_counter() - started
            checked.close()
            runs.append(seconds / checked.quotes * 1e6)
            print(f"check_file: {checked.quotes:,} rows in {seconds:.2f} s = {runs[-1]:.2f} us/row", file=sys.stderr)
    print(f"median of {args.repeats}: {statistics.median(runs):.2f} us/row ({path.name})")


if __name__ == "__main__":
    main()
