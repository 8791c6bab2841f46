"""The only place where a subject string is built or parsed.

Layout: ``<plane>.<kind>.<shard>.<symbol>`` for everything that belongs to a symbol, so that an instance
owning shard K subscribes to exactly its symbols with a ``*`` wildcard, and ``ctl.<kind>.<service>.<shard>``
for control traffic. The shard of a symbol is ``crc32(symbol) % shards``: stable across processes,
machines and Python versions (unlike ``hash()``), so every instance agrees on who owns what.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Final, NamedTuple

from rrr.shared.errors import InvalidSubjectError, InvalidSymbolError

_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9_\-]{0,31}")
_TOKEN = re.compile(r"[a-z]+")
_SHARD = re.compile(r"0|[1-9][0-9]{0,3}")
# A reply inbox: nats.py's ``_INBOX.<id>...``, or a per-user prefix ``_INBOX_<name>.<id>...``.
_INBOX = re.compile(r"_INBOX(_[A-Za-z0-9_-]+)?(\.[A-Za-z0-9_-]+)+")
_SNAPSHOT_NAME = re.compile(r"[a-z0-9_-]{1,64}")

QUOTE: Final = "md.quote"
# Quotes of many symbols of one shard in one message: ``md.quotes.<shard>.<source>``.
QUOTE_BATCH: Final = "md.quotes"
TRADE: Final = "md.trade"
SIGNAL: Final = "sig.signal"
ORDER_COMMAND: Final = "cmd.order"
ORDER_EVENT: Final = "evt.order"
POSITION: Final = "evt.position"
HEARTBEAT: Final = "ctl.heartbeat"
# An execution instance says it applied a trading state: ``ctl.trading.<shard>``.
TRADING_APPLIED: Final = "ctl.trading"
LATEST_QUOTE: Final = "req.quote"
DEAD_LETTER_PREFIX: Final = "dlq"

# A batch's source (the feed or tool that made it), the last token of its subject.
_SOURCE = re.compile(r"[a-z0-9_]{1,64}")

# Every family of per-symbol subjects (``<family>.<shard>.<symbol>``).
SYMBOL_FAMILIES: Final = frozenset({QUOTE, TRADE, SIGNAL, ORDER_COMMAND, ORDER_EVENT, POSITION, LATEST_QUOTE})
# Several messages of one of these families and one shard, published together, travel as one JetStream message
# (an envelope, rrr.shared.messages.Envelope) on ``<family>.<shard>._batch``. The last token is no symbol (a
# symbol starts with A-Z or 0-9), so a filter on a family's shard (``evt.order.3.*``) takes its envelopes too.
ENVELOPE_FAMILIES: Final = frozenset({SIGNAL, ORDER_COMMAND, ORDER_EVENT, POSITION})
ENVELOPE_TOKEN: Final = "_batch"  # noqa: S105 - a subject token, not a secret

# What each JetStream stream captures, by plane.
MARKET_DATA_ALL: Final = "md.>"
SIGNAL_ALL: Final = "sig.>"
COMMAND_ALL: Final = "cmd.>"
EVENT_ALL: Final = "evt.>"
DEAD_LETTER_ALL: Final = "dlq.>"
RETRY_ALL: Final = "retry.>"
SNAPSHOT_ALL: Final = "snap.>"
HEARTBEAT_ALL: Final = "ctl.heartbeat.>"
TRADING_APPLIED_ALL: Final = "ctl.trading.>"

# The key-value buckets of trading states (one key per scope) and of the account-wide risk view (one key per
# execution shard). Their subjects, ``$KV.<bucket>.<key>``, are the control plane every shard watches.
TRADING_BUCKET: Final = "RRR_TRADING"
RISK_BUCKET: Final = "RRR_RISK"
_NAME_TOKEN = re.compile(r"[a-z0-9_]{1,64}")


class SymbolSubject(NamedTuple):
    """A parsed per-symbol subject."""

    family: str
    shard: int
    symbol: str


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is safe as a subject token, else raise InvalidSymbolError.

    Only upper-case letters, digits, ``_`` and ``-`` are allowed, so a symbol can never inject a
    ``.``, ``*``, ``>`` or whitespace into a subject.
    """
    if not _SYMBOL.fullmatch(symbol):
        raise InvalidSymbolError(symbol)
    return symbol


