"""Text from the bus made safe for a terminal: what the tools print comes from anyone who can publish.

A control character printed raw can move the cursor, clear the screen or retitle the window, and an
unbounded field can bury everything else; every field a tool prints passes through ``printable``.
"""

from __future__ import annotations

FIELD_MAX = 200


def printable(value: object, limit: int = FIELD_MAX) -> str:
    """``value`` as text with every non-printable character escaped (``\\x1b``, ``\\n``, ``\\u202e``), cut
    to ``limit`` characters with a note of how many more there were."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"
