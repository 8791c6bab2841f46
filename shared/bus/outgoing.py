"""What publishing sends: an encoded message with its subject and headers, and JetStream's de-duplication key."""

from __future__ import annotations

from dataclasses import dataclass

# JetStream's own de-duplication key.
MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encoded message waiting to be published."""

    subject: str
    data: bytes
    headers: dict[str, str]
    # How many messages it carries: more than one for an envelope (rrr.shared.bus.envelopes).
    messages: int = 1