def shard_of(symbol: str, shards: int) -> int:
    """Return the shard (0 .. shards-1) that owns ``symbol``."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return zlib.crc32(symbol.encode()) % shards


@functools.lru_cache(maxsize=16_384)
def for_symbol(family: str, symbol: str, shards: int) -> str:
    """Build ``<family>.<shard>.<symbol>`` for one of the per-symbol families (QUOTE, SIGNAL, ...).

    Every event of an order names a subject or two of its symbol: the most recent are kept made (a refused
    symbol raises and is not kept)."""
    check_symbol(symbol)
    return f"{family}.{shard_of(symbol, shards)}.{symbol}"


def quote(symbol: str, shards: int) -> str:
    """Subject of a symbol's quotes."""
    return for_symbol(QUOTE, symbol, shards)


def quote_batch(shard: int, source: str) -> str:
    """Subject of a batch of quotes of shard ``shard`` made by ``source`` (a feed or tool name, a-z 0-9 _)."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    if not _SOURCE.fullmatch(source):
        raise InvalidSubjectError(source, "a source name of 1-64 characters of a-z, 0-9 or '_'")
    return f"{QUOTE_BATCH}.{shard}.{source}"


def envelope(family: str, shard: int) -> str:
    """Subject of an envelope of messages of ``family`` (one of ENVELOPE_FAMILIES) in shard ``shard``."""
    if family not in ENVELOPE_FAMILIES:
        raise InvalidSubjectError(family, f"one of the families {', '.join(sorted(ENVELOPE_FAMILIES))}")
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{family}.{shard}.{ENVELOPE_TOKEN}"


def parse_envelope(subject: str) -> tuple[str, int] | None:
    """The family and shard of an envelope's subject, or None when ``subject`` is not one."""
    if not subject.endswith(ENVELOPE_TOKEN):
        return None
    parts = subject.split(".")
    if len(parts) != 4 or parts[3] != ENVELOPE_TOKEN or not _SHARD.fullmatch(parts[2]):
        return None
    family = f"{parts[0]}.{parts[1]}"
    return (family, int(parts[2])) if family in ENVELOPE_FAMILIES else None


def trade(symbol: str, shards: int) -> str:
    """Subject of a symbol's trades."""
    return for_symbol(TRADE, symbol, shards)


def signal(symbol: str, shards: int) -> str:
    """Subject of a symbol's strategy signals."""
    return for_symbol(SIGNAL, symbol, shards)


def order_command(symbol: str, shards: int) -> str:
    """Subject of order commands for a symbol."""
    return for_symbol(ORDER_COMMAND, symbol, shards)


def order_event(symbol: str, shards: int) -> str:
    """Subject of order events (accepted, rejected, filled) for a symbol."""
    return for_symbol(ORDER_EVENT, symbol, shards)


def position(symbol: str, shards: int) -> str:
    """Subject of a symbol's position updates."""
    return for_symbol(POSITION, symbol, shards)


def latest_quote(symbol: str, shards: int) -> str:
    """Subject to request a symbol's latest quote on (request-reply, not captured by any stream)."""
    return for_symbol(LATEST_QUOTE, symbol, shards)


