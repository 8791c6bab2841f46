"""Counters: a service's numbers as a typed structure, one place per service, reported in every heartbeat."""

from __future__ import annotations

import msgspec


class Counters(msgspec.Struct, kw_only=True):
    """Base of a counters structure: integer fields only, each starting at 0.

    A subclass declares its fields; code increments them as attributes (``counters.orders_filled += 1``),
    so a misspelt name is a type error rather than a new counter.
    """

    def values(self) -> dict[str, int]:
        """Every counter by name, zeros included."""
        return msgspec.structs.asdict(self)
