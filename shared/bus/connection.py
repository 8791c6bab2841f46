"""The connection to NATS that every role of the bus shares: client, JetStream context, counters, tracing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Self
from urllib.parse import unquote, urlsplit

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from rrr.shared.config import redact
from rrr.shared.counters import Counters
from rrr.shared.errors import RRRError
from rrr.shared.limits import DEFAULT_MAX_MSG_BYTES
from rrr.shared.metrics import Traffic
from rrr.shared.telemetry import extract

if TYPE_CHECKING:
    from rrr.shared.bus.fencing import Fence

_log = logging.getLogger(__name__)

BeforeAck = Callable[[int], None]
# The W3C header that carries a sender's span.
_TRACEPARENT = "traceparent"
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
    # Messages the client dropped because a subscription's queue was full (each one re-creates the
    # consumers that own their position, from the first message not yet handled).
    slow_consumer_drops: int = 0
    heartbeats_missed: int = 0


class NatsUnavailableError(RRRError):
    """NATS could not be reached in time."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = str(redact(url))
        super().__init__(f"cannot reach NATS at {self.url} ({reason}); is the system up (`just up`)?")


async def _reachable(url: str, timeout_s: float) -> str | None:
    """None if a TCP connection to one of ``url``'s servers opens within ``timeout_s``, else why not."""
    reasons = []
    for server in (u.strip() for u in url.split(",")):
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout_s
            )
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                reasons.append("no answer")
            else:
                reasons.append(os.strerror(exc.errno).lower() if exc.errno else str(exc))
            continue
        writer.close()
        return None
    return ", ".join(dict.fromkeys(reasons))


class NatsAuthorizationError(RRRError):
    """NATS refused the connection: an unknown user, a wrong password, or none where one is required."""

    def __init__(self, url: str, user: str | None) -> None:
        self.url = str(redact(url))
        self.user = user
        who = f"user {user!r}" if user else "a connection without a user (anonymous)"
        super().__init__(
            f"NATS at {self.url} refused {who}: expected a user and password it knows (`rrr-stack` gives each "
            "process its own, from .run/secrets/), but it answered 'Authorization Violation'"
        )


