"""The bounds of every stream and bucket against a real nats-server: what each limit is, and what happens at it.

At a limit JetStream refuses the newest message (discard policy "new") and says so to the publisher: a message
larger than a stream's ``max_msg_size`` for good (400), a stream at its ``max_bytes`` or ``max_msgs`` until
there is room again (503), which every publisher of the system waits out. Nothing stored is ever dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.js.errors
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from rrr.shared import subjects
from rrr.shared.bus import (
    COMMAND_STREAM,
    DEAD_LETTER_STREAM,
    DLQ_REASON,
    MARKET_DATA_STREAM,
    META_BUCKET,
    STREAMS,
    Bus,
    StoreTooSmallError,
    Subscription,
)
from rrr.shared.config import ServiceConfig
from rrr.shared.errors import TransientError
from rrr.shared.limits import HEADROOM_BYTES, KiB, MiB, StoreLimits
from rrr.shared.messages import Quote, market_data_decoder
from tests.support.factories import make_order, unique_id, unique_symbol
from tests.support.streams import count, stream_messages
from tests.support.waiting import wait_until

MAX_AGE_S = ServiceConfig().stream_max_age_s
# The smallest budget the settings allow: RRR_CMD gets 2 of 32 shares, 2 MiB.
SMALL = StoreLimits(max_bytes=32 * MiB, max_msgs=32_000, max_msg_bytes=64 * KiB)


@pytest.fixture
async def bare_bus(nats_url: str) -> AsyncIterator[Bus]:
    """A bus on the test's nats-server with no stream created yet."""
    bus = await Bus.connect(nats_url, service="test", name=unique_id("test-limits"))
    try:
        yield bus
    finally:
        await bus.close()


async def _fill(bus: Bus, subject: str, size: int) -> tuple[int, int]:
    """Publish messages of ``size`` bytes on ``subject`` until its stream refuses one, then top the stream up
    with empty ones until it refuses those too; return how many of ``size`` it took, and how many in all."""
    stored = [0, 0]
    for i, payload in enumerate((b"b" * size, b"")):
        while True:
            try:
                await bus.js.publish(subject, payload)
            except nats.js.errors.ServiceUnavailableError as exc:
                if exc.description not in ("maximum bytes exceeded", "maximum messages exceeded"):
                    raise
                break
            stored[i] += 1
    return stored[0], sum(stored)


async def test_every_stream_and_bucket_gets_its_share_of_the_budget_and_refuses_the_newest_at_a_limit(
    bare_bus: Bus,
) -> None:
    limits = StoreLimits(max_bytes=64 * MiB, max_msgs=64_000, max_msg_bytes=16 * KiB)
    await bare_bus.ensure_streams(max_age_s=MAX_AGE_S, limits=limits)

    configs = {spec.name: (await bare_bus.js.stream_info(spec.name)).config for spec in STREAMS}
    shares = {spec.name: limits.share(spec.share, headroom=spec.headroom) for spec in STREAMS}
    assert {name: (c.max_bytes, c.max_msgs, c.max_msg_size, c.discard) for name, c in configs.items()} == {
        name: (s.max_bytes, s.max_msgs, s.max_msg_size, DiscardPolicy.NEW) for name, s in shares.items()
    }
    assert configs["RRR_MD"].max_bytes == 40 * MiB
    assert configs["RRR_MD"].max_msg_size == 16 * KiB
    # Dead letters and retries carry another stream's message with headers added.
    assert configs["RRR_DLQ"].max_msg_size == 16 * KiB + HEADROOM_BYTES
    assert sum(c.max_bytes or 0 for c in configs.values()) <= limits.max_bytes
    meta = (await bare_bus.js.stream_info(f"KV_{META_BUCKET}")).config
    assert (meta.max_bytes, meta.max_msg_size, meta.discard) == (1 * MiB, 4 * KiB, DiscardPolicy.NEW)


