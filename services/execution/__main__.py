"""``rrr-execution``: pre-trade risk, order state machine, paper venue, positions."""

from __future__ import annotations

import sys

from rrr.execution.app import service
from rrr.shared import runner


def main() -> int:
    """Entry point of ``rrr-execution``."""
    return runner.main(service)


if __name__ == "__main__":
    sys.exit(main())
