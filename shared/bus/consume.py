"""Consuming: durable JetStream consumers handing typed batches to a handler, and core subscriptions.

Every byte that enters a service comes through here, so this is where malformed input is caught, counted
and dead-lettered, and where acknowledgement happens only after a handler finished its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from rrr.shared import subjects
from rrr.shared.bus.connection import Backoff
from rrr.shared.bus.dead_letters import DeadLetters, attempts
from rrr.shared.bus.envelopes import open_envelope
from rrr.shared.bus.streams import StreamSpec
from rrr.shared.errors import FatalError, MisroutedMessageError, TransientError
from rrr.shared.messages import Message, check_subject

_log = logging.getLogger(__name__)
# How often an ordered push consumer's server says it is alive when it has nothing to send: two missed
# make the client re-create the consumer (after a server restart, say).
_IDLE_HEARTBEAT_S = 2.0

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """A decoded JetStream message together with the raw message to acknowledge."""

    msg: Msg
    message: M

    @property
    def seq(self) -> int:
        """The message's sequence number in its stream."""
        return stream_seq(self.msg)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message its handler could not process: retried (if ``retry``) up to the bound, then dead-lettered."""

    delivery: Delivery[Any]
    reason: str
    retry: bool = True


HandleBatch = Callable[[Sequence[Delivery[M]]], Awaitable[Sequence[Rejected] | None]]
"""A consumer's handler: one batch of decoded messages in stream order; returns those it refused."""


@dataclass(frozen=True, slots=True)
class Consumer(Generic[M]):
    """A durable JetStream consumer, as data: what it reads, how, and who handles it.

    The decoder and the handler share the message type ``M``, so mypy checks that a handler receives
    what its decoder produces. ``shards`` is the system's shard count: a message is handed over only on
    the one subject it belongs on (``rrr.shared.messages.check_subject``).
    """

    stream: StreamSpec
    durable: str
    filter_subject: str
    decoder: msgspec.msgpack.Decoder[M]
    handler: HandleBatch[M]
    # State that depends on the order of messages (strategy, execution): see Consuming.consume.
    ordered: bool = False
    # Refused messages are handed to this service's retry stream before being dead-lettered.
    retries: bool = False
    batch_size: int = 256
    max_wait_s: float = 0.5
    max_deliver: int = 5
    # Ordered consumers: where to start at start-up (the sequence after a snapshot), else the ack floor.
    start_seq: int | None = None
    shards: int = field(kw_only=True)
    # False: the service owns its position in the stream (a snapshot or a database row holds the last
    # sequence it applied, written with the state it produced) and says where to start (``start_seq``).
    # Then nothing is acknowledged: the stream is read with an ordered push consumer, far cheaper than a
    # fetch and an acknowledgement per message, and a restart resumes from the service's own position.
    acks: bool = True
    # Without acknowledgements: after the first message of a batch, how long to let more gather. Natural
    # batching alone gives one message per batch at low rates; a writer whose every batch costs a
    # transaction trades this much latency for far fewer of them.
    linger_s: float = 0.0
    # Called once a batch's refusals (dead letters, retries) are stored: from then on the handler's own
    # position may cover the refused messages (a snapshot may be taken).
    settled: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not self.acks and self.start_seq is None:
            raise ValueError(f"consumer {self.durable}: without acknowledgements, start_seq must say where to start")


@dataclass(frozen=True, slots=True)
class Subscription(Generic[M]):
    """A core NATS subscription, as data. Without a decoder the handler gets the raw message and None.

    ``shards`` is the system's shard count: a decoded message is handed over only on the one subject it
    belongs on (``rrr.shared.messages.check_subject``). A raw message has no payload to hold against its
    subject, so its handler judges the subject. None: no check, for tools that watch any subject.
    """

    subject: str
    decoder: msgspec.msgpack.Decoder[M] | None
    handler: Callable[[Msg, M], Awaitable[None]]
    queue: str = ""
    shards: int | None = field(kw_only=True)


