"""What JetStream may hold for the system: one budget, split between its streams and buckets by fixed shares.

Every stream and bucket is created with ``max_bytes``, ``max_msgs`` and ``max_msg_size`` and the discard
policy "new": at a limit JetStream refuses the newest message, and the publisher is told (a 503, "maximum
bytes exceeded" or "maximum messages exceeded", which every publisher of the system waits out as it waits
out a full store). Policy "old" would drop the oldest message instead, which a consumer may not have read
yet: never silently.

nats-server reserves each stream's ``max_bytes`` on its store when the stream is created, and refuses a
stream whose reservation does not fit: the budget must fit the server's store (by default 75 % of the disk
that is free when nats-server starts).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# Fits the store nats-server gives itself on a machine with 11 GiB of free disk (a laptop, a CI runner); a
# deployment raises it to what its disk holds. RRR_MD, 20 shares of 32, holds 5 GiB: about 10 million quotes
# (about 500 bytes each as stored, with headers), a week at 16 quotes/s or half an hour at 5,000/s.
DEFAULT_STORE_MAX_BYTES = 8 * GiB
MIN_STORE_MAX_BYTES = 32 * MiB
# 128 bytes a message on average: for any real message (a quote is about 300 bytes) the bytes bind first;
# the count bounds what nats-server indexes of a flood of tiny messages.
DEFAULT_STORE_MAX_MSGS = 64_000_000
MIN_STORE_MAX_MSGS = 32_000
# A quote is about 300 bytes, an order event about 400, a dead letter's headers under 2 KiB: 64 KiB is far
# above any real message and far below nats-server's 1 MiB max_payload.
DEFAULT_MAX_MSG_BYTES = 64 * KiB
MIN_MAX_MSG_BYTES = 4 * KiB
MAX_MAX_MSG_BYTES = 512 * KiB
# The dead-letter and retry streams store another stream's message with headers of their own added.
HEADROOM_BYTES = 8 * KiB
SHARES = 32


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one stream or bucket."""

    max_bytes: int
    max_msgs: int
    max_msg_size: int


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The budget of the system's streams and buckets, and the largest message a stream stores."""

    max_bytes: int = DEFAULT_STORE_MAX_BYTES
    max_msgs: int = DEFAULT_STORE_MAX_MSGS
    max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES

    def share(self, parts: int, *, headroom: bool = False) -> Limits:
        """The limits of a stream that gets ``parts`` of ``SHARES`` of the budget.

        With ``headroom``, its messages may be ``HEADROOM_BYTES`` larger: it carries other streams'
        messages with headers added.
        """
        return Limits(
            max_bytes=self.max_bytes * parts // SHARES,
            max_msgs=max(self.max_msgs * parts // SHARES, 1),
            max_msg_size=self.max_msg_bytes + (HEADROOM_BYTES if headroom else 0),
        )


# RRR_META holds one small key (the shard count): a fixed bound outside the budget.
META_LIMITS = Limits(max_bytes=1 * MiB, max_msgs=1000, max_msg_size=4 * KiB)
