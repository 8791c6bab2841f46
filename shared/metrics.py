"""Prometheus metrics: what every service measures, read at each scrape and served on ``/metrics``.

Nothing on the hot path calls a metrics library. Services count in plain integers (``Counters``, the bus's
``Traffic``) and in ``Histogram`` below (a bisect and three additions, once per batch, not per message); at
each scrape a collector reads them and prometheus-client renders its text format. Measured on the project's
machine (2 cores): an OpenTelemetry SDK counter's ``add`` with attributes costs 3.9 us and a histogram's
``record`` 4.2 us; prometheus-client's bound ``inc`` 0.3 us and ``observe`` 0.6 us (a lock each); an
attribute ``+= 1`` 0.03 us. The OpenTelemetry Prometheus exporter is a pre-release that registers itself in
prometheus-client's process-wide registry, where the tests run several services in one process; so
prometheus-client alone, with a registry per service, is what the services use.

Names follow Prometheus' conventions: ``rrr_`` first, the unit last (``_seconds``, ``_bytes``), counters
ending in ``_total``. Every sample carries ``service`` and ``shard``; other labels are bounded by what a
service declares (its consumers, a venue, a strategy, a table), never a symbol or an order id.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = [
    "BATCH_BUCKETS",
    "SECONDS_BUCKETS",
    "ConsumerStats",
    "Histogram",
    "MetricSource",
    "ServiceCollector",
    "Traffic",
    "counter",
    "gauge",
    "serve",
    "service_registry",
]

# Handler and write times: 100 us to 10 s.
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Messages in a batch: 1 to the largest batch a consumer takes.
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0)


class Histogram:
    """A Prometheus histogram kept in plain numbers: for one thread (the event loop), no lock."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        # One count per bound and one for +Inf, each holding the observations of its bucket alone.
        self.buckets = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """The buckets as Prometheus has them: ``(le, observations at or below le)``, ``+Inf`` last."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class ConsumerStats:
    """What the bus measures of one consumer or subscription: per batch, never per message."""

    __slots__ = ("batches", "handler_s", "lag_s", "messages", "name", "pending", "plane", "subject")

    def __init__(self, name: str, subject: str) -> None:
        self.name = name
        self.subject = subject
        self.plane = subject.partition(".")[0]
        self.messages = 0
        self.batches = Histogram(BATCH_BUCKETS)
        self.handler_s = Histogram(SECONDS_BUCKETS)
        # JetStream consumers only (from the last batch's acknowledgement subjects): messages left in the
        # stream behind the batch, and how long its oldest message had been stored when it was taken.
        self.pending: int | None = None
        self.lag_s: float | None = None

    def batch(self, size: int, handler_s: float) -> None:
        """Record a batch of ``size`` messages whose handler took ``handler_s``."""
        self.messages += size
        self.batches.observe(size)
        self.handler_s.observe(handler_s)

    def position(self, first_reply: str | None, last_reply: str | None) -> None:
        """Record the consumer's lag from the acknowledgement subjects of a batch's first and last message.

        ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns stored>.<pending>`` (9
        tokens; 11 or 12 with a domain and an account hash): what the server says, free with every message.
        """
        last = _ack_tokens(last_reply)
        first = _ack_tokens(first_reply)
        if last is None or first is None:
            return
        self.pending = int(last[-1])
        self.lag_s = max(time.time_ns() - int(first[-2]), 0) / 1e9


def _ack_tokens(reply: str | None) -> list[str] | None:
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    if len(tokens) == 9:
        return tokens
    if len(tokens) in (11, 12):
        return tokens[:11]
    return None


class Traffic:
    """What a bus received and published: per consumer, and per subject family published."""

    def __init__(self) -> None:
        self.consumers: dict[str, ConsumerStats] = {}
        self.published: dict[str, int] = {}

    def consumer(self, name: str, subject: str) -> ConsumerStats:
        """The stats of the consumer or subscription ``name`` on ``subject``, created at its first use."""
        stats = self.consumers.get(name)
        if stats is None:
            stats = self.consumers[name] = ConsumerStats(name, subject)
        return stats

    def sent(self, subject: str, count: int = 1) -> None:
        """Count ``count`` messages published on ``subject``, under its family (its first two tokens)."""
        plane_end = subject.find(".")
        end = subject.find(".", plane_end + 1)
        family = subject if end < 0 else subject[:end]
        published = self.published
        published[family] = published.get(family, 0) + count

    def collect(self) -> Iterator[Metric]:
        """The bus's metric families."""
        received = counter("rrr_messages_received", "Messages a consumer or subscription took.", ["consumer", "plane"])
        published = counter("rrr_messages_published", "Messages published, per subject family.", ["family"])
        batches = HistogramMetricFamily(
            "rrr_consumer_batch_messages", "Messages in each batch a consumer handed its handler.", labels=["consumer"]
        )
        handler = HistogramMetricFamily(
            "rrr_consumer_handler_duration_seconds", "Time a handler took over one batch.", labels=["consumer"]
        )
        pending = gauge("rrr_consumer_pending_messages", "Messages in the stream behind a consumer's last batch.",
                        ["consumer"])  # fmt: skip
        lag = gauge(
            "rrr_consumer_lag_seconds",
            "How long the oldest message of a consumer's last batch had been stored when the batch was taken.",
            ["consumer"],
        )
        for stats in self.consumers.values():
            received.add_metric([stats.name, stats.plane], stats.messages)
            batches.add_metric([stats.name], stats.batches.cumulative(), stats.batches.sum)
            handler.add_metric([stats.name], stats.handler_s.cumulative(), stats.handler_s.sum)
            if stats.pending is not None:
                pending.add_metric([stats.name], stats.pending)
            if stats.lag_s is not None:
                lag.add_metric([stats.name], stats.lag_s)
        for family, count in self.published.items():
            published.add_metric([family], count)
        yield from (received, published, batches, handler, pending, lag)


