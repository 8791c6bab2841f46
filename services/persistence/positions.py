"""Where each consumer of persistence stands in its stream: the exactly-once sink's own bookkeeping.

A consumer's position (table ``consumer_positions``) is the last stream sequence up to which every message
it reads is done: its rows stored, or the message handed to the retries or dead-lettered. Each write
commits its rows and the new position in one transaction, so the position never claims rows that are not
there; a restart reads the stream from the message after it, without acknowledgements.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext

from rrr.persistence.store import Connection

_log = logging.getLogger(__name__)

# FOR UPDATE: two instances of one consumer (a mistake) write one after the other, each seeing the other's
# position, instead of both writing the same batch.
_LOCK = "SELECT last_seq FROM consumer_positions WHERE consumer = $1 AND stream = $2 FOR UPDATE"
_ADVANCE = """
INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ($1, $2, $3)
ON CONFLICT (consumer, stream) DO UPDATE SET last_seq = excluded.last_seq, updated_at = now()
 WHERE consumer_positions.last_seq < excluded.last_seq"""
_START = "INSERT INTO consumer_positions (consumer, stream, last_seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
_READ = "SELECT last_seq FROM consumer_positions WHERE consumer = $1 AND stream = $2"


@dataclass(frozen=True, slots=True)
class Position:
    """A consumer's row in ``consumer_positions``: its name (the durable name it had before) and stream."""

    consumer: str
    stream: str

    async def locked(self, conn: Connection) -> int:
        """The stored position, locked until the caller's transaction ends (0 if none is stored)."""
        return int(await conn.fetchval(_LOCK, self.consumer, self.stream) or 0)

    async def advance(self, conn: Connection, seq: int) -> None:
        """Move the position to ``seq`` in the caller's transaction; never backwards."""
        await conn.execute(_ADVANCE, self.consumer, self.stream, seq)

    async def resume(self, conn: Connection, js: JetStreamContext) -> int:
        """The stream sequence to start reading from: the one after the stored position.

        First start after an upgrade from acknowledged consumers: with no stored position, the old durable
        consumer of the same name says how far it got (its ack floor; anything acknowledged above it comes
        again, and is stored once); with neither, everything from the stream's start, stored once. The
        position is stored before the old durable is deleted, so a crash in between loses neither.
        """
        stored = await conn.fetchval(_READ, self.consumer, self.stream)
        if stored is None:
            try:
                floor = (await js.consumer_info(self.stream, self.consumer)).ack_floor.stream_seq
            except nats.js.errors.NotFoundError:
                floor = 0
            await conn.execute(_START, self.consumer, self.stream, floor)
            stored = await conn.fetchval(_READ, self.consumer, self.stream)
            _log.info("%s on %s: no stored position, starting after %d", self.consumer, self.stream, stored)
        # Without acknowledgements a durable would only hold messages for nobody: deleted, also when an
        # earlier start stored the position and stopped before it got here.
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self.stream, self.consumer)
            _log.info(
                "deleted the durable consumer %s on %s, replaced by its stored position", self.consumer, self.stream
            )
        return int(stored) + 1
