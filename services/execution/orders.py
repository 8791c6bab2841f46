"""The order state machine: every order's status and the transitions it may take."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Literal

from rrr.shared.errors import RRRError

Status = Literal["accepted", "partially_filled", "filled", "canceled", "rejected", "expired"]

# new -> accepted -> partially filled (once per fill that leaves a remainder) -> filled, canceled or expired;
# new -> rejected. Nothing leaves a terminal state, and nothing goes back.
_NEXT: dict[Status | None, frozenset[Status]] = {
    None: frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"partially_filled", "filled", "canceled", "expired"}),
    "partially_filled": frozenset({"partially_filled", "filled", "canceled", "expired"}),
    "rejected": frozenset(),
    "filled": frozenset(),
    "canceled": frozenset(),
    "expired": frozenset(),
}
TERMINAL: frozenset[Status] = frozenset({"filled", "canceled", "rejected", "expired"})


def is_open(status: Status | None) -> bool:
    """Whether an order of ``status`` may still fill: accepted or partially filled."""
    return status == "accepted" or status == "partially_filled"


class IllegalTransitionError(RRRError):
    """An order was asked to move to a status its current one does not lead to."""

    def __init__(self, client_order_id: str, current: Status | None, wanted: Status) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"order {client_order_id}: cannot go from {current or 'new'} to {wanted}")


class Orders:
    """Status of the orders execution has seen, by client order id.

    Bounded: once ``max_orders`` are held, the one updated longest ago goes; the streams' de-duplication,
    the watermarks and the database's unique keys still stop a very old duplicate from being stored twice.
    """

    def __init__(self, max_orders: int = 1_000_000) -> None:
        self._max = max_orders
        # Least recently updated first.
        self._status: OrderedDict[str, Status] = OrderedDict()

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._status

    def __len__(self) -> int:
        return len(self._status)

    def __iter__(self) -> Iterator[str]:
        return iter(self._status)

    def items(self) -> Iterator[tuple[str, Status]]:
        """Every order held with its status, least recently updated first (for a snapshot)."""
        return iter(self._status.items())

    def status(self, client_order_id: str) -> Status | None:
        """The order's status, or None if it was never seen."""
        return self._status.get(client_order_id)

    def transition(self, client_order_id: str, status: Status) -> None:
        """Move an order to ``status``.

        Raises:
            IllegalTransitionError: the current status does not lead to ``status``.
        """
        current = self._status.get(client_order_id)
        if status not in _NEXT[current]:
            raise IllegalTransitionError(client_order_id, current, status)
        self._set(client_order_id, status)

    def restore(self, client_order_id: str, status: Status) -> None:
        """Record a status read back from the event stream or a snapshot, keeping the furthest one seen."""
        current = self._status.get(client_order_id)
        if current is None or status in _NEXT[current]:
            self._set(client_order_id, status)

    def _set(self, client_order_id: str, status: Status) -> None:
        self._status[client_order_id] = status
        self._status.move_to_end(client_order_id)
        if len(self._status) > self._max:
            self._status.popitem(last=False)
