"""Snapshots of any size on a real nats-server: chunked, whole or not at all, bounded by their stream."""

from __future__ import annotations

import secrets

import nats.js.errors
import pytest

from rrr.shared import subjects
from rrr.shared.bus import SNAPSHOT_STREAM, Bus, SnapshotCorruptError
from rrr.shared.bus.snapshots import CHUNK
from rrr.shared.config import ServiceConfig
from rrr.shared.limits import MiB, StoreLimits
from tests.support.factories import unique_id
from tests.support.streams import count, stream_messages

# More than nats-server's 1 MiB max_payload, which a single key-value entry cannot exceed.
LARGE = 3 * MiB


def _name() -> str:
    return unique_id("snap").lower()


async def _chunk_subjects(bus: Bus, name: str) -> set[str]:
    return {m.subject for m in await stream_messages(bus.js, SNAPSHOT_STREAM.name, subjects.snapshot_all_chunks(name))}


async def test_a_snapshot_larger_than_a_message_can_be_is_saved_and_loaded_byte_for_byte(bus: Bus) -> None:
    name = _name()
    data = secrets.token_bytes(LARGE)

    await bus.save_snapshot(name, data)

    assert await bus.load_snapshot(name) == data
    # In chunks below the stream's max_msg_size (64 KiB by default).
    assert await count(bus.js, SNAPSHOT_STREAM.name, subjects.snapshot_all_chunks(name)) == 49


async def test_no_snapshot_loads_as_none_and_an_empty_one_as_empty(bus: Bus) -> None:
    name = _name()
    assert await bus.load_snapshot(name) is None
    await bus.save_snapshot(name, b"")
    assert await bus.load_snapshot(name) == b""


async def test_a_new_snapshot_replaces_the_previous_one_whose_chunks_are_purged(bus: Bus) -> None:
    name = _name()
    await bus.save_snapshot(name, secrets.token_bytes(LARGE))
    first = await _chunk_subjects(bus, name)
    newer = secrets.token_bytes(LARGE // 2)

    await bus.save_snapshot(name, newer)

    assert await bus.load_snapshot(name) == newer
    second = await _chunk_subjects(bus, name)
    assert len(second) == 1
    assert not second & first
    assert await count(bus.js, SNAPSHOT_STREAM.name, subjects.snapshot_head(name)) == 1


async def test_a_save_that_died_half_way_leaves_the_previous_snapshot_and_the_next_save_purges_its_chunks(
    bus: Bus,
) -> None:
    name = _name()
    kept = secrets.token_bytes(LARGE)
    await bus.save_snapshot(name, kept)
    # A process killed while writing the chunks of a newer one: chunks stored, no head pointing at them.
    dead = subjects.snapshot_chunks(name, "deadbeef")
    for index in range(5):
        await bus.js.publish(dead, secrets.token_bytes(60_000), headers={CHUNK: str(index)})

    assert await bus.load_snapshot(name) == kept

    await bus.save_snapshot(name, b"next")
    assert await bus.load_snapshot(name) == b"next"
    assert await count(bus.js, SNAPSHOT_STREAM.name, dead) == 0


async def test_a_snapshot_whose_chunks_do_not_match_its_head_is_refused_not_half_read(bus: Bus) -> None:
    name = _name()
    await bus.save_snapshot(name, secrets.token_bytes(LARGE))
    [first, *_] = await stream_messages(bus.js, SNAPSHOT_STREAM.name, subjects.snapshot_all_chunks(name))
    await bus.js.delete_msg(SNAPSHOT_STREAM.name, first.seq)

    with pytest.raises(SnapshotCorruptError, match=r"expected chunk 0, read chunk 1"):
        await bus.load_snapshot(name)


async def test_a_snapshot_too_large_for_its_stream_is_refused_and_the_previous_one_stays_whole(
    nats_url: str,
) -> None:
    bus = await Bus.connect(nats_url, service="test", name=unique_id("test-snapshots"))
    try:
        # RRR_SNAPSHOTS gets 2 of 32 shares: 2 MiB.
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, limits=StoreLimits(max_bytes=32 * MiB))
        name = _name()
        kept = secrets.token_bytes(MiB // 2)
        await bus.save_snapshot(name, kept)

        with pytest.raises(nats.js.errors.ServiceUnavailableError, match="maximum bytes exceeded"):
            await bus.save_snapshot(name, secrets.token_bytes(2 * MiB))

        assert await bus.load_snapshot(name) == kept
        assert len(await _chunk_subjects(bus, name)) == 1
    finally:
        await bus.close()


async def test_snapshots_never_expire_with_the_streams_they_stand_for(bus: Bus) -> None:
    assert (await bus.js.stream_info(SNAPSHOT_STREAM.name)).config.max_age in (0, None)
    assert (await bus.js.stream_info("RRR_EVT")).config.max_age == ServiceConfig().stream_max_age_s
