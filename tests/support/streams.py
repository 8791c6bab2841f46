"""Reading what the JetStream streams hold, independently of the bus code under test.

Messages are fetched one by one with ``STREAM.MSG.GET`` (next message at or after a sequence, matching a
subject filter), so no consumer is created on the streams the services consume from.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from rrr.shared import subjects
from rrr.shared.bus import payloads
from rrr.shared.messages import Quote, QuoteBatch, any_decoder, market_data_decoder


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One message as a stream stored it."""

    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


async def stream_messages(
    js: JetStreamContext, stream: str, filter_subject: str = ">", *, open_envelopes: bool = True
) -> list[StoredMsg]:
    """Every message ``stream`` holds now on ``filter_subject`` (wildcards allowed), in stream order.

    Envelopes are opened: their messages are listed one by one (with the envelope's sequence) on the subjects
    they would travel on alone, filtered as single messages are; ``open_envelopes=False`` lists them as stored.
    """
    out: list[StoredMsg] = []
    seq = 1
    read = _widened(filter_subject) if open_envelopes else filter_subject
    while True:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=read, next=True)
        except nats.js.errors.NotFoundError:
            return out
        assert raw.seq is not None
        assert raw.subject is not None
        envelope = subjects.parse_envelope(raw.subject) if open_envelopes else None
        if envelope is None:
            if _matches(filter_subject, raw.subject):
                out.append(StoredMsg(raw.seq, raw.subject, raw.data or b"", dict(raw.headers or {})))
        else:
            family, shard = envelope
            for data in payloads(raw):
                # A lockstep marker or progress has no symbol: it travels on its shard's own subject.
                symbol = getattr(any_decoder.decode(data), "symbol", None)
                subject = f"{family}.{shard}.{symbol}" if symbol else subjects.step(family, shard)
                if _matches(filter_subject, subject):
                    out.append(StoredMsg(raw.seq, subject, data, dict(raw.headers or {})))
        seq = raw.seq + 1


def _widened(filter_subject: str) -> str:
    """A filter that also takes the envelopes that may carry messages of ``filter_subject``."""
    parts = filter_subject.split(".")
    if len(parts) == 4 and parts[3] not in ("*", ">"):
        return ".".join([*parts[:3], "*"])
    return filter_subject


def _matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS subject pattern ``pattern`` (``*`` a token, ``>`` the rest)."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def decode_all(msgs: list[StoredMsg], decoder: msgspec.msgpack.Decoder[Any]) -> list[Any]:
    """The decoded payloads of ``msgs``."""
    return [decoder.decode(m.data) for m in msgs]


async def subject_counts(js: JetStreamContext, stream: str, filter_subject: str = ">") -> dict[str, int]:
    """How many messages ``stream`` holds per subject matching ``filter_subject``."""
    info = await js.stream_info(stream, subjects_filter=filter_subject)
    return dict(info.state.subjects or {})


async def count(js: JetStreamContext, stream: str, filter_subject: str = ">") -> int:
    """How many messages ``stream`` holds on ``filter_subject``, each message of an envelope counted."""
    if stream in ("RRR_SIG", "RRR_CMD", "RRR_EVT"):  # the streams of the envelope families
        return len(await stream_messages(js, stream, filter_subject))
    return sum((await subject_counts(js, stream, filter_subject)).values())


@dataclass(frozen=True, slots=True)
class StoredQuote:
    """A quote as the market-data stream holds it: alone, or at ``index`` of the batch at ``seq``."""

    seq: int
    index: int
    subject: str
    quote: Quote


async def stored_quotes(js: JetStreamContext, symbols: Collection[str] | None = None) -> list[StoredQuote]:
    """Every quote RRR_MD holds now (of ``symbols``, if given), single or batched, in stream order."""
    out: list[StoredQuote] = []
    for msg in await stream_messages(js, "RRR_MD", "md.>"):
        try:
            message = market_data_decoder.decode(msg.data)
        except msgspec.ValidationError:
            continue
        if isinstance(message, QuoteBatch):
            quotes = [(i, message.quote(i)) for i in range(len(message.quotes))]
        elif isinstance(message, Quote):
            quotes = [(0, message)]
        else:
            continue
        out.extend(StoredQuote(msg.seq, i, msg.subject, q) for i, q in quotes if symbols is None or q.symbol in symbols)
    return out


async def count_quotes(js: JetStreamContext, symbols: Collection[str] | None = None) -> int:
    """How many quotes RRR_MD holds now (of ``symbols``, if given), single or batched."""
    return len(await stored_quotes(js, symbols))
