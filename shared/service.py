"""The one service runner: a service declares what is particular to it, and ``Service.run`` does the rest.

A service is a ``Service``: its name, its config type and a ``start`` function that, given a ``Context``
(config, connected bus, stop event, exit stack, clock), restores its state and returns a ``Plan``: its
consumers and subscriptions as data, its background tasks, its counters and gauges. ``Service.run`` connects,
creates the streams, checks the shard count, calls ``start``, runs the plan with a heartbeat, and on
``stop`` drains: consumers finish the batch in hand, then everything entered in the exit stack closes in
reverse order (the bus drains last but for what was opened before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import nats.errors
from opentelemetry.sdk.trace import TracerProvider

from rrr.shared import discovery, metrics, subjects
from rrr.shared.bus import BeforeAck, Bus, Consumer, Subscription
from rrr.shared.bus.fencing import Fence, FenceSpec
from rrr.shared.bus.lease import Lease, LeaseHolder, lease_key
from rrr.shared.clock import Clock, wall_clock
from rrr.shared.config import ServiceConfig, redact
from rrr.shared.counters import Counters
from rrr.shared.errors import RRRError
from rrr.shared.messages import Heartbeat
from rrr.shared.metrics import MetricSource, ServiceCollector
from rrr.shared.telemetry import setup_tracing

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=ServiceConfig)


@dataclass(frozen=True, slots=True)
class Context(Generic[C]):
    """What a service's ``start`` is given."""

    config: C
    bus: Bus
    stop: asyncio.Event
    # Whatever ``start`` opens is entered here; it closes before the bus drains.
    stack: contextlib.AsyncExitStack
    clock: Clock


