"""What market-data exports beyond its counters: the health of each live venue feed, labelled by venue."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import Metric

from rrr.market_data import live
from rrr.market_data.venues.connection import FeedHealth, VenueFeed
from rrr.shared.clock import Clock
from rrr.shared.metrics import MetricSource, counter, gauge

# FeedHealth's counts, exported as ``rrr_feed_<name>_total{venue}``.
_COUNTS = {
    "frames": "Frames received.",
    "ticks": "Quotes and trades the frames held.",
    "reconnects": "Connections opened again after a drop.",
    "connect_failures": "Connection attempts that failed.",
    "gaps": "Jumps in the venue's contiguous ids.",
    "gap_events_missed": "Events the gaps left out.",
    "malformed": "Frames refused as not the venue's protocol or no market's data.",
    "duplicates": "Events received again (a rollover's overlap, a repeated frame).",
    "stale_connections": "Connections dropped for want of frames.",
    "stale_symbols": "Connections dropped because one of their symbols fell silent.",
    "rollovers": "Connections replaced before the venue's scheduled close.",
    "venue_errors": "Errors the venue sent.",
    "dropped_backlog": "Ticks dropped because the publishing backlog was full.",
}


class FeedMetrics(MetricSource):
    """The live feeds' health: for the heartbeat as ``live_<venue>_<what>``, for Prometheus by venue."""

    def __init__(self, feeds: Sequence[VenueFeed], clock: Clock) -> None:
        self._feeds = feeds
        self._clock = clock

    def heartbeat(self) -> Mapping[str, int]:
        """Every feed's figures, as the heartbeat has always carried them."""
        return live.health(self._feeds, self._clock)

    def collect(self) -> Iterator[Metric]:
        """``rrr_feed_connected``, ``rrr_feed_last_frame_age_seconds`` and the counts, per venue."""
        healths: list[FeedHealth] = [feed.health for feed in self._feeds]
        connected = gauge("rrr_feed_connected", "Connections of the venue feed that are up.", ["venue"])
        age = gauge("rrr_feed_last_frame_age_seconds", "Time since the venue's last frame (none yet: absent).",
                    ["venue"])  # fmt: skip
        counts = {name: counter(f"rrr_feed_{name}", text, ["venue"]) for name, text in _COUNTS.items()}
        now = self._clock()
        for health in healths:
            connected.add_metric([health.venue], health.connected)
            if health.last_frame_ns:
                age.add_metric([health.venue], max(now - health.last_frame_ns, 0) / 1e9)
            for name, family in counts.items():
                family.add_metric([health.venue], getattr(health, name))
        yield connected
        yield age
        yield from counts.values()
