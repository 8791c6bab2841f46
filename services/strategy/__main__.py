"""``rrr-strategy``: run strategies on this shard's quotes and emit signals and orders.

``rrr-strategy --list`` lists the strategies known by name (built-ins and installed entry points).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rrr.shared import runner
from rrr.shared.config import parse_config
from rrr.strategy import loading
from rrr.strategy.app import service
from rrr.strategy.config import StrategyConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-strategy``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--list"]:
        for name, target, doc in loading.available():
            print(f"{name:<20} {target:<50} {doc}")
        return 0
    config, _ = parse_config(
        StrategyConfig, service.name, args, description=f"{service.description} --list: the strategies known by name."
    )
    # Checked before connecting: a strategy that cannot load is one line now, not after NATS is reached.
    try:
        config.load()
    except loading.StrategyLoadError as exc:
        print(f"rrr-strategy: error: {exc}", file=sys.stderr)
        return 2
    return runner.run(lambda stop: service.run(config, stop), config)


if __name__ == "__main__":
    sys.exit(main())
