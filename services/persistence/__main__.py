"""``rrr-persistence``: write market data, signals, orders, fills and positions to PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rrr.persistence.app import SERVICE, run
from rrr.persistence.config import PersistenceConfig
from rrr.shared import runner
from rrr.shared.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-persistence``."""
    config, _ = parse_config(
        PersistenceConfig,
        SERVICE,
        argv,
        description="Persistence: consume md.>, sig.> and evt.> of this shard and write them to PostgreSQL, "
        "batched and idempotent.",
    )
    return runner.run(lambda stop: run(config, stop), config)


if __name__ == "__main__":
    sys.exit(main())