async def test_streams_and_the_meta_bucket_created_without_limits_get_them_and_keep_every_message_they_hold(
    bare_bus: Bus,
) -> None:
    # As a system started before the limits existed left them.
    await bare_bus.js.add_stream(
        StreamConfig(name=COMMAND_STREAM.name, subjects=list(COMMAND_STREAM.subjects), storage=StorageType.FILE)
    )
    for i in range(30):
        await bare_bus.js.publish(f"cmd.old.0.X{i}", b"x" * 100)
    await bare_bus.check_shards(1)
    # RRR_CMD may now hold 20 messages: it holds 30, keeps them all, and refuses the next.
    await bare_bus.ensure_streams(max_age_s=MAX_AGE_S, limits=StoreLimits(max_bytes=32 * MiB, max_msgs=320))

    assert (await bare_bus.js.stream_info(COMMAND_STREAM.name)).config.max_msgs == 20
    assert await count(bare_bus.js, COMMAND_STREAM.name) == 30
    with pytest.raises(nats.js.errors.ServiceUnavailableError, match="maximum messages exceeded"):
        await bare_bus.js.publish("cmd.old.0.X", b"x")
    assert (await bare_bus.js.stream_info(f"KV_{META_BUCKET}")).config.max_bytes == 1 * MiB
    await bare_bus.check_shards(1)


async def test_a_budget_the_store_cannot_hold_stops_the_service_naming_the_setting(bare_bus: Bus) -> None:
    with pytest.raises(StoreTooSmallError, match=r"RRR_STORE_MAX_BYTES") as raised:
        await bare_bus.ensure_streams(max_age_s=MAX_AGE_S, limits=StoreLimits(max_bytes=2**60))
    assert "insufficient storage" in str(raised.value)


async def test_a_message_over_max_msg_size_is_refused_to_its_publisher_at_once_and_stored_nowhere(bus: Bus) -> None:
    symbol = unique_symbol("BIG")
    order = make_order(symbol)
    fits = bus.prepare(subjects.order_command(symbol, 1), order)
    too_large = type(fits)(fits.subject, fits.data + b"\0" * (64 * KiB), fits.headers)
    stop = asyncio.Event()

    # Refused for good: not waited out like a full stream, even by a publisher that retries.
    with pytest.raises(nats.js.errors.BadRequestError, match="exceeds maximum"):
        await bus.publish_persistent_many([too_large], retry_until=stop)

    assert bus.counters.publish_retries == 0
    assert await count(bus.js, COMMAND_STREAM.name, subjects.order_command(symbol, 1)) == 0


@pytest.mark.parametrize(
    ("max_msgs", "size", "flooded"),
    [
        pytest.param(SMALL.max_msgs, 60 * KiB, 34, id="max_bytes"),  # 2 MiB for RRR_CMD: 34 of 60 KiB
        pytest.param(320, 16, 20, id="max_msgs"),  # 20 messages for RRR_CMD
    ],
)
async def test_a_full_stream_is_back_pressure_that_resolves_when_space_returns_and_loses_nothing(
    bare_bus: Bus, max_msgs: int, size: int, flooded: int
) -> None:
    bus = bare_bus
    await bus.ensure_streams(max_age_s=MAX_AGE_S, limits=StoreLimits(max_bytes=32 * MiB, max_msgs=max_msgs))
    flood = f"cmd.flood.0.{unique_symbol('FLOOD')}"
    assert (await _fill(bus, flood, size))[0] == flooded
    symbol = unique_symbol("WAIT")
    orders = [make_order(symbol) for _ in range(5)]
    stop = asyncio.Event()

    items = [bus.prepare(subjects.order_command(symbol, 1), o) for o in orders]
    publishing = asyncio.create_task(bus.publish_persistent_many(items, retry_until=stop))
    await wait_until(lambda: bus.counters.store_full >= 2, 10, "the publisher to wait on the full stream")
    assert not publishing.done()
    # Space returns (here the flood is purged; a message ageing out or a higher limit does the same).
    await bus.js.purge_stream(COMMAND_STREAM.name, subject=flood)

    assert await asyncio.wait_for(publishing, 30) == len(orders)
    stored = await stream_messages(bus.js, COMMAND_STREAM.name, subjects.order_command(symbol, 1))
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [o.id for o in orders]


