"""Publishing: core NATS for live ticks, JetStream with acknowledgements and message ids for the rest."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError
from opentelemetry import trace

from rrr.shared.bus.connection import Backoff, Connection
from rrr.shared.bus.envelopes import pack
from rrr.shared.bus.fencing import Fence, wrong_last_sequence
from rrr.shared.bus.outgoing import MSG_ID, Outgoing
from rrr.shared.errors import FatalError
from rrr.shared.messages import Message, encode
from rrr.shared.telemetry import inject

_log = logging.getLogger(__name__)

# JetStream answers 503 when its store is full ("insufficient resources") and when a stream is at one of its
# limits (discard policy "new": "maximum bytes exceeded", "maximum messages exceeded"): wait for space rather
# than fail, since nothing is wrong with the message.
_UNAVAILABLE = 503
_STREAM_AT_LIMIT = 10077
# A request nobody answers (no stream captures the subject) comes back with this status header.
_STATUS = "Status"
_NO_RESPONDERS = "503"


def store_full(exc: BaseException) -> bool:
    """Whether ``exc`` is JetStream refusing a message for want of space: back-pressure, to be waited out."""
    return isinstance(exc, APIError) and exc.code == _UNAVAILABLE


def describe(exc: BaseException) -> str:
    """What went wrong with a publish, in words; a full store or stream says it is waited out."""
    if store_full(exc):
        assert isinstance(exc, APIError)
        if exc.err_code == _STREAM_AT_LIMIT:
            return f"a stream is full: {exc.description} (waiting for space)"
        return "the JetStream store is full (waiting for space)"
    return str(exc) or type(exc).__name__


class _AckMux:
    """JetStream acknowledgements of many publishes on one subscription (``<inbox>.<n>``), each a future.

    What nats-py's ``js.publish`` does per message (a request, its timer, a task under ``gather``) costs
    more than the publish itself when a batch is published; here a batch is its futures and one wait.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pending: dict[str, asyncio.Future[PubAck]] = {}
        self._next = 0

    def new(self) -> tuple[str, asyncio.Future[PubAck]]:
        """A reply subject and the future its acknowledgement resolves."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self.pending[token] = future
        return f"{self.prefix}.{token}", future

    async def on_reply(self, msg: Msg) -> None:
        future = self.pending.pop(msg.subject.rsplit(".", 1)[-1], None)
        if future is None or future.done():
            return  # given up on (a timeout): late
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
            if "error" in reply:
                APIError.from_error(reply["error"])  # raises the error's own class
            future.set_result(PubAck.from_response(reply))
        except (APIError, ValueError, TypeError, KeyError) as exc:
            future.set_exception(exc if isinstance(exc, APIError) else APIError(description=f"bad ack: {exc}"))


class Publisher(Connection):
    """Typed publishing, one message or a batch with every acknowledgement in flight together."""

    _ack_mux: _AckMux | None = None

    async def _publish_acked(self, items: Sequence[Outgoing], timeout_s: float) -> list[PubAck | BaseException]:
        """Publish ``items`` to JetStream with their acknowledgements in flight together; each result is the
        acknowledgement, or why there is none (an error the stream answered, or a timeout)."""
        mux = self._ack_mux
        if mux is None:
            mux = _AckMux(self.nc.new_inbox())
            await self.nc.subscribe(f"{mux.prefix}.*", cb=mux.on_reply)
            self._ack_mux = mux  # only once its subscription exists: else the next batch tries again
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for o in items:
                reply, future = mux.new()
                futures.append(future)
                await self.nc.publish(o.subject, o.data, reply=reply, headers=o.headers)
            if futures:
                await asyncio.wait(futures, timeout=timeout_s)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            for token in [t for t, f in mux.pending.items() if f.done()]:
                del mux.pending[token]
        return [
            TimeoutError(f"no acknowledgement within {timeout_s} s") if f.cancelled() else (f.exception() or f.result())
            for f in futures
        ]

    async def publish_acked(self, items: Sequence[Outgoing], timeout_s: float) -> list[PubAck | BaseException]:
        """Publish ``items`` to JetStream with their acknowledgements in flight together and wait for them; each
        result is the acknowledgement or why there is none (the stream's error, no stream, the client's error, a
        timeout: then the message may be stored or not). Nothing is retried: for what may be dropped when late."""
        try:
            results = await self._publish_acked(items, timeout_s)
        except nats.errors.Error as exc:  # the client could not even send (closed, reconnect buffer full)
            return [exc] * len(items)
        for o, result in zip(items, results, strict=True):
            if not isinstance(result, BaseException):
                self.traffic.sent(o.subject, o.messages)
        return results

    def _headers(self, msg_id: str | None) -> dict[str, str]:
        # Outside any trace there is nothing to carry: the propagators' work is skipped.
        headers = inject({}) if trace.get_current_span().get_span_context().is_valid else {}
        if msg_id is not None:
            headers[MSG_ID] = msg_id
        return headers

    async def publish(self, subject: str, message: Message) -> None:
        """Publish on core NATS (at most once; a stream on the subject still captures it)."""
        await self.nc.publish(subject, encode(message), headers=self._headers(message.id))
        self.traffic.sent(subject)

    def prepare_encoded(self, subject: str, message_id: str, data: bytes) -> Outgoing:
        """``prepare`` of a message encoded already."""
        return Outgoing(subject, data, self._headers(message_id))

    async def publish_persistent(self, subject: str, message: Message) -> PubAck:
        """Publish to JetStream and wait until the stream stored it; the message id de-duplicates."""
        ack = await self.js.publish(subject, encode(message), headers=self._headers(message.id))
        self.traffic.sent(subject)
        return ack

    def prepare(self, subject: str, message: Message) -> Outgoing:
        """Encode ``message`` now, with the current span's trace context, to publish later in a batch."""
        return Outgoing(subject, encode(message), self._headers(message.id))

    async def publish_persistent_many(
        self, items: Sequence[Outgoing], *, retry_until: asyncio.Event | None = None, ack_timeout_s: float = 5.0
    ) -> int:
        """Publish to JetStream with all acknowledgements in flight together, then wait for every one.

        Returns how many the streams stored as new (a duplicate inside the de-duplication window is
        acknowledged but not stored again, and not counted).

        With ``retry_until``, a failed or unacknowledged publish (broker restarting, connection lost, or
        a JetStream store that is full: back-pressure) is retried with back-off, all of ``items`` again,
        until it succeeds or the event is set: the message ids make the retries harmless.

        Every publish of a round ends, by its acknowledgement, its error or its timeout, before the next
        round or the return: nothing is left pending for a later wait to hang on.

        Raises:
            nats.errors.Error, TimeoutError: the publish failed (and ``retry_until`` was not given or is set).
            nats.js.errors.APIError: a stream refused a message for good (too large, say; not a full store).
        """
        acks = await self.publish_persistent_acks(items, retry_until=retry_until, ack_timeout_s=ack_timeout_s)
        return sum(1 for ack in acks if not ack.duplicate)

    async def publish_persistent_acks(
        self, items: Sequence[Outgoing], *, retry_until: asyncio.Event | None = None, ack_timeout_s: float = 5.0
    ) -> list[PubAck]:
        """``publish_persistent_many``, returning every acknowledgement (with its stream sequence) in order.

        With a standby beside this instance, what falls under its shard's fence is fenced
        (``rrr.shared.bus.fencing``).

        Raises:
            LeaseLostError: another instance acts for the shard now: nothing more may be published.
        """
        if self.fence is not None:
            return await self._publish_fenced(items, self.fence, retry_until, ack_timeout_s)
        return await self._publish_acks(items, retry_until, ack_timeout_s)

    async def _publish_acks(
        self, items: Sequence[Outgoing], retry_until: asyncio.Event | None, ack_timeout_s: float
    ) -> list[PubAck]:
        backoff = Backoff()
        while True:
            try:
                results = await self._publish_acked(items, ack_timeout_s)
            except nats.errors.Error as exc:  # the client could not even send (closed, reconnect buffer full)
                results = [exc]
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is None:
                for o in items:
                    self.traffic.sent(o.subject, o.messages)
                return [ack for ack in results if isinstance(ack, PubAck)]
            if isinstance(failure, asyncio.CancelledError) or not isinstance(failure, nats.errors.Error | TimeoutError):
                raise failure
            full = store_full(failure)
            if retry_until is None or retry_until.is_set() or (isinstance(failure, APIError) and not full):
                raise failure
            if full:
                self.counters.store_full += 1
            self.counters.publish_retries += 1
            _log.warning("publishing %d messages failed, retrying: %s", len(items), describe(failure))
            await backoff.wait(retry_until)

    async def publish_state_output(self, items: Sequence[Outgoing], stop: asyncio.Event, what: str) -> int:
        """Publish what a stateful handler produced, waiting out a broker outage; stop the service if
        asked to stop before it is stored. Returns the highest stream sequence it was stored at.

        The handler's state has already moved on, so its batch must not be acknowledged without its
        output: the service stops instead, and rebuilds from durable state (snapshot, event stream) on
        restart, where the unacknowledged batch comes again.

        Several signals, order commands, order events or positions of one shard go in one envelope
        (``rrr.shared.bus.envelopes``).

        With a standby beside this instance, its output is fenced (``rrr.shared.bus.fencing``).

        Raises:
            FatalError: ``stop`` was set while the broker was still away.
            LeaseLostError: another instance acts for the shard now: nothing more may be published.
        """
        try:
            acks = await self.publish_persistent_acks(pack(items, self.max_msg_bytes), retry_until=stop)
        except (nats.errors.Error, TimeoutError) as exc:
            raise FatalError(f"could not publish {what}: {type(exc).__name__}: {exc}") from exc
        return max((ack.seq for ack in acks), default=0)

    async def _publish_fenced(
        self, items: Sequence[Outgoing], fence: Fence, retry_until: asyncio.Event | None, ack_timeout_s: float
    ) -> list[PubAck]:
        """Publish ``items`` in order, those under the fence one acknowledgement at a time (each moves it)."""
        acks: list[PubAck] = []
        for item in items:
            spec = fence.spec_for(item.subject)
            if spec is None:
                acks += await self._publish_acks([item], retry_until, ack_timeout_s)
                continue
            while True:
                fence.lease.check()
                fenced = Outgoing(item.subject, item.data, fence.headers(spec, item.headers), item.messages)
                try:
                    [ack] = await self._publish_acks([fenced], retry_until, ack_timeout_s)
                except APIError as exc:
                    if not wrong_last_sequence(exc):
                        raise
                    await fence.rearm(self.js, spec)
                    continue
                fence.moved(spec, ack)
                acks.append(ack)
                break
        return acks
