"""NATS service discovery: every service instance answers the NATS micro protocol (v1).

``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS``, alone, with the service's name (``rrr-strategy``) or with
its name and the instance's id, are answered on the requester's inbox with the protocol's JSON: standard
NATS tooling (``nats micro ls``) lists the instances, and ``rrr-stack status`` finds them on any machine. The
metadata says which instance it is (its name, shard, pid) and where its metrics are.

Written here rather than with nats-py's ``nats.micro``: that module lists only request endpoints it
subscribes itself (the services' work comes from JetStream consumers), stamps times with
``datetime.utcnow()`` (deprecated since Python 3.12, and the tests turn warnings into errors), and answers
any reply subject. Here each consumer and subscription is listed as an endpoint with its messages and
handler time, and only an inbox is answered (``rrr.shared.subjects.is_inbox``), as every request the
services serve: a reply subject of the system's own would carry the answer into a stream.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from rrr.shared import subjects
from rrr.shared.bus import Bus

__all__ = ["Advertised", "EndpointInfo", "EndpointStats", "Info", "Ping", "Stats", "advertise", "service_name"]


class Ping(msgspec.Struct, kw_only=True):
    """The answer to ``$SRV.PING``."""

    type: str = "io.nats.micro.v1.ping_response"
    name: str
    id: str
    version: str
    metadata: dict[str, str]


class EndpointInfo(msgspec.Struct, kw_only=True):
    """One endpoint in an INFO answer: here a consumer or subscription, on its subject."""

    name: str
    subject: str
    queue_group: str = ""
    metadata: dict[str, str] = {}


class Info(msgspec.Struct, kw_only=True):
    """The answer to ``$SRV.INFO``."""

    type: str = "io.nats.micro.v1.info_response"
    name: str
    id: str
    version: str
    description: str
    endpoints: list[EndpointInfo]
    metadata: dict[str, str]


class EndpointStats(msgspec.Struct, kw_only=True):
    """One endpoint in a STATS answer: messages as requests, handler time in nanoseconds."""

    name: str
    subject: str
    queue_group: str = ""
    num_requests: int
    num_errors: int = 0
    last_error: str = ""
    processing_time: int
    average_processing_time: int
    data: dict[str, int | float | None]


class Stats(msgspec.Struct, kw_only=True):
    """The answer to ``$SRV.STATS``."""

    type: str = "io.nats.micro.v1.stats_response"
    name: str
    id: str
    version: str
    started: str
    endpoints: list[EndpointStats]
    metadata: dict[str, str]


def service_name(service: str) -> str:
    """The name a service is discovered by: its program's (``market_data`` -> ``rrr-market-data``)."""
    return f"rrr-{service.replace('_', '-')}"


class Advertised:
    """A service instance answering discovery requests until ``close``."""

    def __init__(self, bus: Bus, service: str, version: str, description: str, metadata: Mapping[str, str]) -> None:
        self.bus = bus
        self.name = service_name(service)
        # Unique per run, as the protocol wants (a restarted instance is a new one): 22 characters like a NUID.
        self.id = secrets.token_hex(11)
        self.version = version
        self.description = description
        self.metadata = dict(metadata)
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self._subscriptions: list[NatsSubscription] = []
        self._encoder = msgspec.json.Encoder()

    async def start(self) -> None:
        """Subscribe to the verbs, alone, with the name, and with the name and id."""
        for verb in subjects.DISCOVERY_VERBS:
            for subject in (
                subjects.discovery(verb),
                subjects.discovery(verb, self.name),
                subjects.discovery(verb, self.name, self.id),
            ):
                self._subscriptions.append(await self.bus.nc.subscribe(subject, cb=self._answer))

    async def close(self) -> None:
        """Stop answering."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()

    def ping(self) -> Ping:
        """What PING answers."""
        return Ping(name=self.name, id=self.id, version=self.version, metadata=self.metadata)

    def info(self) -> Info:
        """What INFO answers: the identity and every consumer and subscription as an endpoint."""
        return Info(
            name=self.name,
            id=self.id,
            version=self.version,
            description=self.description,
            metadata=self.metadata,
            endpoints=[
                EndpointInfo(name=_endpoint_name(c.name), subject=c.subject, metadata={"plane": c.plane})
                for c in self.bus.traffic.consumers.values()
            ],
        )

    def stats(self) -> Stats:
        """What STATS answers: per consumer or subscription, its messages, handler time and lag."""
        endpoints = []
        for c in self.bus.traffic.consumers.values():
            total_ns = int(c.handler_s.sum * 1e9)
            endpoints.append(
                EndpointStats(
                    name=_endpoint_name(c.name),
                    subject=c.subject,
                    num_requests=c.messages,
                    processing_time=total_ns,
                    average_processing_time=total_ns // c.handler_s.count if c.handler_s.count else 0,
                    data={"batches": c.batches.count, "pending": c.pending, "lag_s": c.lag_s},
                )
            )
        return Stats(
            name=self.name,
            id=self.id,
            version=self.version,
            started=self.started,
            endpoints=endpoints,
            metadata=self.metadata,
        )

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply or not subjects.is_inbox(msg.reply):
            return  # an answer goes to an inbox only, never into the system's own subjects
        verb = msg.subject.split(".")[1]
        answer: Ping | Info | Stats = self.ping() if verb == "PING" else self.info() if verb == "INFO" else self.stats()
        await self.bus.nc.publish(msg.reply, self._encoder.encode(answer))


def _endpoint_name(name: str) -> str:
    """A consumer's or subscription's name as the protocol allows an endpoint's (A-Z, a-z, 0-9, _ and -)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "endpoint"


async def advertise(bus: Bus, service: str, version: str, description: str, metadata: Mapping[str, str]) -> Advertised:
    """Answer discovery requests for ``service`` on ``bus`` (until ``close``)."""
    advertised = Advertised(bus, service, version, description, metadata)
    await advertised.start()
    return advertised