async def test_a_full_stream_resolves_when_a_service_starts_with_a_larger_budget(bare_bus: Bus) -> None:
    bus = bare_bus
    await bus.ensure_streams(max_age_s=MAX_AGE_S, limits=SMALL)
    flood = f"cmd.flood.0.{unique_symbol('FLOOD')}"
    _, flooded = await _fill(bus, flood, 60 * KiB)
    symbol = unique_symbol("WAIT")
    order = make_order(symbol)
    stop = asyncio.Event()
    publishing = asyncio.create_task(
        bus.publish_persistent_many([bus.prepare(subjects.order_command(symbol, 1), order)], retry_until=stop)
    )
    await wait_until(lambda: bus.counters.store_full >= 1, 10, "the publisher to wait on the full stream")

    await bus.ensure_streams(max_age_s=MAX_AGE_S, limits=StoreLimits(max_bytes=64 * MiB))

    assert await asyncio.wait_for(publishing, 30) == 1
    assert await count(bus.js, COMMAND_STREAM.name, flood) == flooded


async def test_a_full_dead_letter_stream_holds_the_message_back_rather_than_losing_it(bare_bus: Bus) -> None:
    bus = bare_bus
    await bus.ensure_streams(max_age_s=MAX_AGE_S, limits=SMALL)
    await _fill(bus, "dlq.flood", 60 * KiB)
    symbol = unique_symbol("DLQ")
    await bus.js.publish(subjects.order_command(symbol, 1), b"\xc1 not msgpack")
    psub = await bus.js.pull_subscribe(subjects.order_command(symbol, 1), stream=COMMAND_STREAM.name)
    [msg] = await psub.fetch(1, timeout=5)

    with pytest.raises(TransientError, match="a stream is full: maximum bytes exceeded"):
        await bus.dead_letter(msg, "decode: garbage")

    assert bus.counters.store_full == 1
    await bus.js.purge_stream(DEAD_LETTER_STREAM.name, subject="dlq.flood")
    await bus.dead_letter(msg, "decode: garbage")
    assert await count(bus.js, DEAD_LETTER_STREAM.name, f"dlq.{subjects.order_command(symbol, 1)}") == 1


async def test_a_core_message_too_large_for_any_stream_is_dead_lettered_with_the_reason_without_its_payload(
    bus: Bus,
) -> None:
    symbol = unique_symbol("HUGE")
    subject = subjects.quote(symbol, 1)
    seen: list[Quote] = []

    async def _handle(_msg: object, quote: Quote) -> None:
        seen.append(quote)

    await bus.subscribe(Subscription(subjects.shard_filter(subjects.QUOTE, 0), market_data_decoder, _handle, shards=1))
    # Core NATS takes up to the server's max_payload (1 MiB); no stream takes more than its max_msg_size.
    await bus.nc.publish(subject, b"\xc1" * (200 * KiB), headers={"X-Big": "y" * 1000})

    async def _dead_letters() -> int:
        return await count(bus.js, DEAD_LETTER_STREAM.name, f"dlq.{subject}")

    await wait_until(_dead_letters, 10, "the dead letter")
    [letter] = await stream_messages(bus.js, DEAD_LETTER_STREAM.name, f"dlq.{subject}")
    assert letter.data == b""
    assert "X-Big" not in letter.headers
    assert letter.headers[DLQ_REASON].startswith("decode: ")
    assert letter.headers[DLQ_REASON].endswith("(its 204,800 bytes and headers not kept: over RRR_DLQ's max_msg_size)")
    assert await count(bus.js, MARKET_DATA_STREAM.name, subject) == 0
    assert seen == []
