"""The halt button's one action, in one function: halt all trading, account-wide, on every execution shard.

The page asks for a confirmation, the server checks the request (``rrr.deploy.dashboard.web``) and logs it,
then calls ``publish_halt``: the account's trading state becomes HALTED as ``just halt`` sets it
(``rrr.deploy.control``), every shard cancels its resting orders and refuses new ones, and the answer says which
shards confirmed and how fast.
"""

from __future__ import annotations

import msgspec

from rrr.deploy import control
from rrr.shared.bus import Bus
from rrr.shared.errors import RRRError

__all__ = ["HALT_AVAILABLE", "HaltRequest", "HaltUnavailableError", "publish_halt"]

# Whether this version of the system has a halt that every execution shard obeys (the trading states).
HALT_AVAILABLE = True


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
    """The dashboard cannot reach the execution shards to halt them."""

    def __init__(self) -> None:
        super().__init__(
            "expected a connection to NATS to halt trading, but the dashboard has none yet: use `just halt`, or "
            "stop the whole system (`just down`)"
        )


async def publish_halt(bus: Bus | None, request: HaltRequest) -> str:
    """Halt all trading, account-wide, on every shard; return what came of it in one line for the operator
    (which shards confirmed, and how fast).

    Raises:
        HaltUnavailableError: the dashboard is not connected to NATS; nothing was published.
    """
    if bus is None:
        raise HaltUnavailableError()
    applied = await control.set_state(bus, "halted", reason=f"{request.reason} ({request.requested_by})")
    return applied.describe()