@dataclass(slots=True)
class Plan:
    """What a service runs once started."""

    consumers: Sequence[Consumer[Any]] = ()
    subscriptions: Sequence[Subscription[Any]] = ()
    # Long-running work of the service's own (a feed), run beside the consumers until ``stop``.
    tasks: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    counters: Counters | None = None
    # Numbers read at each heartbeat (how many symbols, positions ...), not counted.
    gauges: Callable[[], Mapping[str, int]] | None = None
    # Said in the "serving" log line, e.g. where a consumer resumes.
    note: str = ""
    # Prometheus metrics of the service's own (labelled: per venue, per strategy ...), read at each scrape;
    # the counters and gauges above are exported as they are (rrr.shared.metrics).
    metrics: Sequence[MetricSource] = ()


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks the fault suite passes in to crash a service at an exact point; none in production."""

    before_ack: BeforeAck | None = None


@dataclass(frozen=True, slots=True)
class Service(Generic[C]):
    """A service, declared.

    ``fences``: the streams and subjects its shard's output goes to (and its snapshot's head), fenced while it
    holds its shard's lease (``--lease-ttl-ms``, a standby beside it): see ``rrr.shared.bus.fencing``.
    """

    name: str
    config_type: type[C]
    start: Callable[[Context[C]], Awaitable[Plan]]
    description: str = ""
    fences: Callable[[C], Sequence[FenceSpec]] | None = None

    async def run(
        self,
        config: C,
        stop: asyncio.Event,
        *,
        tracer_provider: TracerProvider | None = None,
        clock: Clock = wall_clock,
        hooks: Hooks | None = None,
    ) -> None:
        """Run the service with ``config`` until ``stop`` is set, then drain and close.

        ``tracer_provider`` replaces the one built from ``config.otel_exporter`` (tests collect spans that
        way); ``clock`` is what handlers stamp their own times with; ``hooks`` are the fault suite's.
        """
        hooks = hooks or Hooks()
        provider = tracer_provider or setup_tracing(self.name, config.otel_exporter)
        async with contextlib.AsyncExitStack() as stack:
            if tracer_provider is None:
                stack.callback(provider.shutdown)
            connecting = asyncio.ensure_future(
                Bus.connect(
                    config.nats_url,
                    service=self.name,
                    name=instance_name(self.name, config),
                    tracer=provider.get_tracer("rrr"),
                    before_ack=hooks.before_ack,
                    dlq_key=config.dlq_key.encode() or None,
                    # Without an exporter, nothing starts a trace here: only traces begun elsewhere go on.
                    trace_roots=tracer_provider is not None or config.otel_exporter != "none",
                    tls=config.nats_tls(),
                )
            )
            # A service waits for NATS as long as it takes, but a stop while waiting ends it at once.
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((connecting, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
                _log.info("stopped before NATS at %s could be reached", redact(config.nats_url))
                return
            bus = connecting.result()
            stack.push_async_callback(bus.close)
            await bus.ensure_streams(
                max_age_s=config.stream_max_age_s,
                duplicate_window_s=config.duplicate_window_s,
                limits=config.store_limits(),
                replicas=config.stream_replicas,
            )
            await bus.check_shards(config.shards)
            lease = None
            if config.lease_ttl_ms:
                lease = await self._take_lease(bus, config, stop, clock)
                if lease is None:
                    return  # stopped while standing by
                # Given up last, after the final snapshot: the standby then takes over at once.
                stack.push_async_callback(lease.release)
                if self.fences is not None:
                    bus.fence = Fence(lease, self.fences(config))
                    await bus.fence.arm(bus.js)
            plan = await self.start(Context(config=config, bus=bus, stop=stop, stack=stack, clock=clock))
            if lease is not None:
                plan = _holding(plan, lease, bus.fence, stop)
            for subscription in plan.subscriptions:
                await bus.subscribe(subscription)
            metrics_url = await _serve_metrics(self.name, config, bus, plan, stack)
            advertised = await discovery.advertise(
                bus,
                self.name,
                version(),
                self.description or self.name,
                {
                    "instance": instance_name(self.name, config),
                    "shard": str(config.shard),
                    "shards": str(config.shards),
                    "pid": str(os.getpid()),
                    "metrics": metrics_url or "",
                },
            )
            # Closed before the bus drains: an instance that stops stops answering first.
            stack.push_async_callback(advertised.close)
            note = f" {plan.note}" if plan.note else ""
            if metrics_url:
                note += f", metrics at {metrics_url}"
            _log.info("serving shard %d of %d%s with %r", config.shard, config.shards, note, config)
            async with asyncio.TaskGroup() as tasks:
                for consumer in plan.consumers:
                    tasks.create_task(bus.consume(consumer, stop, ack_wait_s=config.ack_wait_s))
                for task in plan.tasks:
                    tasks.create_task(task())
                tasks.create_task(_heartbeats(bus, self.name, config, stop, clock, plan))

    async def _take_lease(self, bus: Bus, config: C, stop: asyncio.Event, clock: Clock) -> Lease | None:
        """Stand by, heartbeating, until this instance holds its shard's lease; None if stopped first."""
        instance = instance_name(self.name, config)
        holder = LeaseHolder(instance=instance, pid=os.getpid(), since_ns=clock(), ttl_ms=config.lease_ttl_ms)
        lease = Lease(bus, lease_key(self.name, config.shard), holder, config.lease_ttl_ms / 1000)
        standing_by = asyncio.Event()
        standby = Plan(gauges=lease.gauges)
        beating = asyncio.ensure_future(
            _heartbeats(bus, self.name, config, standing_by, clock, standby, farewell=False)
        )
        try:
            return lease if await lease.acquire(stop) else None
        finally:
            standing_by.set()
            await beating


class MetricsAddressError(RRRError):
    """The metrics address cannot be listened on."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"cannot serve metrics on {host}:{port}: expected a free port on an address of this machine, but {reason} "
            "(--metrics-port, 0 for none)"
        )


def version() -> str:
    """The project's version, as installed."""
    try:
        return importlib.metadata.version("rrralgorithms")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