class Consuming(DeadLetters):
    """The consume loop of durable consumers, and core subscriptions."""

    async def subscribe(self, subscription: Subscription[M]) -> NatsSubscription:
        """Subscribe on core NATS; the handler runs in a span continuing the sender's trace.

        A payload that does not decode, or arrives on a subject not its own, is counted and dead-lettered;
        a handler that raises is counted and logged. None of them stops the subscription.
        """
        decoder, handler, subject = subscription.decoder, subscription.handler, subscription.subject
        stats = self.traffic.consumer(subject, subject)

        async def _refuse(msg: Msg, reason: str) -> None:
            try:
                await self.dead_letter(msg, reason)
            except TransientError as lost:
                # Core NATS has no redelivery: the message is counted, logged and gone.
                self.counters.dead_letter_failures += 1
                _log.error("%s", lost)

        async def _callback(msg: Msg) -> None:
            message = cast(M, None)
            if decoder is not None:
                try:
                    message = decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.counters.malformed += 1
                    await _refuse(msg, f"decode: {exc}")
                    return
                if subscription.shards is not None:
                    try:
                        check_subject(msg.subject, message, subscription.shards)
                    except MisroutedMessageError as exc:
                        self.counters.mismatched += 1
                        await _refuse(msg, f"subject: {exc}")
                        return
            started = time.perf_counter()
            with self.handling(f"handle {subject}", msg):
                try:
                    await handler(msg, message)
                except Exception:
                    self.counters.handler_errors += 1
                    _log.exception("handler failed on %s", msg.subject)
            # A core message is a batch of one: what it carries is batched already (a QuoteBatch) or rare.
            stats.batch(1, time.perf_counter() - started)

        return await self.nc.subscribe(subject, cb=_callback, queue=subscription.queue)

    async def consume(self, consumer: Consumer[M], stop: asyncio.Event, *, ack_wait_s: float = 30.0) -> None:
        """Consume a durable pull consumer until ``stop`` is set.

        Messages are handed over in stream order, in batches of at most ``batch_size``, and each message
        of a batch is acknowledged only after the handler returned:

        - a payload that does not decode, or that arrived on a subject other than its own (another family,
          symbol or shard), is dead-lettered at once and never handed to the handler;
        - a message the handler returns as Rejected is, if ``retry`` and this consumer has ``retries``,
          handed to ``retry.<service>.<subject>`` (at most ``max_deliver`` attempts in all), else
          dead-lettered with the reason;
        - a handler raising TransientError (a dependency is down) gets the same batch again, after a
          back-off, until it goes through or ``stop`` is set (then nothing is acknowledged, and the batch
          is redelivered to the next run);
        - any other exception stops the service (FatalError): its state may be half-updated.

        ``ordered`` is for services whose state depends on the order of messages (strategy, execution):
        their consumer is re-created at start and after every reconnect to deliver from the first message
        not yet processed, from ``start_seq`` (the sequence after a snapshot) at start if given, else from
        the first unacknowledged one.
        """
        # Its series exist from the start, at zero: a rate needs a sample from before the first batch.
        self.traffic.consumer(consumer.durable, consumer.filter_subject)
        if not consumer.acks:
            await self._consume_owned(consumer, stop)
            return
        # Explicit acknowledgements, one per message. Policy "all" (one per batch) consumes about a third
        # faster, but acknowledges every earlier message too: after a crash or a reconnect, messages left
        # pending on the server come back after newer ones, and acknowledging those would drop them.
        stream, durable = consumer.stream.name, consumer.durable

        async def _open(resume_at: int | None) -> JetStreamContext.PullSubscription:
            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s,
                max_ack_pending=max(consumer.batch_size * 4, 1024),
            )
            if consumer.ordered:
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
            return await self.js.pull_subscribe(consumer.filter_subject, durable=durable, stream=stream, config=config)

        psub = await _open(consumer.start_seq)
        last_seq: int | None = None if consumer.start_seq is None else consumer.start_seq - 1
        reconnects = self.nc.stats["reconnects"]
        backoff = Backoff()
        try:
            while not stop.is_set():
                if consumer.ordered and self.nc.stats["reconnects"] != reconnects:
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
                    msgs = await psub.fetch(consumer.batch_size, timeout=consumer.max_wait_s)
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
                        if not await self._process(msgs, consumer, stop):
                            return  # stopped with refusals unstored: unacknowledged, redelivered next run
                        last_seq = stream_seq(msgs[-1])
                        break
                    except TransientError as exc:
                        self.counters.transient_errors += 1
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

    async def _consume_owned(self, consumer: Consumer[M], stop: asyncio.Event) -> None:
        """Consume from ``consumer.start_seq`` with an ordered push consumer, without acknowledgements.

        The server pushes messages in stream order (a gap makes the client re-create the consumer from the
        last sequence it received); they wait in a bounded queue, so a slow handler holds back the flow
        control replies and with them the server. Batches are whatever is queued when the handler is free,
        up to ``batch_size``: one message when the stream is quiet, many under load. After a reconnect the
        consumer is re-created from the message after the last one handled, and what was queued is dropped.
        It reads on a connection of its own (``own_connection``), so that its window never shares the server's
        bound on what a client has yet to read.
        """
        async with self.own_connection(consumer.durable) as (nc, js):
            await self._consume_owned_on(consumer, stop, nc, js)

    async def _consume_owned_on(
        self, consumer: Consumer[M], stop: asyncio.Event, nc: Client, js: JetStreamContext
    ) -> None:
        async def _open(start: int) -> NatsSubscription:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start, 1))
            # No callback: messages wait in the subscription's own queue, and the client answers the
            # server's flow control only once they are taken from it, which is the back-pressure.
            return await js.subscribe(
                consumer.filter_subject,
                stream=consumer.stream.name,
                ordered_consumer=True,
                idle_heartbeat=_IDLE_HEARTBEAT_S,
                # Never dropped on the client: a dropped message would look delivered, and nothing acknowledges
                # here to bring it back. The server's flow control bounds what waits (a window of deliveries
                # not yet taken from the queue).
                pending_msgs_limit=0,
                pending_bytes_limit=0,
                config=config,
            )

        async def _close(old: NatsSubscription) -> None:
            # Its consumer is deleted at once: ephemeral ones otherwise linger, and a stream has a bound on
            # consumers.
            name = getattr(old, "_consumer", None)
            with contextlib.suppress(nats.errors.Error):
                await old.unsubscribe()
            if name:
                with contextlib.suppress(nats.errors.Error):
                    await js.delete_consumer(consumer.stream.name, name)

        assert consumer.start_seq is not None  # Consumer.__post_init__
        next_seq = consumer.start_seq
        reconnects = nc.stats["reconnects"]
        sub = await _open(next_seq)
        # The consumer sequence of the last message taken: the server numbers a consumer's deliveries 1, 2,
        # 3 ... and 1 again for a consumer the client re-created itself (from the last message it received).
        # A gap would be a message lost on the way: the consumer is then re-created from the first message
        # not handled.
        last_delivered = 0
        reopen: str | None = None
        backoff = Backoff()
        try:
            while not stop.is_set():
                if nc.stats["reconnects"] != reconnects:
                    reopen = "a reconnect"
                if reopen is not None:
                    # Re-created from the first message not yet handled; what was queued goes.
                    seen = nc.stats["reconnects"]
                    try:
                        await _close(sub)
                        sub = await _open(next_seq)
                    except nats.errors.Error as exc:
                        _log.warning(
                            "re-creating %s after %s failed, will try again: %s", consumer.durable, reopen, exc
                        )
                        await backoff.wait(stop)
                        continue
                    _log.info("re-created %s after %s, from stream sequence %d", consumer.durable, reopen, next_seq)
                    reconnects, last_delivered, reopen = seen, 0, None
                try:
                    first = await sub.next_msg(timeout=consumer.max_wait_s)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    return
                if consumer.linger_s and sub.pending_msgs < consumer.batch_size:
                    # Pacing, not synchronisation: what arrives meanwhile joins the batch.
                    await asyncio.sleep(consumer.linger_s)
                taken = [first, *_queued(sub, consumer.batch_size - 1)]
                msgs = []
                for msg in taken:
                    delivered = consumer_seq(msg)
                    if delivered not in (last_delivered + 1, 1):
                        reopen = "a gap in the deliveries"
                        break  # handled up to the gap; the rest comes again
                    last_delivered = delivered
                    msgs.append(msg)
                # A re-created consumer may deliver again what was queued before: never handled twice.
                msgs = [m for m in msgs if stream_seq(m) >= next_seq]
                if not msgs:
                    continue
                last_seq = stream_seq(msgs[-1])
                while True:
                    try:
                        if not await self._process(msgs, consumer, stop):
                            return  # refusals unstored: the handler kept its position from covering them
                        break
                    except TransientError as exc:
                        self.counters.transient_errors += 1
                        _log.warning("will retry a batch from %s: %s", consumer.durable, exc)
                        await backoff.wait(stop)
                        if stop.is_set():
                            return  # the service's own position still says where to resume
                backoff.reset()
                next_seq = last_seq + 1
        finally:
            if not nc.is_closed:
                await _close(sub)

    async def _process(self, msgs: list[Msg], consumer: Consumer[M], stop: asyncio.Event) -> bool:
        """Hand the batch to its handler, then store its refusals; False if ``stop`` came before they were."""
        stats = self.traffic.consumer(consumer.durable, consumer.filter_subject)
        taken = len(msgs)
        stats.position(msgs[0].reply, msgs[-1].reply)
        batch: list[Delivery[M]] = []
        # Never handed to the handler: undecodable, or on a subject not their own (mismatched).
        refused: list[tuple[Msg, str]] = []
        mismatched = 0
        for msg in msgs:
            envelope = subjects.parse_envelope(msg.subject)
            if envelope is not None:
                # Its messages, each handled as if it had come alone (rrr.shared.bus.envelopes).
                opened, refusals = open_envelope(msg, *envelope, consumer.decoder, consumer.shards)
                batch.extend(Delivery(item, message) for item, message in opened)
                for item, reason, misrouted in refusals:
                    refused.append((item, reason))
                    mismatched += misrouted
                continue
            try:
                message = consumer.decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                refused.append((msg, f"decode: {exc}"))
                continue
            try:
                check_subject(msg.subject, message, consumer.shards)
            except MisroutedMessageError as exc:
                refused.append((msg, f"subject: {exc}"))
                mismatched += 1
                continue
            batch.append(Delivery(msg, message))
        if not consumer.acks and refused:
            # The handler stores its own position in the stream, which may pass these: their dead letters
            # are stored first, so that a crash after the handler never leaves one behind that position.
            # Taken out of ``msgs`` once stored: a batch tried again (TransientError) does not repeat them.
            await self._refuse(refused, mismatched)
            msgs[:] = [delivery.msg for delivery in batch]
            refused, mismatched = [], 0
        rejected: Sequence[Rejected] = ()
        handler_s = 0.0
        if batch:
            started = time.perf_counter()
            try:
                rejected = await consumer.handler(batch) or ()
            except (TransientError, FatalError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # The handler's state may be half-updated: only a restart, rebuilding from durable state,
                # is safe.
                raise FatalError(f"handler failed on {batch[0].msg.subject}: {type(exc).__name__}: {exc}") from exc
            handler_s = time.perf_counter() - started
        # Dead letters and retries are stored before the acknowledgement that covers their originals. The
        # handler has done its work: a broker that cannot take them now is waited out here, storing them
        # again, and the handler is never run twice on the batch (its state has moved on).
        backoff = Backoff()
        while True:
            try:
                await self._refuse(refused, mismatched)  # empties ``refused`` once they are stored
                mismatched = 0
                await self._hand_back(rejected, consumer)
                break
            except TransientError as exc:
                self.counters.transient_errors += 1
                _log.warning("will store the refusals of a batch from %s again: %s", consumer.durable, exc)
                await backoff.wait(stop)
                if stop.is_set():
                    return False
        self.counters.handler_rejected += len(rejected)
        if consumer.settled is not None:
            consumer.settled()
        if self.before_ack is not None:
            self.before_ack(len(batch))
        if consumer.acks:
            for msg in msgs:
                await msg.ack()
        self.counters.handled += len(batch) - len(rejected)
        stats.batch(taken, handler_s)
        return True

    async def _hand_back(self, rejected: Sequence[Rejected], consumer: Consumer[M]) -> None:
        for failure in rejected:
            msg = failure.delivery.msg
            if failure.retry and consumer.retries and attempts(msg) + 1 < consumer.max_deliver:
                await self.retry_later(msg)
            else:
                await self.dead_letter(msg, f"{failure.reason} (after {attempts(msg) + 1} attempts)")

    async def _refuse(self, refused: list[tuple[Msg, str]], mismatched: int) -> None:
        for msg, reason in refused:
            await self.dead_letter(msg, reason)
        # Counted once stored (a try that failed half-way stores them again, under the same ids).
        self.counters.malformed += len(refused) - mismatched
        self.counters.mismatched += mismatched
        refused.clear()


def _queued(sub: NatsSubscription, limit: int) -> list[Msg]:
    """Take up to ``limit`` messages already waiting in ``sub``'s queue, without waiting.

    What ``next_msg`` does for one message, minus the task it creates for the wait: the queue and the
    pending-size bookkeeping are the subscription's own (nats-py 2.x).
    """
    queue: asyncio.Queue[Msg] = sub._pending_queue
    out: list[Msg] = []
    while len(out) < limit and not queue.empty():
        msg = queue.get_nowait()
        queue.task_done()
        sub._pending_size -= len(msg.data)
        out.append(msg)
    return out


def consumer_seq(msg: Msg) -> int:
    """The consumer sequence of a JetStream message (its delivery number), from its acknowledgement subject."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[6])
    if len(tokens) in (11, 12):
        return int(tokens[8])
    return int(msg.metadata.sequence.consumer)


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream message, read from its acknowledgement subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`` (9 tokens) or, with a domain and an account
    hash, ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<stream seq>...`` (11 or 12): what
    ``msg.metadata`` parses, without building the rest of it for every message.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) in (11, 12):
        return int(tokens[7])
    return int(msg.metadata.sequence.stream)  # any other form: the library's own reading (or its error)
