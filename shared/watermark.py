"""Event-time watermarks: what makes a repeated message harmless however late it comes back.

JetStream drops a re-published message id only within its de-duplication window (two minutes). A
watermark does not expire: for one key (a symbol, or a strategy's orders on a symbol) it holds the newest
event time applied and the ids applied at exactly that time. A message at or before it is a repeat or
out of order, and is not applied again. Its cost is one small record per key, kept with the state it
protects (the strategy's snapshot; execution rebuilds its own from the event stream).
"""

from __future__ import annotations

import msgspec

# Messages of one key at one and the same nanosecond (several orders on one quote, say) are told apart by
# id; past this many, further ones at that nanosecond are taken as new. Bounds the record under hostile
# input.
MAX_IDS_AT_ONE_TIME = 256


class Watermark(msgspec.Struct, kw_only=True, array_like=True):
    """The newest event time applied for one key, and the ids applied at exactly that time."""

    ts: int = -1
    ids: list[str] = msgspec.field(default_factory=list)

    def seen(self, ts: int, message_id: str) -> bool:
        """Whether a message of this key at ``ts`` was applied already, or comes after a newer one."""
        return ts < self.ts or (ts == self.ts and message_id in self.ids)

    def advance(self, ts: int, message_id: str) -> None:
        """Record that the message was applied."""
        if ts > self.ts:
            self.ts = ts
            self.ids = [message_id]
        elif ts == self.ts and len(self.ids) < MAX_IDS_AT_ONE_TIME:
            self.ids.append(message_id)
