"""Live market data from public venues over WebSocket: one module per venue, normalised to the system's ticks.

``base`` (what every venue shares: the sink, decoded frames, the sequencer), ``symbols`` (one instrument
naming across venues), ``binance``, ``coinbase``, ``kraken`` (each venue's documented frames),
``connection`` (connections, their supervision and the feed of a venue) and ``recorder`` (raw frames to a
file and back).
"""

from __future__ import annotations

from typing import Final

from rrr.market_data.venues import binance, coinbase, kraken
from rrr.market_data.venues.base import Venue

VENUES: Final[dict[str, Venue]] = {venue.name: venue for venue in (binance.VENUE, coinbase.VENUE, kraken.VENUE)}
