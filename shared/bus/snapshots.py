"""Snapshots: a service's state saved as one blob of any size, in chunks on the RRR_SNAPSHOTS stream.

A snapshot has a name (one per service instance, ``strategy-sma_cross-s0-of-1``) and on the stream:

- ``snap.<name>.chunk.<generation>``: the blob in chunks, in order, each below the stream's max_msg_size;
- ``snap.<name>.head``: which generation is the current one, with its chunk count, size and SHA-256.

A save writes every chunk under a new generation, then the head; only once the head is stored is everything
older of the name purged (the previous generation, and the chunks of a save that died half-way). A load reads
the head, then the chunks of that generation, and checks their count, order, size and digest. So a load sees
one whole snapshot, the new one or the one before, and never a mix of two.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import PubAck

from rrr.shared import subjects
from rrr.shared.bus.fencing import publish_one
from rrr.shared.bus.streams import SNAPSHOT_STREAM, StreamAdmin
from rrr.shared.errors import RRRError
from rrr.shared.limits import KiB

_log = logging.getLogger(__name__)

# Each chunk carries its index, so that a load can check the order it reads them in.
CHUNK = "Rrr-Chunk"
# Room under the stream's max_msg_size for the chunk's headers.
_CHUNK_HEADROOM = 1 * KiB
# Chunks in flight at once while saving.
_WINDOW = 32
# A save that replaced the snapshot while it was read: read it again, this many times at most.
_READS = 3


class SnapshotHead(msgspec.Struct, frozen=True, kw_only=True, tag="snapshot_head.v1"):
    """What the current generation of a snapshot is made of."""

    generation: str
    chunks: int
    size: int
    sha256: str
    # Stream sequence of its first chunk (0 when it has none).
    first_seq: int


class SnapshotCorruptError(RRRError):
    """A snapshot's chunks do not add up to what its head says."""

    def __init__(self, name: str, expected: str, seen: str) -> None:
        self.name = name
        super().__init__(
            f"snapshot {name} on {SNAPSHOT_STREAM.name}: expected {expected}, read {seen}; delete it "
            f"(purge subject {subjects.snapshot_head(name)}) to rebuild from the streams"
        )


_head_encoder = msgspec.msgpack.Encoder()
_head_decoder = msgspec.msgpack.Decoder(SnapshotHead)


class Snapshots(StreamAdmin):
    """Saving and loading snapshots of any size."""

    async def save_snapshot(self, name: str, data: bytes) -> None:
        """Store ``data`` as the current snapshot ``name``, replacing the previous one once it is whole.

        Raises:
            nats.errors.Error, TimeoutError: it could not be stored (a full stream, an outage); the previous
                snapshot stays the current one, and what was written of this one is purged.
        """
        info = await self.js.stream_info(SNAPSHOT_STREAM.name)
        # The stream's own limit, whichever service set it last.
        chunk_bytes = max((info.config.max_msg_size or 0) - _CHUNK_HEADROOM, _CHUNK_HEADROOM)
        generation = secrets.token_hex(8)
        chunk_subject = subjects.snapshot_chunks(name, generation)
        chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
        acks: list[PubAck] = []
        try:
            for start in range(0, len(chunks), _WINDOW):
                # Every publish of the window ends before the next window or the purge of a failure: none
                # may land after the purge.
                results = await asyncio.gather(
                    *(
                        self.js.publish(chunk_subject, chunk, headers={CHUNK: str(index)})
                        for index, chunk in enumerate(chunks[start : start + _WINDOW], start)
                    ),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                    acks.append(result)
            head = SnapshotHead(
                generation=generation,
                chunks=len(chunks),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                first_seq=min((ack.seq for ack in acks), default=0),
            )
            head_subject, head_data = subjects.snapshot_head(name), _head_encoder.encode(head)
            if self.fence is not None:
                # With a standby beside this instance, a head is stored only if no other wrote one since.
                head_ack = await publish_one(self.js, self.fence, head_subject, head_data)
            else:
                head_ack = await self.js.publish(head_subject, head_data)
        except BaseException:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.js.purge_stream(SNAPSHOT_STREAM.name, subject=chunk_subject)
            raise
        # Everything of this name stored before the new chunks: the previous generation, and what a save that
        # died half-way left behind. A failure here leaves them to the next save's purge.
        keep_from = head.first_seq or head_ack.seq
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.js.purge_stream(SNAPSHOT_STREAM.name, seq=keep_from, subject=subjects.snapshot_all_chunks(name))
            await self.js.purge_stream(SNAPSHOT_STREAM.name, seq=head_ack.seq, subject=subjects.snapshot_head(name))

    async def load_snapshot(self, name: str) -> bytes | None:
        """The current snapshot ``name``, or None when there is none.

        Raises:
            SnapshotCorruptError: its chunks do not match its head (missing, reordered, altered).
        """
        for attempt in range(_READS):
            try:
                raw = await self.js.get_last_msg(SNAPSHOT_STREAM.name, subjects.snapshot_head(name))
            except nats.js.errors.NotFoundError:
                return None
            head = _head_decoder.decode(raw.data or b"")
            try:
                return await self._read_chunks(name, head)
            except SnapshotCorruptError:
                # A save that replaced it meanwhile purges the chunks being read: read the new one.
                latest = await self.js.get_last_msg(SNAPSHOT_STREAM.name, subjects.snapshot_head(name))
                if latest.seq == raw.seq or attempt == _READS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_chunks(self, name: str, head: SnapshotHead) -> bytes:
        data = bytearray()
        read = 0
        if head.chunks:
            async with contextlib.aclosing(
                self.iter_stream(
                    SNAPSHOT_STREAM.name,
                    subjects.snapshot_chunks(name, head.generation),
                    start_seq=head.first_seq,
                    fetch=16,
                )
            ) as chunks:
                async for msg in chunks:
                    index = (msg.headers or {}).get(CHUNK)
                    if index != str(read):
                        raise SnapshotCorruptError(name, f"chunk {read}", f"chunk {index}")
                    data += msg.data
                    read += 1
        if read != head.chunks or len(data) != head.size:
            raise SnapshotCorruptError(
                name, f"{head.chunks} chunks of {head.size} bytes", f"{read} chunks of {len(data)} bytes"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != head.sha256:
            raise SnapshotCorruptError(name, f"SHA-256 {head.sha256}", f"SHA-256 {digest}")
        return bytes(data)