class NatsTlsError(RRRError):
    """The TLS handshake with NATS failed: the server's certificate is not one the client's authority signed
    (or not for the name dialled), or the server wants a client certificate it did not get."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = str(redact(url))
        self.reason = reason
        super().__init__(
            f"TLS with NATS at {self.url} failed: expected a server certificate signed by the authority in "
            f"RRR_NATS_TLS_CA (and a client certificate, RRR_NATS_TLS_CERT and _KEY, where the server asks for "
            f"one), but {reason}"
        )


_AUTHORIZATION_VIOLATION = "authorization violation"
_INBOX_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def inbox_prefix(user: str) -> str:
    """The inbox prefix of a connection as ``user``: NATS lets each user subscribe to its own only."""
    return f"_INBOX_{user}"


def url_user(url: str) -> str | None:
    """The user named in a NATS URL (the first of a comma-separated list), or None."""
    user = urlsplit(url.split(",")[0].strip()).username
    return unquote(user) if user else None


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


_ERROR_LOG_EVERY_S = 10.0


class _ErrorLog:
    """Logs connection errors without flooding: a broker that is away fails every half second."""

    def __init__(self) -> None:
        self._last = -_ERROR_LOG_EVERY_S
        self._suppressed = 0

    def log(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last < _ERROR_LOG_EVERY_S:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        _log.warning("nats: %s%s", (str(exc) or type(exc).__name__).removeprefix("nats: "), more)
        self._last, self._suppressed = now, 0


async def _open_client(
    url: str,
    *,
    name: str,
    service: str,
    timeout_s: float | None,
    tls: ssl.SSLContext | None,
    errors: _ErrorLog,
    count: Callable[[Exception], None],
    closing: Callable[[], bool],
) -> Client:
    """A client connected to ``url`` that reconnects for ever once connected (see ``Connection.connect``)."""
    connected = False
    refused = asyncio.Event()
    tls_failure: list[str] = []
    user = url_user(url)

    async def _on_error(exc: Exception) -> None:
        count(exc)
        if not connected and _AUTHORIZATION_VIOLATION in str(exc).lower():
            # Refused at the first connection: wrong credentials do not heal by waiting.
            refused.set()
            return
        if not connected and isinstance(exc, ssl.SSLError):
            # Nor does a certificate that fails verification, or one missing.
            tls_failure.append(getattr(exc, "verify_message", None) or exc.reason or str(exc))
            refused.set()
            return
        errors.log(exc)

    async def _on_disconnected() -> None:
        if not closing():
            _log.warning("nats: %s disconnected", name)

    async def _on_reconnected() -> None:
        _log.info("nats: %s reconnected", name)

    # Each user may subscribe to its own inbox only, so every reply (requests, JetStream acknowledgements
    # and API answers) comes to _INBOX_<user>.
    inbox_user = user or service
    nc = Client()
    connecting = asyncio.ensure_future(
        nc.connect(
            servers=[u.strip() for u in url.split(",")],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; annotated int, any number works
            connect_timeout=5,
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=_on_reconnected,
            inbox_prefix=inbox_prefix(inbox_user) if _INBOX_NAME.fullmatch(inbox_user) else "_INBOX",
            tls=tls,
        )
    )
    refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait((connecting, refusal), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refusal.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
    if tls_failure:
        raise NatsTlsError(url, tls_failure[0])
    if refused.is_set():
        raise NatsAuthorizationError(url, user)
    if connecting.cancelled():
        raise NatsUnavailableError(url, f"no connection within {timeout_s or 0:g} s")
    connecting.result()
    connected = True
    return nc


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
        trace_roots: bool = True,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.service = service
        self.tracer = tracer
        self.counters = BusCounters()
        # Messages taken and published, handler times, consumer lag: read by the metrics (rrr.shared.metrics).
        self.traffic = Traffic()
        self.closing = False
        # A hook for the fault suite: called where a crash would lose the most (work done, nothing acked).
        self.before_ack = before_ack
        # The system's secret that signs dead letters (see dead_letters); None: they go unsigned.
        self.dlq_key = dlq_key
        # The largest message the streams take (set when they are ensured): what an envelope may fill.
        self.max_msg_bytes = DEFAULT_MAX_MSG_BYTES
        # False when a message that arrives outside any trace starts none (no exporter): such a message gets
        # no span at all, the cheapest kind, instead of a non-recording one.
        self.trace_roots = trace_roots
        # Set while this instance holds its shard's lease (a standby beside it): its output is fenced.
        self.fence: Fence | None = None
        # Opens another connection like this one (same servers, user, TLS), named for what it carries; set by
        # ``connect``. None (a bus built around a client): everything shares the one connection.
        self.open_another: Callable[[str], Awaitable[Client]] | None = None

    @contextlib.asynccontextmanager
    async def own_connection(self, purpose: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
        """A connection of its own for one flow-controlled push consumer, drained when the block ends.

        nats-server holds at most 64 MiB for a client that has not read it yet, and lets each flow-controlled
        consumer's window grow to 32 MiB: two such consumers on one connection, behind a busy event loop, fill
        it, and the server drops the connection as a slow consumer, again after every reconnect. One per
        connection keeps every window inside the server's bound, and the replies on the service's own
        connection from queueing behind a backlog.
        """
        if self.open_another is None:
            yield self.nc, self.js
            return
        nc = await self.open_another(purpose)
        try:
            yield nc, nc.jetstream()
        finally:
            if not nc.is_closed:
                try:
                    await nc.drain()
                except nats.errors.Error:
                    await nc.close()

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
        trace_roots: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> Self:
        """Connect to NATS, retrying for ever on disconnects (a service outlives a broker restart).

        ``url`` may name several servers, comma-separated (the nodes of a cluster): the client moves to another
        when its own goes away. With ``tls`` (``rrr.shared.config.client_tls``) every connection is TLS, the
        server's certificate verified.

        A service waits for NATS as long as it takes (logging the failures, at most one line per
        ``_ERROR_LOG_EVERY_S``); a command-line tool passes ``timeout_s`` to fail with NatsUnavailableError
        instead, at once when nothing listens at the URL.
        """
        if timeout_s is not None:
            # A tool run while the system is down says so in a moment, not after the whole timeout.
            unreachable = await _reachable(url, min(timeout_s, 2.0))
            if unreachable is not None:
                raise NatsUnavailableError(url, unreachable)
        bus: Self | None = None
        errors = _ErrorLog()

        def _count(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError) and bus is not None:
                # A subscription's queue was full and the client dropped a message: consumers that own
                # their position re-create themselves from it (see Consuming._consume_owned).
                bus.counters.slow_consumer_drops += 1

        def _closing() -> bool:
            return bus is not None and bus.closing

        nc = await _open_client(
            url, name=name, service=service, timeout_s=timeout_s, tls=tls, errors=errors, count=_count,
            closing=_closing,
        )  # fmt: skip
        bus = cls(
            nc,
            service=service,
            tracer=tracer or trace.get_tracer("rrr"),
            before_ack=before_ack,
            dlq_key=dlq_key,
            trace_roots=trace_roots,
        )

        async def _another(purpose: str) -> Client:
            return await _open_client(
                url, name=f"{name}/{purpose}", service=service, timeout_s=None, tls=tls, errors=errors, count=_count,
                closing=_closing,
            )  # fmt: skip

        bus.open_another = _another
        return bus

    async def close(self) -> None:
        """Drain: finish in-flight publishes and subscriptions, then close.

        A connection that is reconnecting at that moment (the server went away) cannot drain: it is closed.
        What had to be stored was acknowledged before; what was not is the caller's to have waited for.
        """
        self.closing = True
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except nats.errors.ConnectionReconnectingError:
            await self.nc.close()

    def span(self, name: str, msg: Msg) -> trace.Span:
        """Start a consumer span whose parent is the span that sent ``msg`` (use with ``with``)."""
        headers = msg.headers
        if not self.trace_roots and not (headers and _TRACEPARENT in headers):
            return trace.INVALID_SPAN
        return self.tracer.start_span(name, context=extract(headers), kind=SpanKind.CONSUMER)

    def handling(self, name: str, msg: Msg) -> contextlib.AbstractContextManager[object]:
        """``with bus.handling(name, msg):`` runs in a consumer span continuing the sender's trace, or, for a
        message outside any trace when nothing starts traces, in none at all (not even the context manager
        of a span)."""
        span = self.span(name, msg)
        if span is trace.INVALID_SPAN:
            return contextlib.nullcontext()
        return trace.use_span(span, end_on_exit=True)

    def links(self, msgs: list[Msg]) -> list[trace.Link]:
        """Links to the spans that sent ``msgs`` (for a span covering a whole batch)."""
        out = []
        for msg in msgs:
            if not (msg.headers and _TRACEPARENT in msg.headers):
                continue  # sent outside any trace: nothing to link to
            context = trace.get_current_span(extract(msg.headers)).get_span_context()
            if context.is_valid:
                out.append(trace.Link(context))
        return out
