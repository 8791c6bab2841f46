"""The connection to NATS that every role of the bus shares: client, JetStream context, counters, tracing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Self

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from rrr.shared.counters import Counters
from rrr.shared.errors import RRRError
from rrr.shared.telemetry import extract

_log = logging.getLogger(__name__)

BeforeAck = Callable[[int], None]
"""Called with the number of messages a batch handled, after its work and before its acknowledgement."""


class BusCounters(Counters, kw_only=True):
    """What the bus itself counts, for every service."""

    handled: int = 0
    malformed: int = 0
    # Messages on a subject that is not their own (another family, symbol or shard): dead-lettered.
    mismatched: int = 0
    handler_rejected: int = 0
    handler_errors: int = 0
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    retried: int = 0
    transient_errors: int = 0
    publish_retries: int = 0
    # Publishes refused because the JetStream store was full, and retried.
    store_full: int = 0
    heartbeats_missed: int = 0


class NatsUnavailableError(RRRError):
    """NATS could not be reached in time."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        super().__init__(f"cannot reach NATS at {url} within {timeout_s:g} s; is the system up (`just up`)?")


class Backoff:
    """Exponential back-off between retries of something unavailable, capped, reset on success."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._first = first_s
        self._cap = cap_s
        self.next_delay = first_s

    def reset(self) -> None:
        """Start again from the first delay."""
        self.next_delay = self._first

    async def wait(self, stop: asyncio.Event) -> None:
        """Wait the current delay, or less if ``stop`` is set meanwhile; double the next one."""
        # A retry timer, not synchronisation: ends early when the service is asked to stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.next_delay)
        self.next_delay = min(self.next_delay * 2, self._cap)


class Connection:
    """A service's connection to NATS; the bus's roles (streams, publish, consume, dead letters) build on it."""

    def __init__(
        self,
        nc: Client,
        *,
        service: str,
        tracer: Tracer,
        before_ack: BeforeAck | None = None,
        dlq_key: bytes | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.service = service
        self.tracer = tracer
        self.counters = BusCounters()
        self.closing = False
        # A hook for the fault suite: called where a crash would lose the most (work done, nothing acked).
        self.before_ack = before_ack
        # The system's secret that signs dead letters (see dead_letters); None: they go unsigned.
        self.dlq_key = dlq_key

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        service: str,
        name: str,
        tracer: Tracer | None = None,
        timeout_s: float | None = None,
        before_ack: BeforeAck | None = None,
        dlq_key: bytes | None = None,
    ) -> Self:
        """Connect to NATS, retrying for ever on disconnects (a service outlives a broker restart).

        A service waits for NATS as long as it takes (logging each failed attempt); a command-line tool
        passes ``timeout_s`` to fail with NatsUnavailableError instead.
        """
        bus: Self | None = None

        async def _on_error(exc: Exception) -> None:
            _log.warning("nats: %s", exc)

        async def _on_disconnected() -> None:
            if bus is None or not bus.closing:
                _log.warning("nats: disconnected")

        async def _on_reconnected() -> None:
            _log.info("nats: reconnected")

        connecting = nats.connect(
            servers=[u.strip() for u in url.split(",")],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
        )
        try:
            nc = await asyncio.wait_for(connecting, timeout=timeout_s)
        except TimeoutError:
            raise NatsUnavailableError(url, timeout_s or 0) from None
        bus = cls(nc, service=service, tracer=tracer or trace.get_tracer("rrr"), before_ack=before_ack, dlq_key=dlq_key)
        return bus

    async def close(self) -> None:
        """Drain: finish in-flight publishes and subscriptions, then close."""
        self.closing = True
        if not self.nc.is_closed:
            await self.nc.drain()

    def span(self, name: str, msg: Msg) -> trace.Span:
        """Start a consumer span whose parent is the span that sent ``msg`` (use with ``with``)."""
        return self.tracer.start_span(name, context=extract(msg.headers), kind=SpanKind.CONSUMER)

    def links(self, msgs: list[Msg]) -> list[trace.Link]:
        """Links to the spans that sent ``msgs`` (for a span covering a whole batch)."""
        out = []
        for msg in msgs:
            context = trace.get_current_span(extract(msg.headers)).get_span_context()
            if context.is_valid:
                out.append(trace.Link(context))
        return out
