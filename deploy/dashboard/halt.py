"""The halt button's one action, in one function: ask every execution shard to stop trading.

The page asks for a confirmation, the server checks the request (``rrr.deploy.dashboard.web``) and logs it,
then calls ``publish_halt``. This version of the system has no halt control subject yet: every shard obeying
one control subject is the trading-states work (``ctl.halt``, with ``just halt``). Until it exists,
``publish_halt`` publishes nothing and says so, and the page shows that the halt is not available: a kill
switch that reports success while nothing stops would be worse than none.
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


async def publish_halt(bus: Bus | None, request: HaltRequest) -> None:
    """Publish the halt of all trading, account-wide, on every shard.

    Raises:
        HaltUnavailableError: the system has no halt control yet; nothing was published.
    """
    # Once the halt control subject exists, this is the one place to send it, e.g.
    #   await bus.publish(subjects.HALT, Halt(id=request.id, ts_event=request.ts_ns, ts_init=request.ts_ns,
    #                                         scope="account", reason=request.reason, by=request.requested_by))
    # with `subjects.HALT` added to the ui role's publish permissions (rrr.deploy.nats_permissions).
    del bus, request
    raise HaltUnavailableError()
