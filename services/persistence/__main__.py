"""``rrr-persistence``: write market data, signals, orders, fills and positions to PostgreSQL."""

from __future__ import annotations

import sys

from rrr.persistence.app import service
from rrr.shared import runner


def main() -> int:
    """Entry point of ``rrr-persistence``."""
    return runner.main(service)


if __name__ == "__main__":
    sys.exit(main())