async def _serve_metrics(
    service: str, config: ServiceConfig, bus: Bus, plan: Plan, stack: contextlib.AsyncExitStack
) -> str | None:
    """Serve the instance's metrics if ``config.metrics_port`` asks for it; return their URL."""
    if not config.metrics_port:
        return None
    collector = ServiceCollector(
        service=service,
        shard=config.shard,
        info={"name": instance_name(service, config), "version": version(), "pid": str(os.getpid())},
        bus_counters=bus.counters.values,
        traffic=bus.traffic,
        counters=plan.counters.values if plan.counters is not None else None,
        gauges=plan.gauges,
        sources=plan.metrics,
    )
    try:
        server = await metrics.serve(metrics.service_registry(collector), config.metrics_host, config.metrics_port)
    except OSError as exc:
        raise MetricsAddressError(config.metrics_host, config.metrics_port, exc.strerror or str(exc)) from None

    async def _close() -> None:
        server.close()
        await server.wait_closed()

    stack.push_async_callback(_close)
    return f"http://{config.metrics_host}:{config.metrics_port}/metrics"


def heartbeat_id(instance: str, seq: int) -> str:
    """A heartbeat's id: ``<instance>:<pid>:<seq>``, so a watcher can tell which process sent it."""
    return f"{instance}:{os.getpid()}:{seq}"


def heartbeat_pid(beat: Heartbeat) -> int | None:
    """The pid of the process that sent ``beat`` by its id (``heartbeat_id``), or None if the id has none."""
    prefix = f"{beat.instance}:"
    if not beat.id.startswith(prefix):
        return None
    pid, sep, seq = beat.id.removeprefix(prefix).partition(":")
    if not (sep and pid.isascii() and pid.isdigit() and seq.isascii() and seq.isdigit()):
        return None
    return int(pid)


def instance_name(service: str, config: ServiceConfig) -> str:
    """The instance's name: configured, or ``<service>-<shard>@<host>``."""
    return config.instance or f"{service}-{config.shard}@{socket.gethostname()}"


def _holding(plan: Plan, lease: Lease, fence: Fence | None, stop: asyncio.Event) -> Plan:
    """``plan`` with the lease renewed beside it until ``stop``, and its state in the heartbeat."""
    gauges = plan.gauges

    def _gauges() -> dict[str, int]:
        values = {**(gauges() if gauges is not None else {}), **lease.gauges()}
        return values | fence.gauges() if fence is not None else values

    # Renewing stops the service if the lease is lost (LeaseLostError): another instance acts now.
    renew = functools.partial(lease.renew_until, stop)
    return dataclasses.replace(plan, tasks=[*plan.tasks, renew], gauges=_gauges)


async def _heartbeats(
    bus: Bus,
    service: str,
    config: ServiceConfig,
    stop: asyncio.Event,
    clock: Clock,
    plan: Plan,
    *,
    farewell: bool = True,
) -> None:
    """Publish a heartbeat with the service's counters every ``heartbeat_ms`` until ``stop`` is set, then one
    saying it stops (unless not ``farewell``: a standby that starts acting goes on beating)."""
    instance = instance_name(service, config)
    subject = subjects.heartbeat(service, config.shard)
    seq = 0

    async def _beat(status: Literal["starting", "ok", "stopping"]) -> None:
        nonlocal seq
        seq += 1
        values = bus.counters.values()
        if plan.counters is not None:
            values.update(plan.counters.values())
        if plan.gauges is not None:
            values.update(plan.gauges())
        for source in plan.metrics:
            values.update(source.heartbeat())
        now = clock()
        message = Heartbeat(
            id=heartbeat_id(instance, seq),
            ts_event=now,
            ts_init=now,
            service=service,
            instance=instance,
            shard=config.shard,
            shards=config.shards,
            status=status,
            counters=values,
        )
        try:
            await bus.publish(subject, message)
        except nats.errors.Error:
            bus.counters.heartbeats_missed += 1  # the broker is away; the next beat tells the rest

    while not stop.is_set():
        await _beat("ok")
        # A periodic timer, not synchronisation: wake early when asked to stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.heartbeat_ms / 1000)
    if farewell:
        with contextlib.suppress(Exception):
            await _beat("stopping")