class MetricSource:
    """Metrics of a service's own, declared in its ``Plan``: read at each scrape, no cost in between.

    What a heartbeat flattens into names (``live_binance_frames``), a source exports with labels
    (``rrr_feed_frames_total{venue="binance"}``): it gives the heartbeat its figures too.
    """

    def collect(self) -> Iterable[Metric]:
        """The source's metric families, their samples labelled by the source (the runner adds the rest)."""
        raise NotImplementedError

    def heartbeat(self) -> Mapping[str, int]:
        """The source's figures for the heartbeat, by name (none unless a source has some)."""
        return {}


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter family named ``name`` (prometheus-client appends ``_total``)."""
    return CounterMetricFamily(name.removesuffix("_total"), documentation, labels=list(labels))


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    """A gauge family."""
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class ServiceCollector(Collector):
    """Everything one service instance exports, read when scraped.

    The bus's counters and traffic, the service's counters (``rrr_<service>_<name>_total``) and gauges
    (``rrr_<service>_<name>``), its own sources, and ``rrr_service_info``; every sample labelled with
    ``service`` and ``shard``.
    """

    def __init__(
        self,
        *,
        service: str,
        shard: int,
        info: Mapping[str, str],
        bus_counters: Callable[[], Mapping[str, int]],
        traffic: Traffic,
        counters: Callable[[], Mapping[str, int]] | None = None,
        gauges: Callable[[], Mapping[str, int]] | None = None,
        sources: Sequence[MetricSource] = (),
    ) -> None:
        self._service = service
        self._labels = {"service": service, "shard": str(shard)}
        self._info = dict(info)
        self._bus_counters = bus_counters
        self._traffic = traffic
        self._counters = counters
        self._gauges = gauges
        self._sources = tuple(sources)

    def collect(self) -> Iterator[Metric]:
        """Every family, labelled (prometheus-client calls this at each scrape)."""
        for family in self._families():
            family.samples = [sample._replace(labels={**self._labels, **sample.labels}) for sample in family.samples]
            yield family

    def _families(self) -> Iterator[Metric]:
        info = gauge("rrr_service_info", "The instance: its name (as in its heartbeat), version and pid (always 1).",
                     sorted(self._info))  # fmt: skip
        info.add_metric([self._info[k] for k in sorted(self._info)], 1)
        yield info
        yield from _counter_families("rrr_bus", "Counted by the bus of every service", self._bus_counters())
        if self._counters is not None:
            yield from _counter_families(f"rrr_{self._service}", f"Counted by {self._service}", self._counters())
        if self._gauges is not None:
            for name, value in self._gauges().items():
                family = gauge(f"rrr_{self._service}_{name}", f"{self._service}'s gauge {name} (as in its heartbeat).")
                family.add_metric([], value)
                yield family
        yield from self._traffic.collect()
        for source in self._sources:
            yield from source.collect()


def _counter_families(prefix: str, what: str, values: Mapping[str, int]) -> Iterator[Metric]:
    for name, value in values.items():
        family = counter(f"{prefix}_{name}", f"{what}: {name} (as in its heartbeat).")
        family.add_metric([], value)
        yield family


def service_registry(collector: ServiceCollector) -> CollectorRegistry:
    """A registry of one service instance's own: its collector and its process's (CPU, memory, files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


_HTTP_REQUEST_TIMEOUT_S = 5.0
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


async def serve(
    registry: CollectorRegistry, host: str, port: int, *, before: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Server:
    """Serve ``registry`` at ``http://<host>:<port>/metrics`` until the returned server is closed.

    ``before`` is awaited ahead of each rendering (a collector that reads other servers refreshes there).

    A few lines of asyncio rather than prometheus-client's threaded server: the scrape then reads the
    service's numbers on the event loop that changes them, between two of its steps, never half-way.

    Raises:
        OSError: the address cannot be listened on (taken, or not this machine's).
    """

    async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=_HTTP_REQUEST_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, body, kind = b"405 Method Not Allowed", b"GET /metrics\n", b"text/plain"
            elif path != b"/metrics":
                status, body, kind = b"404 Not Found", b"metrics are at /metrics\n", b"text/plain"
            else:
                if before is not None:
                    await before()
                status, body, kind = b"200 OK", generate_latest(registry), _CONTENT_TYPE
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sent no request in time, or went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(_answer, host, port)