def shard_filter(family: str, shard: int) -> str:
    """Subscription filter for all symbols of one shard of a family, e.g. ``md.quote.3.*``."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{family}.{shard}.*"


def plane_shard_filter(plane_all: str, shard: int) -> str:
    """Filter for every kind of one plane in one shard: ``md.>`` and shard 2 give ``md.*.2.*``."""
    plane = plane_all.removesuffix(".>")
    return f"{plane}.*.{shard}.*"


FENCE_TOKEN = "_fence"  # noqa: S105 - a subject token, not a password
# The strategies' lockstep with execution (rrr.execution.lockstep): their markers among a shard's order
# commands, ``cmd.order.<shard>._step``, and execution's progress among its order events,
# ``evt.order.<shard>._step``. Like an envelope's, the last token is no symbol, and a filter on the family's
# shard (``cmd.order.3.*``) takes them in stream order with the rest.
STEP_TOKEN: Final = "_step"  # noqa: S105 - a subject token, not a secret
STEP_FAMILIES: Final = frozenset({ORDER_COMMAND, ORDER_EVENT})


def step(family: str, shard: int) -> str:
    """Subject of the lockstep messages of ``family`` (order commands: markers; order events: progress) in
    shard ``shard``: ``cmd.order.3._step``."""
    if family not in STEP_FAMILIES:
        raise InvalidSubjectError(family, f"one of the families {', '.join(sorted(STEP_FAMILIES))}")
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{family}.{shard}.{STEP_TOKEN}"


def parse_step(subject: str) -> tuple[str, int] | None:
    """The family and shard of a lockstep subject, or None when ``subject`` is not one."""
    if not subject.endswith(STEP_TOKEN):
        return None
    parts = subject.split(".")
    if len(parts) != 4 or parts[3] != STEP_TOKEN or not _SHARD.fullmatch(parts[2]):
        return None
    family = f"{parts[0]}.{parts[1]}"
    return (family, int(parts[2])) if family in STEP_FAMILIES else None


def fence_filter(family: str, shard: int) -> str:
    """Every subject of one shard of a family, messages and envelopes and fence markers: ``cmd.order.0.>``.

    ``family`` may hold a wildcard for the kind (``evt.*``: order events and positions together).
    """
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{family}.{shard}.>"


def fence_marker(family: str, shard: int, service: str) -> str:
    """Where a service that takes over a shard marks the stream, ``cmd.order.0._fence.strategy``: one token
    more than any message of the family, so no consumer of ``<family>.<shard>.*`` ever receives it."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{family}.{shard}.{FENCE_TOKEN}.{service}"


def matches(subject: str, pattern: str) -> bool:
    """Whether ``subject`` is one of ``pattern`` (NATS wildcards: ``*`` one token, ``>`` the rest)."""
    parts, wanted = subject.split("."), pattern.split(".")
    for i, part in enumerate(wanted):
        if part == ">":
            return len(parts) > i
        if i >= len(parts) or part not in ("*", parts[i]):
            return False
    return len(parts) == len(wanted)


def heartbeat(service: str, shard: int) -> str:
    """Subject a service instance sends its heartbeats on."""
    return f"{HEARTBEAT}.{service}.{shard}"


def trading_applied(shard: int) -> str:
    """Subject an execution instance confirms the trading states it applied on."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"{TRADING_APPLIED}.{shard}"


def trading_key(strategy: str = "", symbol: str = "") -> str:
    """Key of a trading state in ``TRADING_BUCKET``: ``account``, ``strategy.<S>``, ``symbol.<X>`` or
    ``pair.<S>.<X>`` (strategy S on symbol X)."""
    if strategy and not _NAME_TOKEN.fullmatch(strategy):
        raise InvalidSubjectError(strategy, "a strategy name of 1-64 characters of a-z, 0-9 or '_'")
    if symbol:
        check_symbol(symbol)
    if strategy and symbol:
        return f"pair.{strategy}.{symbol}"
    if strategy:
        return f"strategy.{strategy}"
    if symbol:
        return f"symbol.{symbol}"
    return "account"


def parse_trading_key(key: str) -> tuple[str, str]:
    """The (strategy, symbol) a trading-state key names ('' for neither).

    Raises:
        InvalidSubjectError: not a key ``trading_key`` makes.
    """
    expected = "account, strategy.<S>, symbol.<X> or pair.<S>.<X>"
    parts = key.split(".")
    strategy = symbol = ""
    if parts[0] == "strategy" and len(parts) == 2:
        strategy = parts[1]
    elif parts[0] == "symbol" and len(parts) == 2:
        symbol = parts[1]
    elif parts[0] == "pair" and len(parts) == 3:
        strategy, symbol = parts[1], parts[2]
    elif parts != ["account"]:
        raise InvalidSubjectError(key, expected)
    try:
        rebuilt = trading_key(strategy, symbol)
    except (InvalidSubjectError, InvalidSymbolError):
        raise InvalidSubjectError(key, expected) from None
    if rebuilt != key:
        raise InvalidSubjectError(key, expected)
    return strategy, symbol


def kv(bucket: str, key: str) -> str:
    """The subject a key-value bucket stores ``key`` on: ``$KV.<bucket>.<key>``."""
    return f"$KV.{bucket}.{key}"


def risk_key(shard: int) -> str:
    """Key of one execution shard's holdings in ``RISK_BUCKET``."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"shard.{shard}"


