"""The board: the newest value of every section of the page, encoded once, handed to the browsers.

Sources (the database reader, the bus watcher) put whole sections on it; a section equal to the one held is
no news and goes nowhere. Each browser gets, at its own pace and at most ``push_hz`` times a second, one
message with the sections that changed since its last one (``rrr.deploy.dashboard.hub``).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = ["MAX_SECTION_BYTES", "Board"]

# No section is larger than this encoded: every list in one is bounded well below it, so a larger one is a bug
# that would otherwise reach every browser.
MAX_SECTION_BYTES = 512 * 1024


class Board:
    """The newest encoded value of each section, and who to tell when one changes."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(decimal_format="string")
        self.sections: dict[str, bytes] = {}
        self._listeners: list[Callable[[str, bytes], None]] = []

    def listen(self, listener: Callable[[str, bytes], None]) -> None:
        """Call ``listener(name, encoded)`` on every change from now on."""
        self._listeners.append(listener)

    def update(self, name: str, value: object) -> None:
        """Hold ``value`` as section ``name``; tell the listeners when it differs from the one held."""
        encoded = self._encoder.encode(value)
        if len(encoded) > MAX_SECTION_BYTES:
            raise ValueError(f"section {name}: expected at most {MAX_SECTION_BYTES} bytes, got {len(encoded)}")
        if self.sections.get(name) == encoded:
            return
        self.sections[name] = encoded
        for listener in self._listeners:
            listener(name, encoded)

    def snapshot(self) -> bytes:
        """Every section as one JSON object."""
        return message(self.sections)


def message(sections: dict[str, bytes]) -> bytes:
    """One JSON object of encoded sections, without decoding them again."""
    parts = [b'"' + name.encode() + b'":' + data for name, data in sections.items()]
    return b"{" + b",".join(parts) + b"}"
