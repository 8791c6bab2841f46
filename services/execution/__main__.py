"""``rrr-execution``: pre-trade risk, order state machine, paper venue, positions."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rrr.execution.app import SERVICE, run
from rrr.execution.config import ExecutionConfig
from rrr.shared import runner
from rrr.shared.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-execution``."""
    config, _ = parse_config(
        ExecutionConfig,
        SERVICE,
        argv,
        description="Execution: consume cmd.order.<shard>.*, publish order events and fills (evt.order.>) "
        "and positions (evt.position.>).",
    )
    return runner.run(lambda stop: run(config, stop), config)


if __name__ == "__main__":
    sys.exit(main())