def dead_letter(subject: str) -> str:
    """Subject a message that failed on ``subject`` is dead-lettered to."""
    return f"{DEAD_LETTER_PREFIX}.{subject}"


def retry(service: str, subject: str) -> str:
    """Subject that hands a dead letter back to the one service that failed on it: ``retry.<service>.<subject>``."""
    return f"retry.{service}.{subject}"


def retried_subject(subject: str) -> str:
    """The original subject of a message handed to the retries (``retry.<service>.<subject>``), or
    ``subject`` itself."""
    parts = subject.split(".", 2)
    if parts[0] == "retry" and len(parts) == 3:
        return parts[2]
    return subject


# NATS service discovery (the micro protocol): ``$SRV.<verb>``, ``$SRV.<verb>.<name>``, ``$SRV.<verb>.<name>.<id>``.
DISCOVERY_PREFIX: Final = "$SRV"
DISCOVERY_VERBS: Final = ("PING", "INFO", "STATS")
_DISCOVERY_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def discovery(verb: str, name: str | None = None, instance_id: str | None = None) -> str:
    """A discovery subject: every service (``$SRV.PING``), every instance of ``name``, or one instance."""
    if verb not in DISCOVERY_VERBS:
        raise InvalidSubjectError(verb, f"one of the verbs {', '.join(DISCOVERY_VERBS)}")
    tokens = [DISCOVERY_PREFIX, verb]
    for token in (name, instance_id):
        if token is None:
            break
        if not _DISCOVERY_TOKEN.fullmatch(token):
            raise InvalidSubjectError(token, "a service name or id of 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        tokens.append(token)
    return ".".join(tokens)


def is_inbox(subject: str) -> bool:
    """Tell whether ``subject`` is a reply inbox (``_INBOX.<id>`` or ``_INBOX_<name>.<id>``), the only
    subjects a service answers a request on: any other would publish its reply into the system's own."""
    return _INBOX.fullmatch(subject) is not None


def _snapshot(name: str) -> str:
    if not _SNAPSHOT_NAME.fullmatch(name):
        raise InvalidSubjectError(f"snap.{name}", "a snapshot name of 1-64 characters of a-z, 0-9, '_' or '-'")
    return f"snap.{name}"


def snapshot_head(name: str) -> str:
    """Subject of the record that says which generation of snapshot ``name`` is the current one."""
    return f"{_snapshot(name)}.head"


def snapshot_chunks(name: str, generation: str) -> str:
    """Subject of the chunks of one generation of snapshot ``name``."""
    if not _SNAPSHOT_NAME.fullmatch(generation):
        raise InvalidSubjectError(generation, "a snapshot generation of 1-64 characters of a-z, 0-9, '_' or '-'")
    return f"{_snapshot(name)}.chunk.{generation}"


def snapshot_all_chunks(name: str) -> str:
    """Filter for the chunks of every generation of snapshot ``name``."""
    return f"{_snapshot(name)}.chunk.*"


def parse(subject: str) -> SymbolSubject:
    """Split a per-symbol subject into family, shard and symbol."""
    parts = subject.split(".")
    if len(parts) != 4 or not (
        _TOKEN.fullmatch(parts[0]) and _TOKEN.fullmatch(parts[1]) and _SHARD.fullmatch(parts[2])
    ):
        raise InvalidSubjectError(subject, "<plane>.<kind>.<shard>.<symbol>, e.g. md.quote.3.EURUSD")
    check_symbol(parts[3])
    return SymbolSubject(f"{parts[0]}.{parts[1]}", int(parts[2]), parts[3])


def parse_owned(subject: str, shards: int) -> SymbolSubject:
    """Parse a per-symbol subject of a known family whose shard is its symbol's among ``shards``.

    Raises:
        InvalidSubjectError: another layout, an unknown family, or a shard that does not own the symbol.
        InvalidSymbolError: the symbol token is not a valid symbol.
    """
    parsed = parse(subject)
    if parsed.family not in SYMBOL_FAMILIES:
        raise InvalidSubjectError(subject, f"one of the families {', '.join(sorted(SYMBOL_FAMILIES))}")
    if parsed.shard != shard_of(parsed.symbol, shards):
        owned = for_symbol(parsed.family, parsed.symbol, shards)
        raise InvalidSubjectError(subject, f"{owned}, the shard that owns {parsed.symbol} (shards: {shards})")
    return parsed
