"""The system's JetStream streams: what they capture, creating them, the shard count, reading one back."""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig

from rrr.shared import subjects
from rrr.shared.bus.connection import Connection
from rrr.shared.errors import RRRError


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


class ShardCountError(RRRError):
    """The configured shard count is not the one the system's streams and state were built with."""

    def __init__(self, recorded: int, configured: int) -> None:
        super().__init__(
            f"this system was started with --shards {recorded}, not {configured}: every subject and every "
            f"service's state is split that way. Start with --shards {recorded}, or start over from empty "
            f"streams (`just reset`)"
        )


class StreamAdmin(Connection):
    """Creating the streams, recording the shard count, reading a stream back at start-up."""

    async def ensure_streams(
        self, *, max_age_s: float, duplicate_window_s: float = DUPLICATE_WINDOW_S, update: bool = True
    ) -> None:
        """Create the system's streams; with ``update``, bring an existing one's retention up to date.

        File storage, so that acknowledged messages survive a broker restart. JetStream remembers each
        ``Nats-Msg-Id`` for ``duplicate_window_s`` to drop a re-published duplicate (what comes back later is
        stopped by the watermarks downstream). Tools (replay, dlq) pass
        ``update=False``: the services own the streams' settings.
        """
        for spec in STREAMS:
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                storage=StorageType.FILE,
                max_age=max_age_s,
                duplicate_window=duplicate_window_s,
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
