"""``rrr-strategy``: run per-symbol strategies on this shard's quotes and emit signals and orders."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rrr.shared import runner
from rrr.shared.config import parse_config
from rrr.strategy.app import SERVICE, run
from rrr.strategy.config import StrategyConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-strategy``."""
    config, _ = parse_config(
        StrategyConfig,
        SERVICE,
        argv,
        description="Strategy: consume md.quote.<shard>.*, publish signals (sig.>) and order commands (cmd.order.>).",
    )
    return runner.run(lambda stop: run(config, stop), config)


if __name__ == "__main__":
    sys.exit(main())
