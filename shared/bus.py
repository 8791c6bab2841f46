"""The message bus: NATS connection, typed publish, JetStream streams and consumers, dead letters, traces.

Every byte that leaves or enters a service goes through here, so this is where malformed input is caught,
counted and dead-lettered, where trace context is injected and extracted, and where acknowledgement
happens only after a handler finished its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    PubAck,
    StorageType,
    StreamConfig,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from rrr.shared import subjects
from rrr.shared.errors import FatalError, RRRError, TransientError
from rrr.shared.messages import Message, encode
from rrr.shared.telemetry import extract, inject

_log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Header names. Nats-Msg-Id is JetStream's own de-duplication key.
MSG_ID = "Nats-Msg-Id"
DLQ_REASON = "Rrr-Dlq-Reason"
DLQ_SUBJECT = "Rrr-Dlq-Subject"
DLQ_SERVICE = "Rrr-Dlq-Service"
DLQ_DELIVERIES = "Rrr-Dlq-Deliveries"
DLQ_MSG_ID = "Rrr-Dlq-Msg-Id"
ATTEMPTS = "Rrr-Attempts"


class _Backoff:
    """Exponential back-off between retries of something unavailable, capped, reset on success."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._first = first_s
        self._cap = cap_s
        self.next_delay = first_s

    def reset(self) -> None:
        self.next_delay = self._first

    async def wait(self, stop: asyncio.Event) -> None:
        # A retry timer, not synchronisation: ends early when the service is asked to stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.next_delay)
        self.next_delay = min(self.next_delay * 2, self._cap)


class ShardCountError(RRRError):
    """The configured shard count is not the one the system's streams and state were built with."""

    def __init__(self, recorded: int, configured: int) -> None:
        super().__init__(
            f"this system was started with --shards {recorded}, not {configured}: every subject and every "
            f"service's state is split that way. Start with --shards {recorded}, or start over from empty "
            f"streams (`just reset`)"
        )


class NatsUnavailableError(RRRError):
    """NATS could not be reached in time."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        super().__init__(f"cannot reach NATS at {url} within {timeout_s:g} s; is the system up (`just up`)?")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One JetStream stream the system relies on."""

    name: str
    subjects: tuple[str, ...]


