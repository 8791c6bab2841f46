"""``rrr-ui``: serve the live dashboard of a running system (``just ui``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from rrr.deploy.dashboard.config import NAME, UiConfig
from rrr.deploy.dashboard.server import serve
from rrr.shared.config import parse_config, with_local_system
from rrr.shared.errors import RRRError
from rrr.shared.runner import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-ui``: serve until SIGTERM or SIGINT."""
    config, _ = parse_config(
        UiConfig,
        NAME,
        argv,
        description="Serve the live dashboard of a running system: positions, PnL, orders, fills, health.",
        # Run by hand in the project folder, it reads the system's settings from .run/env, as rrr-tap does.
        environ=with_local_system("rrr-ui"),
    )
    setup_logging(config.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop, on_ready=lambda url: print(f"rrr-ui: the dashboard is at {url}", flush=True))

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_main())
    except RRRError as exc:
        print(f"rrr-ui: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
