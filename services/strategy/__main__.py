"""``rrr-strategy``: run per-symbol strategies on this shard's quotes and emit signals and orders."""

from __future__ import annotations

import sys

from rrr.shared import runner
from rrr.strategy.app import service


def main() -> int:
    """Entry point of ``rrr-strategy``."""
    return runner.main(service)


if __name__ == "__main__":
    sys.exit(main())