MARKET_DATA_STREAM = StreamSpec("RRR_MD", (subjects.MARKET_DATA_ALL,))
SIGNAL_STREAM = StreamSpec("RRR_SIG", (subjects.SIGNAL_ALL,))
COMMAND_STREAM = StreamSpec("RRR_CMD", (subjects.COMMAND_ALL,))
EVENT_STREAM = StreamSpec("RRR_EVT", (subjects.EVENT_ALL,))
DEAD_LETTER_STREAM = StreamSpec("RRR_DLQ", (subjects.DEAD_LETTER_ALL,))
RETRY_STREAM = StreamSpec("RRR_RETRY", (subjects.RETRY_ALL,))
STREAMS = (MARKET_DATA_STREAM, SIGNAL_STREAM, COMMAND_STREAM, EVENT_STREAM, DEAD_LETTER_STREAM, RETRY_STREAM)
DUPLICATE_WINDOW_S = 120.0
META_BUCKET = "RRR_META"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encoded message waiting to be published."""

    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """A decoded JetStream message together with the raw message to acknowledge."""

    msg: Msg
    message: M

    @property
    def seq(self) -> int:
        """The message's sequence number in its stream."""
        return int(self.msg.metadata.sequence.stream)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message its handler could not process: retried (if ``retry``) up to the bound, then dead-lettered."""

    delivery: Delivery[Any]
    reason: str
    retry: bool = True


HandleBatch = Callable[[Sequence[Delivery[Any]]], Awaitable[Sequence[Rejected] | None]]


def _fault_point(point: str, messages: int) -> None:
    """Test hook for the fault suite: ``RRR_FAULT=<point>:<n>`` kills this process with SIGKILL at
    ``point`` once ``n`` messages were handled, exactly as a crash there would."""
    spec = _FAULT
    if spec is None or spec[0] != point:
        return
    _FAULT_COUNT[0] += messages
    if _FAULT_COUNT[0] >= spec[1]:
        _log.warning("fault injection: SIGKILL at %s after %d messages", point, _FAULT_COUNT[0])
        os.kill(os.getpid(), signal.SIGKILL)


def _parse_fault(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.partition(":")
    if point not in {"before_ack"} or not count.isdigit():
        raise ValueError(f"RRR_FAULT: expected before_ack:<n>, got {value!r}")
    return point, int(count)


_FAULT = _parse_fault(os.environ.get("RRR_FAULT"))
_FAULT_COUNT = [0]


def _attempts(msg: Msg) -> int:
    """How many times a message was tried before this delivery (retries carry the count)."""
    try:
        return int((msg.headers or {}).get(ATTEMPTS, "0"))
    except ValueError:
        return 0


def _original_id(msg_id: str) -> str:
    return msg_id.split("~", 1)[0]


class Bus:
    """A service's connection to NATS: typed publishing, consuming and dead-lettering."""

    def __init__(self, nc: Client, *, service: str, tracer: Tracer) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(publish_async_max_pending=4096)
        self.service = service
        self.tracer = tracer
        self.counters: Counter[str] = Counter()
        self.closing = False

    @classmethod
    async def connect(
        cls, url: str, *, service: str, name: str, tracer: Tracer | None = None, timeout_s: float | None = None
    ) -> Bus:
        """Connect to NATS, retrying for ever on disconnects (a service outlives a broker restart).

        A service waits for NATS as long as it takes (logging each failed attempt); a command-line tool
        passes ``timeout_s`` to fail with NatsUnavailableError instead.
        """

        async def _on_error(exc: Exception) -> None:
            _log.warning("nats: %s", exc)

        bus: Bus | None = None

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
        bus = cls(nc, service=service, tracer=tracer or trace.get_tracer("rrr"))
        return bus

    async def close(self) -> None:
        """Drain: finish in-flight publishes and subscriptions, then close."""
        self.closing = True
        if self.js.publish_async_pending():
            await self.js.publish_async_completed()
        if not self.nc.is_closed:
            await self.nc.drain()

    # -- streams ---------------------------------------------------------------------------------------

    async def ensure_streams(self, *, max_age_s: float, update: bool = True) -> None:
        """Create the system's streams; with ``update``, bring an existing one's retention up to date.

        File storage, so that acknowledged messages survive a broker restart. JetStream remembers each
        ``Nats-Msg-Id`` for DUPLICATE_WINDOW_S to drop a re-published duplicate. Tools (replay, dlq) pass
        ``update=False``: the services own the streams' settings.
        """
        for spec in STREAMS:
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                storage=StorageType.FILE,
                max_age=max_age_s,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                if update:
                    await self.js.update_stream(config)

    async def check_shards(self, shards: int) -> None:
        """Refuse to run with another shard count than the system was first started with.

        Subjects carry the shard, and every service's durable state (consumers, snapshots, the event
        history execution rebuilds from) is per shard: a new count would have new shards re-read old
        subjects they never owned. The first service to start records the count.

        Raises:
            ShardCountError: the system runs with another count.
        """
        try:
            kv = await self.js.key_value(META_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await self.js.create_key_value(KeyValueConfig(bucket=META_BUCKET, history=1, storage=StorageType.FILE))
        try:
            await kv.create("shards", str(shards).encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            recorded = int((await kv.get("shards")).value or b"0")
            if recorded != shards:
                raise ShardCountError(recorded, shards) from None

    # -- publishing ------------------------------------------------------------------------------------

    def _headers(self, msg_id: str | None) -> dict[str, str]:
        headers = inject({})
        if msg_id is not None:
            headers[MSG_ID] = msg_id
        return headers

    async def publish(self, subject: str, message: Message) -> None:
        """Publish on core NATS (at most once; a stream on the subject still captures it)."""
        await self.nc.publish(subject, encode(message), headers=self._headers(message.id))

    async def publish_persistent(self, subject: str, message: Message) -> PubAck:
        """Publish to JetStream and wait until the stream stored it; the message id de-duplicates."""
        return await self.js.publish(subject, encode(message), headers=self._headers(message.id))

    def prepare(self, subject: str, message: Message) -> Outgoing:
        """Encode ``message`` now, with the current span's trace context, to publish later in a batch."""
        return Outgoing(subject, encode(message), self._headers(message.id))

    async def publish_persistent_many(
        self, items: Sequence[Outgoing], *, retry_until: asyncio.Event | None = None, ack_timeout_s: float = 5.0
    ) -> int:
        """Publish to JetStream with all acknowledgements in flight together, then wait for every one.

        Returns how many the streams stored as new (a duplicate inside the de-duplication window is
        acknowledged but not stored again, and not counted).

        With ``retry_until``, a failed or unacknowledged publish (broker restarting, connection lost) is
        retried with back-off, all of ``items`` again, until it succeeds or the event is set: the message
        ids make the retries harmless.

        Raises:
            nats.errors.Error, TimeoutError: the publish failed (and ``retry_until`` was not given or is set).
            nats.js.errors.APIError: a stream refused a message.
        """
        backoff = _Backoff()
        while True:
            try:
                futures = [await self.js.publish_async(o.subject, o.data, headers=o.headers) for o in items]
                acks: list[PubAck] = await asyncio.wait_for(asyncio.gather(*futures), timeout=ack_timeout_s)
            except (nats.errors.Error, TimeoutError) as exc:
                if retry_until is None or retry_until.is_set() or isinstance(exc, nats.js.errors.APIError):
                    raise
                self.counters["publish_retries"] += 1
                _log.warning("publishing %d messages failed, retrying: %s", len(items), exc or type(exc).__name__)
                await backoff.wait(retry_until)
                continue
            return sum(1 for ack in acks if not ack.duplicate)

    async def publish_state_output(self, items: Sequence[Outgoing], stop: asyncio.Event, what: str) -> None:
        """Publish what a stateful handler produced, waiting out a broker outage; stop the service if
        asked to stop before it is stored.

        The handler's state has already moved on, so its batch must not be acknowledged without its
        output: the service stops instead, and rebuilds from durable state (snapshot, event stream) on
        restart, where the unacknowledged batch comes again.

        Raises:
            FatalError: ``stop`` was set while the broker was still away.
        """
        try:
            await self.publish_persistent_many(items, retry_until=stop)
        except (nats.errors.Error, TimeoutError) as exc:
            raise FatalError(f"could not publish {what}: {type(exc).__name__}: {exc}") from exc

    # -- dead letters ----------------------------------------------------------------------------------

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` on the dead-letter stream with the reason, and count it.

        Raises:
            TransientError: the dead-letter stream could not store it (the message stays unacknowledged).
        """
        headers = dict(msg.headers or {})
        # Kept aside, not as Nats-Msg-Id: two services dead-lettering the same message must both be kept.
        original_id = headers.pop(MSG_ID, None)
        if original_id is not None:
            headers[DLQ_MSG_ID] = _original_id(original_id)
        subject = subjects.retried_subject(msg.subject)
        headers[DLQ_REASON] = reason[:1000]
        headers[DLQ_SUBJECT] = subject
        headers[DLQ_SERVICE] = self.service
        headers[DLQ_DELIVERIES] = str(_attempts(msg) + 1)
        headers.pop(ATTEMPTS, None)
        try:
            await self.js.publish(subjects.dead_letter(subject), msg.data, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"could not dead-letter a message on {msg.subject}: {exc}") from exc
        self.counters["dead_lettered"] += 1
        _log.warning("dead-lettered a message on %s: %s", subject, reason)

    async def _retry_later(self, msg: Msg) -> None:
        """Hand ``msg`` to this service's retry consumer (``retry.<service>.<subject>``), one attempt more.

        Raises:
            TransientError: the retry stream could not store it.
        """
        headers = dict(msg.headers or {})
        attempts = _attempts(msg) + 1
        headers[ATTEMPTS] = str(attempts)
        original_id = headers.get(MSG_ID)
        if original_id is not None:
            headers[MSG_ID] = f"{_original_id(original_id)}~{attempts}"
        subject = subjects.retry(self.service, subjects.retried_subject(msg.subject))
        try:
            await self.js.publish(subject, msg.data, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"could not hand a message on {msg.subject} to the retries: {exc}") from exc
        self.counters["retried"] += 1

    # -- core subscriptions ----------------------------------------------------------------------------

    async def subscribe(
        self,
        subject: str,
        decoder: msgspec.msgpack.Decoder[Any] | None,
        handler: Callable[[Msg, Any], Awaitable[None]],
        *,
        queue: str = "",
    ) -> Subscription:
        """Subscribe on core NATS; ``handler(msg, decoded)`` runs in a span continuing the sender's trace.

        A payload that does not decode is counted and dead-lettered; a handler that raises is counted and
        logged. Neither stops the subscription.
        """

        async def _callback(msg: Msg) -> None:
            message: Any = None
            if decoder is not None:
                try:
                    message = decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.counters["malformed"] += 1
                    try:
                        await self.dead_letter(msg, f"decode: {exc}")
                    except TransientError as lost:
                        # Core NATS has no redelivery: the message is counted, logged and gone.
                        self.counters["dead_letter_failures"] += 1
                        _log.error("%s", lost)
                    return
            with trace.use_span(self.span(f"handle {subject}", msg), end_on_exit=True):
                try:
                    await handler(msg, message)
                except Exception:
                    self.counters["handler_errors"] += 1
                    _log.exception("handler failed on %s", msg.subject)

        return await self.nc.subscribe(subject, cb=_callback, queue=queue)

    # -- consuming -------------------------------------------------------------------------------------

    async def consume(
        self,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        decoder: msgspec.msgpack.Decoder[Any],
        handle_batch: HandleBatch,
        stop: asyncio.Event,
        batch_size: int = 256,
        max_wait_s: float = 0.5,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        start_seq: int | None = None,
        ordered: bool = False,
        retries: bool = False,
    ) -> None:
        """Consume a durable pull consumer until ``stop`` is set.

        Messages are handed over in stream order, in batches of at most ``batch_size``, and each message
        of a batch is acknowledged only after ``handle_batch`` returned:

        - a payload that does not decode is dead-lettered at once;
        - a message the handler returns as Rejected is, if ``retry`` and this service consumes its
          ``retries``, handed to ``retry.<service>.<subject>`` (at most ``max_deliver`` attempts in all),
          else dead-lettered with the reason;
        - a handler raising TransientError (a dependency is down) gets the same batch again, after a
          back-off, until it goes through or ``stop`` is set (then nothing is acknowledged, and the batch
          is redelivered to the next run);
        - any other exception stops the service (FatalError): its state may be half-updated.

        ``ordered`` is for services whose state depends on the order of messages (strategy, execution):
        their consumer is re-created at start and after every reconnect to deliver from the first message
        not yet processed, from ``start_seq`` (the sequence after a snapshot) at start if given, else from
        the first unacknowledged one.
        """
        # Explicit acknowledgements, one per message. Policy "all" (one per batch) consumes about a third
        # faster, but acknowledges every earlier message too: after a crash or a reconnect, messages left
        # pending on the server come back after newer ones, and acknowledging those would drop them.

        async def _open(resume_at: int | None) -> JetStreamContext.PullSubscription:
            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s,
                max_ack_pending=max(batch_size * 4, 1024),
            )
            if ordered:
                # Messages left pending by a dead process or a dropped connection would come back only
                # after the ack wait, behind newer ones. An ordered consumer is re-created instead, to
                # deliver from the first message not yet processed, in stream order.
                if resume_at is None:
                    try:
                        resume_at = (await self.js.consumer_info(stream, durable)).ack_floor.stream_seq + 1
                    except nats.js.errors.NotFoundError:
                        resume_at = None
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_consumer(stream, durable)
                if resume_at is not None:
                    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                    config.opt_start_seq = max(resume_at, 1)
            return await self.js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)

        psub = await _open(start_seq)
        last_seq: int | None = None if start_seq is None else start_seq - 1
        reconnects = self.nc.stats["reconnects"]
        backoff = _Backoff()
        try:
            while not stop.is_set():
                if ordered and self.nc.stats["reconnects"] != reconnects:
                    try:
                        with contextlib.suppress(nats.errors.Error):
                            await psub.unsubscribe()
                        psub = await _open(None if last_seq is None else last_seq + 1)
                    except nats.errors.Error as exc:
                        _log.warning("re-creating %s after a reconnect failed, will try again: %s", durable, exc)
                        await backoff.wait(stop)
                        continue
                    reconnects = self.nc.stats["reconnects"]
                    _log.info("re-created %s after a reconnect, from stream sequence %s", durable, last_seq)
                try:
                    msgs = await psub.fetch(batch_size, timeout=max_wait_s)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.ConnectionClosedError:
                    return
                except nats.errors.Error as exc:
                    # Reconnecting, or JetStream briefly unavailable: the consumer is durable, so wait and
                    # fetch again from where it was.
                    _log.warning("fetch from %s failed: %s", durable, exc)
                    await backoff.wait(stop)
                    continue
                backoff.reset()
                if not msgs:  # a fetch can end with status messages only
                    continue
                while True:
                    try:
                        await self._process(msgs, decoder, handle_batch, max_deliver, retries)
                        last_seq = int(msgs[-1].metadata.sequence.stream)
                        break
                    except TransientError as exc:
                        self.counters["transient_errors"] += 1
                        _log.warning("will retry a batch from %s: %s", durable, exc)
                        await backoff.wait(stop)
                        if stop.is_set():
                            return  # unacknowledged: redelivered to the next run
                        for msg in msgs:  # still being worked on: do not redeliver it meanwhile
                            with contextlib.suppress(nats.errors.Error):
                                await msg.in_progress()
                backoff.reset()
        finally:
            if not self.nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await psub.unsubscribe()

    async def _process(
        self,
        msgs: list[Msg],
        decoder: msgspec.msgpack.Decoder[Any],
        handle_batch: HandleBatch,
        max_deliver: int,
        retries: bool,
    ) -> None:
        batch: list[Delivery[Any]] = []
        malformed: list[tuple[Msg, str]] = []
        for msg in msgs:
            try:
                batch.append(Delivery(msg, decoder.decode(msg.data)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                malformed.append((msg, f"decode: {exc}"))
        rejected: Sequence[Rejected] = ()
        if batch:
            try:
                rejected = await handle_batch(batch) or ()
            except (TransientError, FatalError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # The handler's state may be half-updated: only a restart, rebuilding from durable state,
                # is safe.
                raise FatalError(f"handler failed on {batch[0].msg.subject}: {type(exc).__name__}: {exc}") from exc
        # Dead letters and retries are stored before the acknowledgement that covers their originals.
        for msg, reason in malformed:
            await self.dead_letter(msg, reason)
        self.counters["malformed"] += len(malformed)
        for failure in rejected:
            msg = failure.delivery.msg
            self.counters["handler_rejected"] += 1
            if failure.retry and retries and _attempts(msg) + 1 < max_deliver:
                await self._retry_later(msg)
            else:
                await self.dead_letter(msg, f"{failure.reason} (after {_attempts(msg) + 1} attempts)")
        _fault_point("before_ack", len(batch))
        for msg in msgs:
            await msg.ack()
        self.counters["handled"] += len(batch) - len(rejected)

    async def read_stream(
        self, stream: str, filter_subject: str, *, last_per_subject: bool = False, fetch: int = 1024
    ) -> list[Msg]:
        """Read what a stream holds now on ``filter_subject`` (everything, or the last per subject).

        For rebuilding state at start-up: an ephemeral consumer is created, asked how many messages it has
        to deliver, and read until it delivered exactly that many.
        """
        policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
        psub = await self.js.pull_subscribe(
            filter_subject,
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=policy, inactive_threshold=30.0),
        )
        try:
            info = await psub.consumer_info()
            remaining = info.num_pending or 0
            out: list[Msg] = []
            while remaining > 0:
                msgs = await psub.fetch(min(fetch, remaining), timeout=5.0)
                out.extend(msgs)
                remaining -= len(msgs)
            return out
        finally:
            await psub.unsubscribe()

    def links(self, batch: Sequence[Delivery[Any]]) -> list[trace.Link]:
        """Links to the spans that sent the messages of a batch (for a span covering the whole batch)."""
        out = []
        for delivery in batch:
            context = trace.get_current_span(extract(delivery.msg.headers)).get_span_context()
            if context.is_valid:
                out.append(trace.Link(context))
        return out

    def span(self, name: str, msg: Msg) -> trace.Span:
        """Start a consumer span whose parent is the span that sent ``msg`` (use with ``with``)."""
        return self.tracer.start_span(name, context=extract(msg.headers), kind=SpanKind.CONSUMER)
