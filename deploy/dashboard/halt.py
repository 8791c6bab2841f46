"""The halt button's one action, in one function: ask every execution shard to stop trading.

The page asks for a confirmation, the server checks the request (``rrr.deploy.dashboard.web``) and logs it,
then calls ``publish_halt``. This version of the system has no halt control yet: a trading state that every
execution shard obeys, set by ``just halt``, is the trading-states work. Until it is there, ``publish_halt``
publishes nothing and says so, and the page shows that the halt is not available: a kill switch that reports
success while nothing stops would be worse than none.
"""

from __future__ import annotations

import msgspec

from rrr.shared.bus import Bus
from rrr.shared.errors import RRRError

__all__ = ["HALT_AVAILABLE", "HaltRequest", "HaltUnavailableError", "publish_halt"]

# Whether this version of the system has a halt control subject that every execution shard obeys.
HALT_AVAILABLE = False


class HaltRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A confirmed halt of all trading, as the dashboard received it."""

    # ``ui-halt-<random hex>``: one per confirmed request, the message id of what is published.
    id: str
    # Wall-clock time of the request, integer nanoseconds (a halt happens now, whatever the market's time).
    ts_ns: int
    reason: str
    # Who asked: ``rrr-ui@<client address>``.
    requested_by: str


class HaltUnavailableError(RRRError):
    """The system has no halt control to publish on."""

    def __init__(self) -> None:
        super().__init__(
            "expected a halt control subject that every execution shard obeys, but this version of the system has "
            "none: stop the strategies (or the whole system, `just down`) to stop trading"
        )


async def publish_halt(bus: Bus | None, request: HaltRequest) -> str:
    """Halt all trading, account-wide, on every shard; return what came of it in one line for the operator
    (which shards confirmed, and how fast).

    Raises:
        HaltUnavailableError: the system has no halt control yet; nothing was published.
    """
    # The one place to wire the halt once the system has it: set the account's trading state to halted, as
    # `just halt` does, with the request's reason and who asked, and describe the shards' confirmations; then
    # set HALT_AVAILABLE and give the ui role (rrr.deploy.nats_permissions) what `just halt`'s role has.
    del bus, request
    raise HaltUnavailableError()
