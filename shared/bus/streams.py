"""The system's JetStream streams: what they capture, creating them, the shard count, reading one back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from rrr.shared import subjects
from rrr.shared.bus.connection import Backoff, Connection
from rrr.shared.errors import RRRError
from rrr.shared.limits import META_LIMITS, SHARES, Limits, StoreLimits

# JetStream's error code for "insufficient storage resources available": a reservation does not fit the store.
_INSUFFICIENT_STORAGE = 10047
# "stream name already in use with a different configuration".
_NAME_IN_USE = 10058
# What a JetStream cluster answers while it agrees on something (a leader, a new stream): ask again later.
_NOT_YET = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)
_CLUSTER_API_PATIENCE_S = 60.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One JetStream stream the system relies on."""

    name: str
    subjects: tuple[str, ...]
    # Its part of the JetStream budget, in 1/SHARES (see rrr.shared.limits).
    share: int = 1
    # Carries other streams' messages with headers added (dead letters, retries): room for the headers.
    headroom: bool = False
    # Messages older than --stream-max-age-s go; a stream of state that outlives its sources keeps them.
    expires: bool = True


MARKET_DATA_STREAM = StreamSpec("RRR_MD", (subjects.MARKET_DATA_ALL,), share=20)
SIGNAL_STREAM = StreamSpec("RRR_SIG", (subjects.SIGNAL_ALL,), share=2)
COMMAND_STREAM = StreamSpec("RRR_CMD", (subjects.COMMAND_ALL,), share=2)
EVENT_STREAM = StreamSpec("RRR_EVT", (subjects.EVENT_ALL,), share=4)
DEAD_LETTER_STREAM = StreamSpec("RRR_DLQ", (subjects.DEAD_LETTER_ALL,), share=1, headroom=True)
RETRY_STREAM = StreamSpec("RRR_RETRY", (subjects.RETRY_ALL,), share=1, headroom=True)
# The services' snapshots (see rrr.shared.bus.snapshots): a snapshot stands for history that may have expired.
SNAPSHOT_STREAM = StreamSpec("RRR_SNAPSHOTS", (subjects.SNAPSHOT_ALL,), share=2, expires=False)
STREAMS = (
    MARKET_DATA_STREAM,
    SIGNAL_STREAM,
    COMMAND_STREAM,
    EVENT_STREAM,
    DEAD_LETTER_STREAM,
    RETRY_STREAM,
    SNAPSHOT_STREAM,
)
DUPLICATE_WINDOW_S = 120.0
META_BUCKET = "RRR_META"
assert sum(spec.share for spec in STREAMS) <= SHARES, "the streams' shares exceed the budget"


class ShardCountError(RRRError):
    """The configured shard count is not the one the system's streams and state were built with."""

    def __init__(self, recorded: int, configured: int) -> None:
        super().__init__(
            f"this system was started with --shards {recorded}, not {configured}: every subject and every "
            f"service's state is split that way. Start with --shards {recorded}, or start over from empty "
            f"streams (`just reset`)"
        )


class StreamLeaderError(RRRError):
    """A replicated stream has no leader: too few of its nodes are up to elect one."""

    def __init__(self, stream: str, timeout_s: float, seen: str) -> None:
        self.stream = stream
        super().__init__(
            f"{stream} has no leader after {timeout_s:g} s: expected a majority of its replicas' NATS nodes up to "
            f"elect one, saw {seen}; are the cluster's nodes up (`just status`)?"
        )


class StoreTooSmallError(RRRError):
    """nats-server cannot reserve a stream's limit on its store."""

    def __init__(self, stream: str, max_bytes: int, budget: int) -> None:
        self.stream = stream
        super().__init__(
            f"nats-server cannot reserve {max_bytes:,} bytes for {stream} (its share of a budget of {budget:,} "
            "bytes): expected a JetStream store with room for the whole budget, saw insufficient storage. Lower "
            "--store-max-bytes (RRR_STORE_MAX_BYTES), or give nats-server more store (max_file_store, free disk)"
        )


T = TypeVar("T")


