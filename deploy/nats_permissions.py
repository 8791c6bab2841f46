"""Who may do what on NATS: one user per service and per tool, each allowed only the subjects its role needs.

The roles are data (`ROLES`), rendered into the `authorization` block of nats.conf by `render_authorization`.
A user not listed there cannot connect at all: nats-server refuses anonymous connections once it has users.

A service may publish its own planes only (strategy `sig.>` and `cmd.order.>`, execution `evt.>` ...), its
own heartbeats, dead letters and its own retries; it may call the JetStream API for the streams it
creates and the ones it consumes, and the key-value buckets it uses, and nothing else; it may subscribe to
its own inbox (`_INBOX_<user>.>`, the prefix `rrr.shared.bus` gives each connection) and to what it reads
on core NATS. The tools get less: `tap` and `status` only listen, `replay` only publishes market data,
`dlq` reads and deletes dead letters and hands them back, `ui` (the dashboard) listens to heartbeats and
asks for discovery's STATS. `admin` (rrr-stack itself, the test fixtures)
may do everything.

The JetStream API subjects are those nats-py sends (`nats/js/manager.py`, `client.py`, `kv.py`):
`$JS.API.STREAM.CREATE.<stream>`, `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`,
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, acknowledgements on `$JS.ACK.<stream>.>` ... A
subject missing here shows as a "Publish Violation" line in nats.log; the end-to-end and fault tests
fail on any such line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rrr.deploy.credentials import new_password
from rrr.execution.app import SERVICE as EXECUTION
from rrr.market_data.app import SERVICE as MARKET_DATA
from rrr.persistence.app import SERVICE as PERSISTENCE
from rrr.shared import subjects
from rrr.shared.bus import (
    COMMAND_STREAM,
    DEAD_LETTER_STREAM,
    EVENT_STREAM,
    LEASE_BUCKET,
    MARKET_DATA_STREAM,
    META_BUCKET,
    RETRY_STREAM,
    SIGNAL_STREAM,
    SNAPSHOT_STREAM,
    STREAMS,
    StreamSpec,
    inbox_prefix,
)
from rrr.shared.discovery import service_name
from rrr.strategy.app import SERVICE as STRATEGY
from rrr.strategy.snapshots import LEGACY_BUCKET as STRATEGY_LEGACY_BUCKET

__all__ = ["ADMIN", "ROLES", "SERVICE_ROLES", "TOOL_ROLES", "Role", "new_users", "render_authorization"]

_API = "$JS.API"
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Role:
    """What one NATS user may publish and subscribe to; ``None`` means anything (admin only)."""

    name: str
    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    # May reply to the requests it received (market-data's latest-quote endpoint), whatever their inbox.
    allow_responses: bool = False

    def permissions(self) -> dict[str, object] | None:
        """The ``permissions`` map of this user in nats.conf, or None for no restriction."""
        if self.publish is None and self.subscribe is None:
            return None
        out: dict[str, object] = {}
        if self.publish is not None:
            # An empty allow list would mean "no restriction" to nats-server: deny everything instead.
            out["publish"] = {"allow": list(self.publish)} if self.publish else {"deny": [">"]}
        if self.subscribe is not None:
            out["subscribe"] = {"allow": list(self.subscribe)} if self.subscribe else {"deny": [">"]}
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def _inbox(user: str) -> str:
    return f"{inbox_prefix(user)}.>"


def _creates(streams: Iterable[StreamSpec], *, update: bool) -> list[str]:
    """What ``ensure_streams`` sends: a create, with ``update`` an update when the stream exists, and on a
    cluster the question whether each has a leader yet."""
    verbs = ("CREATE", "UPDATE", "INFO") if update else ("CREATE", "INFO")
    return [f"{_API}.STREAM.{verb}.{s.name}" for s in streams for verb in verbs]


def _consumes(stream: StreamSpec) -> list[str]:
    """A pull consumer on ``stream``: created (durable or not), asked about, deleted, fetched from, acked."""
    name = stream.name
    return [
        f"{_API}.CONSUMER.CREATE.{name}",
        f"{_API}.CONSUMER.CREATE.{name}.>",
        f"{_API}.CONSUMER.DURABLE.CREATE.{name}.>",
        f"{_API}.CONSUMER.INFO.{name}.>",
        f"{_API}.CONSUMER.DELETE.{name}.>",
        f"{_API}.CONSUMER.MSG.NEXT.{name}.>",
        f"$JS.ACK.{name}.>",
        # Flow control replies of an ordered push consumer.
        f"$JS.FC.{name}.>",
    ]


def _follows(stream: StreamSpec) -> list[str]:
    """An ordered push consumer on ``stream`` and nothing more: created, and its flow control answered."""
    return [f"{_API}.CONSUMER.CREATE.{stream.name}", f"{_API}.CONSUMER.CREATE.{stream.name}.>",
            f"$JS.FC.{stream.name}.>"]  # fmt: skip


def _reads_owned(stream: StreamSpec) -> list[str]:
    """A stream read from a position the reader keeps itself (``Consumer(acks=False)``): an ordered push
    consumer, created, its flow control answered, and deleted when re-created or done."""
    return [*_follows(stream), f"{_API}.CONSUMER.DELETE.{stream.name}.>"]


def _fenced(stream: StreamSpec) -> list[str]:
    """Where the shard's subjects end in ``stream``: its last message on them, read when fencing them."""
    return [f"{_API}.STREAM.MSG.GET.{stream.name}", f"{_API}.DIRECT.GET.{stream.name}.>"]


