"""Time as a dependency: a clock is passed in, never read from the wall directly by handlers.

Event time comes from the messages themselves; what a handler stamps of its own (``ts_init``) comes from
the clock it was given, so that a backtest, a replay and a test can each supply theirs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""Returns the current time in integer nanoseconds since the Unix epoch."""


def wall_clock() -> int:
    """The system's wall-clock time in integer nanoseconds."""
    return time.time_ns()
