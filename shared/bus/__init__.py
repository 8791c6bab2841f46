"""The message bus, one module per role.

- ``connection``: the NATS client, the JetStream context, the bus's counters and trace spans;
- ``streams``: the system's streams, the recorded shard count, reading a stream back at start-up;
- ``publish``: core and JetStream publishing, batches with every acknowledgement in flight;
- ``envelopes``: what a handler publishes together, one JetStream message per family and shard;
- ``batching``: natural batching of quotes into one message per shard;
- ``consume``: durable consumers and core subscriptions, as data, with typed handlers;
- ``dead_letters``: the dead-letter and retry streams;
- ``snapshots``: a service's state as one blob of any size, in chunks;
- ``lease`` and ``fencing``: which instance acts for a shard with a standby beside it, and the streams
  refusing any other.

``Bus`` is all of them on one connection: what a service or a tool holds.
"""

from __future__ import annotations

from rrr.shared.bus.batching import BatchCounters, QuoteBatcher, fitted
from rrr.shared.bus.connection import (
    Backoff,
    BeforeAck,
    BusCounters,
    NatsAuthorizationError,
    NatsTlsError,
    NatsUnavailableError,
    inbox_prefix,
    url_user,
)
from rrr.shared.bus.consume import Consumer, Consuming, Delivery, HandleBatch, Rejected, Subscription, stream_seq
from rrr.shared.bus.dead_letters import (
    ATTEMPTS,
    DLQ_DELIVERIES,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SERVICE,
    DLQ_SIGNATURE,
    DLQ_SUBJECT,
    dead_letter_signature,
    signature_valid,
)
from rrr.shared.bus.envelopes import open_envelope, pack, payloads, unpacked
from rrr.shared.bus.fencing import Fence, FenceSpec
from rrr.shared.bus.lease import LEASE_BUCKET, Lease, LeaseLostError
from rrr.shared.bus.outgoing import MSG_ID, Outgoing
from rrr.shared.bus.publish import Publisher
from rrr.shared.bus.snapshots import SnapshotCorruptError, Snapshots
from rrr.shared.bus.streams import (
    COMMAND_STREAM,
    DEAD_LETTER_STREAM,
    DUPLICATE_WINDOW_S,
    EVENT_STREAM,
    MARKET_DATA_STREAM,
    META_BUCKET,
    RETRY_STREAM,
    SIGNAL_STREAM,
    SNAPSHOT_STREAM,
    STREAMS,
    ShardCountError,
    StoreTooSmallError,
    StreamSpec,
)


class Bus(Consuming, Publisher, Snapshots):
    """A service's or a tool's connection to NATS, with every role of the bus."""


__all__ = [
    "ATTEMPTS",
    "COMMAND_STREAM",
    "DEAD_LETTER_STREAM",
    "DLQ_DELIVERIES",
    "DLQ_MSG_ID",
    "DLQ_REASON",
    "DLQ_SERVICE",
    "DLQ_SIGNATURE",
    "DLQ_SUBJECT",
    "DUPLICATE_WINDOW_S",
    "EVENT_STREAM",
    "LEASE_BUCKET",
    "MARKET_DATA_STREAM",
    "META_BUCKET",
    "MSG_ID",
    "RETRY_STREAM",
    "SIGNAL_STREAM",
    "SNAPSHOT_STREAM",
    "STREAMS",
    "Backoff",
    "BatchCounters",
    "BeforeAck",
    "Bus",
    "BusCounters",
    "Consumer",
    "Delivery",
    "Fence",
    "FenceSpec",
    "HandleBatch",
    "Lease",
    "LeaseLostError",
    "NatsAuthorizationError",
    "NatsTlsError",
    "NatsUnavailableError",
    "Outgoing",
    "Publisher",
    "QuoteBatcher",
    "Rejected",
    "ShardCountError",
    "SnapshotCorruptError",
    "StoreTooSmallError",
    "StreamSpec",
    "Subscription",
    "dead_letter_signature",
    "fitted",
    "inbox_prefix",
    "open_envelope",
    "pack",
    "payloads",
    "signature_valid",
    "stream_seq",
    "unpacked",
    "url_user",
]