def _bucket_read(bucket: str) -> list[str]:
    """A key-value bucket, looked up and read (direct or not)."""
    stream = f"KV_{bucket}"
    return [f"{_API}.STREAM.INFO.{stream}", f"{_API}.DIRECT.GET.{stream}.>", f"{_API}.STREAM.MSG.GET.{stream}"]


def _bucket(bucket: str) -> list[str]:
    """A key-value bucket: looked up, created, read and written."""
    return [*_bucket_read(bucket), f"{_API}.STREAM.CREATE.KV_{bucket}", f"$KV.{bucket}.>"]


def _watches(bucket: str) -> list[str]:
    """A key-value bucket watched (``KeyValue.watchall``): an ordered push consumer on it, asked about."""
    stream = f"KV_{bucket}"
    return [
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.>",
        f"{_API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _snapshots() -> list[str]:
    """Saving and loading snapshots in chunks (``rrr.shared.bus.snapshots``): written, purged, read back."""
    name = SNAPSHOT_STREAM.name
    return [
        subjects.SNAPSHOT_ALL,
        f"{_API}.STREAM.INFO.{name}",
        f"{_API}.STREAM.PURGE.{name}",
        f"{_API}.STREAM.MSG.GET.{name}",
        f"{_API}.DIRECT.GET.{name}.>",
        *_consumes(SNAPSHOT_STREAM),
    ]


def _service(
    name: str,
    *,
    publishes: Iterable[str],
    consumes: Iterable[StreamSpec] = (),
    buckets: Iterable[str] = (),
    reads: Iterable[str] = (),
    listens: Iterable[str] = (),
    fences: Iterable[StreamSpec] = (),
) -> Role:
    """A service: its planes, heartbeats, dead letters and retries, the streams it creates and consumes, and
    where its shard's output ends in the streams it ``fences`` (``rrr.shared.bus.fencing``)."""
    publish = [
        *publishes,
        f"{subjects.HEARTBEAT}.{name}.>",
        subjects.DEAD_LETTER_ALL,
        f"retry.{name}.>",
        # Every service creates the streams at start (Service.run) and records the shard count.
        *_creates(STREAMS, update=True),
        *_bucket(META_BUCKET),
        # A bucket created before it had limits is brought up to them (StreamAdmin.ensure_streams).
        f"{_API}.STREAM.UPDATE.KV_{META_BUCKET}",
        *(subject for stream in consumes for subject in _consumes(stream)),
        *(subject for bucket in buckets for subject in _bucket(bucket)),
        # Fail-over (--lease-ttl-ms): its shard's lease, in a bucket whose time to live it sets.
        *_bucket(LEASE_BUCKET),
        f"{_API}.STREAM.UPDATE.KV_{LEASE_BUCKET}",
        *(subject for stream in fences for subject in _fenced(stream)),
        *reads,
    ]
    # Discovery (rrr.shared.discovery): it answers $SRV.<verb>, alone, with its name and with its id, on the
    # requester's inbox (allow_responses: one answer to each request received, wherever its inbox is).
    discovered = [
        *(subjects.discovery(verb) for verb in subjects.DISCOVERY_VERBS),
        f"{subjects.DISCOVERY_PREFIX}.*.{service_name(name)}",
        f"{subjects.DISCOVERY_PREFIX}.*.{service_name(name)}.*",
    ]
    return Role(name, tuple(publish), (*listens, *discovered, _inbox(name)), allow_responses=True)


def _listener(name: str, listens: Iterable[str]) -> Role:
    """A tool that only listens: it publishes nothing at all."""
    return Role(name, (), (*listens, _inbox(name)))


_SERVICES = (
    _service(
        MARKET_DATA,
        publishes=[subjects.MARKET_DATA_ALL],
        # Its latest-quote cache reads every quote on the bus; the request endpoint answers on the
        # requester's inbox (allow_responses).
        listens=[subjects.MARKET_DATA_ALL, f"{subjects.LATEST_QUOTE}.>"],
    ),
    _service(
        STRATEGY,
        # Its signals and order commands; among them, on cmd.order.<shard>._step, its lockstep markers (how far its
        # closed-loop strategies handled the quotes, rrr.execution.lockstep).
        publishes=[subjects.SIGNAL_ALL, f"{subjects.ORDER_COMMAND}.>"],
        consumes=[MARKET_DATA_STREAM],
        # The key-value bucket earlier versions kept their snapshot in: read once, then deleted.
        buckets=[STRATEGY_LEGACY_BUCKET],
        # Closed-loop strategies read their orders' outcomes (rrr.strategy.outcomes).
        reads=[*_snapshots(), *_reads_owned(EVENT_STREAM)],
        fences=[SIGNAL_STREAM, COMMAND_STREAM],
    ),
    _service(
        EXECUTION,
        # Its events (among them, on evt.order.<shard>._step, its lockstep progress), and the confirmations of the
        # trading states it applied.
        publishes=[f"{subjects.ORDER_EVENT}.>", f"{subjects.POSITION}.>", subjects.TRADING_APPLIED_ALL],
        # Commands and their retries; its own events, read back at start to rebuild its state; the market
        # data it prices orders at and matches open orders against, followed as it comes and read back
        # for an order that arrives after later quotes were matched.
        consumes=[COMMAND_STREAM, RETRY_STREAM, EVENT_STREAM, MARKET_DATA_STREAM],
        # The paper venue prices an order at the quote it reads from the market-data stream itself.
        reads=[
            f"{_API}.STREAM.INFO.{MARKET_DATA_STREAM.name}",
            f"{_API}.STREAM.MSG.GET.{MARKET_DATA_STREAM.name}",
            f"{_API}.DIRECT.GET.{MARKET_DATA_STREAM.name}.>",
            *_snapshots(),
            # The trading states it obeys (and sets, when the day's loss halts the account) and the account
            # view every shard tells its holdings to: both watched.
            *_watches(subjects.TRADING_BUCKET),
            *_watches(subjects.RISK_BUCKET),
        ],
        buckets=[subjects.TRADING_BUCKET, subjects.RISK_BUCKET],
        fences=[EVENT_STREAM],
    ),
    _service(
        PERSISTENCE,
        publishes=[],
        consumes=[MARKET_DATA_STREAM, SIGNAL_STREAM, EVENT_STREAM, RETRY_STREAM],
    ),
)

_TOOLS = (
    # `rrr-market-data replay` and the load generator: market data in, and the system's shard count read.
    Role(
        "replay",
        (subjects.MARKET_DATA_ALL, *_creates(STREAMS, update=False), *_bucket_read(META_BUCKET)),
        (_inbox("replay"),),
    ),
    # `rrr-tap`: watches every plane, sends nothing.
    _listener(
        "tap", [subjects.MARKET_DATA_ALL, subjects.SIGNAL_ALL, subjects.COMMAND_ALL, subjects.EVENT_ALL, "ctl.>"]
    ),
    # `rrr-stack status`: heartbeats, and the services' answers to discovery requests.
    Role(
        "status",
        tuple(f"{subjects.discovery(verb)}{suffix}" for verb in subjects.DISCOVERY_VERBS for suffix in ("", ".>")),
        ("ctl.>", _inbox("status")),
    ),
    # `rrr-control` (`just halt`, `just resume`): puts trading states, reads the account view, hears each shard
    # confirm what it applied.
    Role(
        "control",
        (
            *_bucket(subjects.TRADING_BUCKET),
            *_watches(subjects.TRADING_BUCKET),
            *_bucket_read(subjects.RISK_BUCKET),
            *_watches(subjects.RISK_BUCKET),
            *_bucket_read(META_BUCKET),
        ),
        (subjects.TRADING_APPLIED_ALL, _inbox("control")),
    ),
    # `rrr-ui`, the dashboard: listens to heartbeats and asks the services for their STATS (NATS service
    # discovery), answered on its inbox.
    # Its halt button does what `just halt` does, and its risk panel reads the trading states: `control`'s rights.
    Role(
        "ui",
        (
            subjects.discovery("STATS"),
            *_bucket(subjects.TRADING_BUCKET),
            *_watches(subjects.TRADING_BUCKET),
            *_bucket_read(subjects.RISK_BUCKET),
            *_watches(subjects.RISK_BUCKET),
            *_bucket_read(META_BUCKET),
        ),
        (subjects.HEARTBEAT_ALL, subjects.TRADING_APPLIED_ALL, _inbox("ui")),
    ),
    # `rrr-dlq`: reads and deletes dead letters, hands them back to the one service that failed on them.
    Role(
        "dlq",
        (
            *_creates(STREAMS, update=False),
            f"{_API}.STREAM.MSG.GET.{DEAD_LETTER_STREAM.name}",
            f"{_API}.STREAM.MSG.DELETE.{DEAD_LETTER_STREAM.name}",
            *_bucket_read(META_BUCKET),
            subjects.RETRY_ALL,
        ),
        (_inbox("dlq"),),
    ),
    Role(ADMIN, None, None),
)

ROLES: Mapping[str, Role] = {role.name: role for role in (*_SERVICES, *_TOOLS)}
SERVICE_ROLES = tuple(role.name for role in _SERVICES)
TOOL_ROLES = tuple(role.name for role in _TOOLS)


def render_authorization(passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of nats.conf: one user per role in ``passwords``, with its permissions.

    Raises:
        KeyError: a name in ``passwords`` is not a role.
    """
    users = []
    for name, password in passwords.items():
        user: dict[str, object] = {"user": name, "password": password}
        permissions = ROLES[name].permissions()
        if permissions is not None:
            user["permissions"] = permissions
        # JSON is valid nats.conf syntax, and quotes every subject ($JS..., _INBOX...) as a plain string.
        users.append("    " + json.dumps(user))
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


def new_users() -> dict[str, str]:
    """A fresh password for every role: the users of a nats-server that exists for one test or bench run."""
    return {name: new_password() for name in ROLES}
