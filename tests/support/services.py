"""Running a service in-process for a test, and watching the heartbeats that carry its counters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import TracerProvider

from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.config import ServiceConfig
from rrr.shared.messages import Heartbeat, heartbeat_decoder
from tests.support.factories import unique_id
from tests.support.waiting import wait_until

C = TypeVar("C", bound=ServiceConfig)
C_contra = TypeVar("C_contra", bound=ServiceConfig, contravariant=True)


class ServiceMain(Protocol[C_contra]):
    """A service's ``app.run``."""

    def __call__(
        self, config: C_contra, stop: asyncio.Event, *, tracer_provider: TracerProvider | None = None
    ) -> Awaitable[None]: ...


@contextlib.asynccontextmanager
async def client_bus(nats_url: str) -> AsyncIterator[Bus]:
    """A bus for the test itself, with the system's streams created as a service creates them."""
    bus = await Bus.connect(nats_url, service="test", name=unique_id("test-client"))
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s)
        yield bus
    finally:
        await bus.close()


class Heartbeats:
    """The latest heartbeat of every service instance, by instance name."""

    def __init__(self) -> None:
        self.latest: dict[str, Heartbeat] = {}

    @classmethod
    async def watch(cls, nc: Client) -> Heartbeats:
        """Subscribe to every heartbeat on ``nc``; the subscription is active when this returns."""
        heartbeats = cls()

        async def _on_heartbeat(msg: Msg) -> None:
            beat = heartbeat_decoder.decode(msg.data)
            heartbeats.latest[beat.instance] = beat

        await nc.subscribe(subjects.HEARTBEAT_ALL, cb=_on_heartbeat)
        await nc.flush()
        return heartbeats

    def counters(self, instance: str) -> dict[str, int]:
        """The counters of ``instance``'s latest heartbeat (empty before the first one)."""
        beat = self.latest.get(instance)
        return dict(beat.counters) if beat is not None else {}


@dataclass(frozen=True, slots=True)
class RunningService:
    """A service's ``run`` running as a task of the test's event loop."""

    instance: str
    task: asyncio.Task[None]
    stop: asyncio.Event
    heartbeats: Heartbeats

    def counters(self) -> dict[str, int]:
        """The counters of the service's latest heartbeat."""
        return self.heartbeats.counters(self.instance)

    async def wait_for_counters(
        self, predicate: Callable[[Mapping[str, int]], bool], what: str, *, timeout_s: float = 10.0
    ) -> dict[str, int]:
        """Wait until a heartbeat's counters satisfy ``predicate``; return those counters."""
        await wait_until(
            lambda: predicate(self.counters()),
            timeout_s,
            f"{self.instance}: {what}",
            describe=self.counters,
            watch=[self.task],
        )
        return self.counters()

    async def wait_for_counter(self, name: str, at_least: int, *, timeout_s: float = 10.0) -> dict[str, int]:
        """Wait until counter ``name`` reached ``at_least``; return all the counters of that heartbeat."""
        return await self.wait_for_counters(
            lambda c: c.get(name, 0) >= at_least, f"counter {name} >= {at_least}", timeout_s=timeout_s
        )


@contextlib.asynccontextmanager
async def running_service(
    main: ServiceMain[C],
    config: C,
    heartbeats: Heartbeats,
    *,
    tracer_provider: TracerProvider | None = None,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 15.0,
) -> AsyncIterator[RunningService]:
    """Run ``main(config, stop)`` as a task until the block ends; enter once its first heartbeat arrived.

    The instance gets a name of its own unless ``config.instance`` is set, so that heartbeats of an
    earlier run of the same service are never mistaken for this one's. On exit ``stop`` is set and the
    task is awaited (bounded by ``stop_timeout_s``), so an exception of the service fails the test.
    """
    if not config.instance:
        config = msgspec.structs.replace(config, instance=unique_id(type(config).__name__))
    stop = asyncio.Event()
    task: asyncio.Task[None] = asyncio.create_task(
        _as_coroutine(main(config, stop, tracer_provider=tracer_provider)), name=config.instance
    )
    service = RunningService(config.instance, task, stop, heartbeats)
    try:
        await wait_until(
            lambda: config.instance in heartbeats.latest,
            ready_timeout_s,
            f"the first heartbeat of {config.instance}",
            watch=[task],
        )
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=stop_timeout_s)


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable
