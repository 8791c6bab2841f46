"""The order state machine: every order's status and the transitions it may take."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from cachetools import LRUCache

from rrr.shared.errors import RRRError

Status = Literal["accepted", "rejected", "filled"]

# submitted -> accepted -> filled, or submitted -> rejected. Nothing leaves a terminal state.
_NEXT: dict[Status | None, frozenset[Status]] = {
    None: frozenset({"accepted", "rejected"}),
    "accepted": frozenset({"filled"}),
    "rejected": frozenset(),
    "filled": frozenset(),
}


class IllegalTransitionError(RRRError):
    """An order was asked to move to a status its current one does not lead to."""

    def __init__(self, client_order_id: str, current: Status | None, wanted: Status) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"order {client_order_id}: cannot go from {current or 'new'} to {wanted}")


class Orders:
    """Status of the orders execution has seen, by client order id.

    Bounded: the oldest entries go once ``max_orders`` are held; the streams' de-duplication and the
    database's unique keys still stop a very old duplicate from being stored twice.
    """

    def __init__(self, max_orders: int = 1_000_000) -> None:
        self._status: LRUCache[str, Status] = LRUCache(maxsize=max_orders)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._status

    def __len__(self) -> int:
        return len(self._status)

    def __iter__(self) -> Iterator[str]:
        return iter(self._status)

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
        self._status[client_order_id] = status

    def restore(self, client_order_id: str, status: Status) -> None:
        """Record a status read back from the event stream, keeping the furthest one seen."""
        current = self._status.get(client_order_id)
        if current is None or status in _NEXT[current]:
            self._status[client_order_id] = status