async def patiently(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()``, asked again while a cluster answers late or not at all (see ``_NOT_YET``), for a while."""
    deadline = time.monotonic() + _CLUSTER_API_PATIENCE_S
    backoff = Backoff(0.1, 2.0)
    while True:
        try:
            return await call()
        except _NOT_YET as exc:
            if time.monotonic() >= deadline:
                raise StreamLeaderError(what, _CLUSTER_API_PATIENCE_S, type(exc).__name__) from exc
            await backoff.wait(asyncio.Event())


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _limited(config: StreamConfig, limits: Limits) -> StreamConfig:
    config.max_bytes = limits.max_bytes
    config.max_msgs = limits.max_msgs
    config.max_msg_size = limits.max_msg_size
    config.discard = DiscardPolicy.NEW
    return config


class StreamAdmin(Connection):
    """Creating the streams, recording the shard count, reading a stream back at start-up."""

    # Copies of each stream and bucket this connection creates (set by ensure_streams).
    replicas: int = 1

    async def ensure_streams(
        self,
        *,
        max_age_s: float,
        duplicate_window_s: float = DUPLICATE_WINDOW_S,
        limits: StoreLimits | None = None,
        update: bool = True,
        replicas: int = 1,
    ) -> None:
        """Create the system's streams and the RRR_META bucket; with ``update``, bring existing ones' retention,
        limits and replicas up to date.

        File storage, so that acknowledged messages survive a broker restart. JetStream remembers each
        ``Nats-Msg-Id`` for ``duplicate_window_s`` to drop a re-published duplicate (what comes back later is
        stopped by the watermarks downstream). Each stream gets its share of ``limits`` and refuses new
        messages at a limit (discard "new"): lowering a limit below what a stream holds keeps every message
        and refuses new ones until it shrinks. Tools (replay, dlq) pass ``update=False``: the services own
        the streams' settings. ``replicas`` is how many nodes of a cluster hold each stream (R3 on three nodes:
        one may fail and every stream keeps its quorum); JetStream moves an existing stream to a new count.

        Raises:
            StoreTooSmallError: nats-server cannot reserve the budget on its store.
        """
        limits = limits or StoreLimits()
        self.max_msg_bytes = limits.max_msg_bytes
        self.replicas = replicas
        for spec in STREAMS:
            share = limits.share(spec.share, headroom=spec.headroom)
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                storage=StorageType.FILE,
                max_age=max_age_s if spec.expires else 0.0,
                duplicate_window=duplicate_window_s,
                max_bytes=share.max_bytes,
                max_msgs=share.max_msgs,
                max_msg_size=share.max_msg_size,
                discard=DiscardPolicy.NEW,
                num_replicas=replicas,
            )
            await self._create_or_update(config, limits, update=update)
        if replicas > 1:
            for spec in STREAMS:
                await self._wait_for_leader(spec.name)
        try:
            meta = await patiently(lambda: self.js.stream_info(_kv_stream(META_BUCKET)), _kv_stream(META_BUCKET))
        except nats.js.errors.NotFoundError:
            await patiently(lambda: self._create_meta(limits), META_BUCKET)
        else:
            if update:
                # A bucket created before it had limits: its stream is brought up to them.
                config = _limited(meta.config, META_LIMITS)
                config.num_replicas = replicas
                await self._create_or_update(config, limits, update=True)
        if replicas > 1:
            await self._wait_for_leader(_kv_stream(META_BUCKET))

    async def _wait_for_leader(self, stream: str, timeout_s: float = 30.0) -> None:
        """Wait until ``stream`` has a leader: a replicated stream just created, or moved to more replicas,
        elects one among its nodes first, and until then nobody answers its requests."""
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                info = await self.js.stream_info(stream)
                if info.cluster is None or info.cluster.leader:
                    return
                seen = "no leader yet"
            except (*_NOT_YET, nats.js.errors.NotFoundError) as exc:
                # Not found: created a moment ago, and the node that answered has not heard of it yet.
                seen = type(exc).__name__
            if time.monotonic() >= deadline:
                raise StreamLeaderError(stream, timeout_s, seen)
            await backoff.wait(asyncio.Event())

    async def _create_or_update(self, config: StreamConfig, limits: StoreLimits, *, update: bool) -> None:
        async def _once() -> None:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                if update:
                    await self.js.update_stream(config)

        try:
            # On a cluster every create and update is agreed by the meta group while several services start at
            # once, and a new stream elects its leader: an answer late or missing is asked again, for a while.
            await patiently(_once, config.name or "")
        except nats.js.errors.APIError as exc:
            if exc.err_code == _INSUFFICIENT_STORAGE:
                raise StoreTooSmallError(config.name or "", config.max_bytes or 0, limits.max_bytes) from exc
            raise

    async def _create_meta(self, limits: StoreLimits) -> KeyValue:
        try:
            return await self.js.create_key_value(
                KeyValueConfig(
                    bucket=META_BUCKET,
                    history=1,
                    storage=StorageType.FILE,
                    max_bytes=META_LIMITS.max_bytes,
                    max_value_size=META_LIMITS.max_msg_size,
                    replicas=self.replicas,
                )
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == _INSUFFICIENT_STORAGE:
                raise StoreTooSmallError(META_BUCKET, META_LIMITS.max_bytes, limits.max_bytes) from exc
            if exc.err_code == _NAME_IN_USE:
                # Made meanwhile by a service starting at the same time, and maybe brought to its limits since.
                return await self.js.key_value(META_BUCKET)
            raise

    async def check_shards(self, shards: int) -> None:
        """Refuse to run with another shard count than the system was first started with.

        Subjects carry the shard, and every service's durable state (consumers, snapshots, the event
        history execution rebuilds from) is per shard: a new count would have new shards re-read old
        subjects they never owned. The first service to start records the count.

        Raises:
            ShardCountError: the system runs with another count.
        """
        try:
            kv = await patiently(lambda: self.js.key_value(META_BUCKET), META_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await patiently(lambda: self._create_meta(StoreLimits()), META_BUCKET)
            if self.replicas > 1:
                await self._wait_for_leader(_kv_stream(META_BUCKET))
        try:
            await patiently(lambda: kv.create("shards", str(shards).encode()), META_BUCKET)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            # Recorded already by another service. On a cluster, the read that tells a deleted key from a live
            # one may reach a replica that has not seen the record yet (key not found): it is read until seen.
            recorded = int((await self._read_recorded(kv)).value or b"0")
            if recorded != shards:
                raise ShardCountError(recorded, shards) from None

    async def _read_recorded(self, kv: KeyValue) -> KeyValue.Entry:
        deadline = time.monotonic() + _CLUSTER_API_PATIENCE_S
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                return await patiently(lambda: kv.get("shards"), META_BUCKET)
            except nats.js.errors.KeyNotFoundError:
                if time.monotonic() >= deadline:
                    raise
                await backoff.wait(asyncio.Event())

    async def recorded_shards(self) -> int | None:
        """The shard count the system's services run with, or None if none of them has started yet."""
        try:
            kv = await self.js.key_value(META_BUCKET)
            entry = await kv.get("shards")
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
            return None
        return int(entry.value or b"0") or None

    async def read_stream(
        self, stream: str, filter_subject: str, *, last_per_subject: bool = False, fetch: int = 1024
    ) -> list[Msg]:
        """Read what a stream holds now on ``filter_subject`` (everything, or the last per subject), as a list."""
        async with contextlib.aclosing(
            self.iter_stream(stream, filter_subject, last_per_subject=last_per_subject, fetch=fetch)
        ) as msgs:
            return [msg async for msg in msgs]

    async def iter_stream(
        self,
        stream: str,
        filter_subject: str,
        *,
        start_seq: int | None = None,
        last_per_subject: bool = False,
        fetch: int = 1024,
    ) -> AsyncGenerator[Msg, None]:
        """Yield what a stream holds now on ``filter_subject``, from ``start_seq`` if given, in stream order.

        For rebuilding state at start-up, in memory independent of the stream's length: an ephemeral
        consumer is created, asked how many messages it has to deliver, and read ``fetch`` at a time until it
        delivered exactly that many. With ``last_per_subject``, only the last message of each subject.
        """
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0)
        if last_per_subject:
            config.deliver_policy = DeliverPolicy.LAST_PER_SUBJECT
        elif start_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(start_seq, 1)
        psub = await self.js.pull_subscribe(filter_subject, stream=stream, config=config)
        try:
            info = await psub.consumer_info()
            remaining = info.num_pending or 0
            while remaining > 0:
                msgs = await psub.fetch(min(fetch, remaining), timeout=5.0)
                remaining -= len(msgs)
                for msg in msgs:
                    yield msg
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()
