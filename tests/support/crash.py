"""A service with a crash point, for the fault suite: it SIGKILLs itself exactly where a crash loses the most.

    python tests/support/crash.py SERVICE --before-ack N [service flags ...]

runs ``rrr-<service>`` with a hook that kills the process once ``N`` messages were handled and before they
are acknowledged: their work is done (rows committed, events published) but JetStream will deliver them
again. The services carry no fault injection of their own; this launcher passes the hook in.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from rrr.shared import runner
from rrr.shared.service import Hooks

_USAGE = "usage: crash.py SERVICE --before-ack N [service flags ...]"


def _kill_after(limit: int) -> Hooks:
    handled = 0

    def _before_ack(messages: int) -> None:
        nonlocal handled
        handled += messages
        if handled >= limit:
            logging.getLogger("crash").warning("crash point: SIGKILL before acknowledging, after %d messages", handled)
            os.kill(os.getpid(), signal.SIGKILL)

    return Hooks(before_ack=_before_ack)


def main(argv: Sequence[str]) -> int:
    """Run the named service with a crash point before its acknowledgements."""
    if len(argv) < 3 or argv[1] != "--before-ack" or not argv[2].isdigit():
        print(_USAGE, file=sys.stderr)
        return 2
    service = importlib.import_module(f"rrr.{argv[0]}.app").service
    return runner.main(service, argv[3:], hooks=_kill_after(int(argv[2])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
