"""Leases and fencing against a real nats-server: one instance acts for a shard, a standby takes over when its
lease lapses, and the streams refuse whatever the former holder publishes afterwards."""

from __future__ import annotations

import asyncio
import time

import nats.js.errors
import pytest

from rrr.shared import subjects
from rrr.shared.bus import COMMAND_STREAM, Bus, Fence, FenceSpec, Lease, LeaseLostError
from rrr.shared.bus.fencing import wrong_last_sequence
from rrr.shared.bus.lease import LeaseHolder, lease_key
from tests.support.factories import make_order, unique_id

TTL_S = 1.0


def _lease(bus: Bus, name: str, key: str) -> Lease:
    holder = LeaseHolder(instance=name, pid=0, since_ns=time.time_ns(), ttl_ms=int(TTL_S * 1000))
    return Lease(bus, key, holder, TTL_S)


def _fence(lease: Lease, shard: int) -> Fence:
    spec = FenceSpec(
        COMMAND_STREAM.name,
        subjects.fence_filter(subjects.ORDER_COMMAND, shard),
        subjects.fence_marker(subjects.ORDER_COMMAND, shard, "strategy"),
    )
    return Fence(lease, [spec])


async def test_a_standby_waits_while_the_lease_is_renewed_and_takes_it_within_its_time_to_live_once_it_lapses(
    bus: Bus,
) -> None:
    key = lease_key("strategy", 0)
    active, standby = _lease(bus, "a", key), _lease(bus, "b", key)
    stop = asyncio.Event()
    assert await active.acquire(stop)
    renewing = asyncio.ensure_future(active.renew_until(stop))
    waiting = asyncio.ensure_future(standby.acquire(stop))
    # Three times the time to live with the lease renewed: the standby stands by.
    done, _ = await asyncio.wait({waiting}, timeout=3 * TTL_S)
    assert not done
    assert active.valid()
    stopped_at = time.monotonic()
    renewing.cancel()  # the holder dies: nobody renews
    assert await asyncio.wait_for(waiting, timeout=5 * TTL_S)
    took = time.monotonic() - stopped_at
    print(f"\nlease {key} taken over {took:.2f} s after its holder stopped renewing (time to live {TTL_S:g} s)")
    assert took < 2 * TTL_S
    assert not active.valid()
    with pytest.raises(LeaseLostError):
        await active.renew_until(asyncio.Event())
    stop.set()


async def test_a_lease_released_by_a_clean_stop_is_taken_at_once(bus: Bus) -> None:
    key = lease_key("execution", 1)
    active, standby = _lease(bus, "a", key), _lease(bus, "b", key)
    stop = asyncio.Event()
    assert await active.acquire(stop)
    waiting = asyncio.ensure_future(standby.acquire(stop))
    await asyncio.sleep(0)  # the standby has tried once: it stands by
    released_at = time.monotonic()
    await active.release()
    assert await asyncio.wait_for(waiting, timeout=TTL_S)
    assert time.monotonic() - released_at < TTL_S


async def test_a_holder_whose_lease_lapsed_publishes_nothing_and_the_stream_refuses_its_late_message(
    bus: Bus, nats_url: str
) -> None:
    shard = 0
    key = lease_key("strategy", shard)
    other = await Bus.connect(nats_url, service="test", name=unique_id("standby"))
    try:
        former, taker = _lease(bus, "former", key), _lease(other, "taker", key)
        stop = asyncio.Event()
        assert await former.acquire(stop)
        bus.fence = _fence(former, shard)
        await bus.fence.arm(bus.js)
        order = make_order("EURUSD")
        subject = subjects.order_command("EURUSD", 1)
        assert len(await bus.publish_persistent_acks([bus.prepare(subject, order)], retry_until=stop)) == 1
        late = bus.fence.headers(bus.fence.specs[0], bus.prepare(subject, make_order("EURUSD")).headers)

        # The holder freezes: no renewal. The standby takes over and marks the shard's subjects.
        assert await asyncio.wait_for(taker.acquire(stop), timeout=5 * TTL_S)
        other.fence = _fence(taker, shard)
        await other.fence.arm(other.js)

        # Woken, the former holder knows before publishing that its lease lapsed ...
        with pytest.raises(LeaseLostError):
            await bus.publish_persistent_acks([bus.prepare(subject, make_order("EURUSD"))], retry_until=stop)
        # ... and a message it had sent before freezing, landing now, is refused by the stream itself.
        with pytest.raises(nats.js.errors.APIError) as refused:
            await bus.js.publish(subject, b"late", headers=late)
        assert wrong_last_sequence(refused.value)
        # The new holder publishes on.
        acks = await other.publish_persistent_acks([other.prepare(subject, make_order("EURUSD"))], retry_until=stop)
        assert len(acks) == 1
        info = await bus.js.stream_info(COMMAND_STREAM.name, subjects_filter=">")
        assert info.state.subjects is not None
        assert info.state.subjects == {subject: 2, subjects.fence_marker(subjects.ORDER_COMMAND, shard, "strategy"): 2}
    finally:
        await other.close()


async def test_a_late_message_of_the_former_holder_before_the_new_holders_first_makes_it_read_the_fence_again(
    bus: Bus, nats_url: str
) -> None:
    shard = 2
    key = lease_key("strategy", shard)
    lease = _lease(bus, "holder", key)
    stop = asyncio.Event()
    assert await lease.acquire(stop)
    bus.fence = _fence(lease, shard)
    await bus.fence.arm(bus.js)
    symbol = next(s for s in (f"S{i}" for i in range(100)) if subjects.shard_of(s, 3) == shard)
    subject = subjects.order_command(symbol, 3)
    # Someone else's message lands on the shard (as a former holder's, sent before the takeover, would).
    await bus.js.publish(subject, b"", headers={"Nats-Msg-Id": unique_id("stray")})
    acks = await bus.publish_persistent_acks([bus.prepare(subject, make_order(symbol))], retry_until=stop)
    assert len(acks) == 1
    assert bus.fence.rearmed == 1
