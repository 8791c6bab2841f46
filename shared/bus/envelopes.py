"""Envelopes: the messages a handler publishes together, one JetStream message per family and shard.

A strategy's batch of quotes yields its signals and orders at once, execution's batch of orders their events
at once, and the positions those events make. Each alone would cost a JetStream message: a store, an
acknowledgement, and a delivery to every consumer. ``pack`` puts those of one family (signals, order commands,
order events, positions) and one shard into an ``Envelope`` on ``<family>.<shard>._batch``; a lone message still
goes alone, on its own subject, at no extra cost. ``open_envelope`` gives a consumer the messages back, each
checked against the envelope's family and shard and dressed as if it had come alone: its own subject, its own
message id, the envelope's stream sequence (the messages of one envelope share it, so a consumer's place in the
stream covers all of them or none).

The envelope's message id is derived from its messages' ids: the same messages sent again (a restart) are the
same envelope, which JetStream drops within its de-duplication window; beyond it, or grouped otherwise, each
message is one its consumers already de-duplicate by its own id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus.outgoing import MSG_ID, Outgoing
from rrr.shared.errors import MisroutedMessageError
from rrr.shared.messages import ENVELOPE_MAX, Envelope, Message, check_envelope_item, encoder, envelope_decoder

__all__ = ["open_envelope", "pack", "payloads", "unpacked"]

M = TypeVar("M", bound=Message)
# Room left in an envelope for its headers and framing, under the stream's largest message.
_HEADROOM = 1024


def pack(items: Sequence[Outgoing], max_bytes: int) -> list[Outgoing]:
    """``items`` with those of one envelope family and shard in envelopes of at most ``max_bytes``.

    Messages of other subjects pass as they are; a family and shard with one message keeps it as it is. Each
    envelope holds its messages in the order given.
    """
    groups: dict[str, list[Outgoing]] = {}
    # Each message, or for a family and shard the place of its first message: the envelopes go out there, so
    # that what was sent first (a fill) is stored before what follows it (the position it makes).
    places: list[Outgoing | str] = []
    for item in items:
        shard_prefix = item.subject.rpartition(".")[0]  # <plane>.<kind>.<shard> of <plane>.<kind>.<shard>.<symbol>
        if shard_prefix.rpartition(".")[0] not in subjects.ENVELOPE_FAMILIES:
            places.append(item)
        elif shard_prefix in groups:
            groups[shard_prefix].append(item)
        else:
            groups[shard_prefix] = [item]
            places.append(shard_prefix)
    out: list[Outgoing] = []
    for place in places:
        if isinstance(place, Outgoing):
            out.append(place)
            continue
        group = groups[place]
        subject = f"{place}.{subjects.ENVELOPE_TOKEN}"
        start, size = 0, 0
        for i, item in enumerate(group):
            if i > start and (size + len(item.data) > max_bytes - _HEADROOM or i - start == ENVELOPE_MAX):
                out.append(_envelope(subject, group[start:i]))
                start, size = i, 0
            size += len(item.data) + 8
        out.append(_envelope(subject, group[start:]))
    return out


def _envelope(subject: str, items: Sequence[Outgoing]) -> Outgoing:
    if len(items) == 1:
        return items[0]
    ids = [item.headers.get(MSG_ID, "") for item in items]
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=12).hexdigest()
    # The first message's trace context stands for the envelope's (a trace continues through one of them).
    headers = {k: v for k, v in items[0].headers.items() if k != MSG_ID}
    headers[MSG_ID] = f"{ids[0][:100]}+{len(items)}:{digest}"
    data = encoder.encode(Envelope([msgspec.Raw(item.data) for item in items]))
    return Outgoing(subject, data, headers, messages=len(items))


def open_envelope(
    msg: Msg, family: str, shard: int, decoder: msgspec.msgpack.Decoder[M], shards: int
) -> tuple[list[tuple[Msg, M]], list[tuple[Msg, str, bool]]]:
    """The messages of the envelope ``msg`` (on ``<family>.<shard>._batch``), each with a Msg of its own, and
    those refused: ``(msg, reason, mismatched)``, the envelope itself when it does not open.

    Each message's Msg has its own subject and message id, and the envelope's reply subject (its stream
    sequence, its acknowledgement) and other headers.
    """
    try:
        envelope = envelope_decoder.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [], [(msg, f"decode: envelope: {exc}", False)]
    carried = {k: v for k, v in (msg.headers or {}).items() if k != MSG_ID}
    opened: list[tuple[Msg, M]] = []
    refused: list[tuple[Msg, str, bool]] = []
    for index, raw in enumerate(envelope.items):
        data = bytes(raw)
        try:
            message = decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            refused.append((_item(msg, msg.subject, data, carried, ""), f"decode: message {index} of envelope: {exc}",
                            False))  # fmt: skip
            continue
        try:
            own = check_envelope_item(msg.subject, family, shard, message, shards)
        except MisroutedMessageError as exc:
            refused.append((_item(msg, msg.subject, data, carried, message.id), f"subject: {exc}", True))
            continue
        opened.append((_item(msg, own, data, carried, message.id), message))
    return opened, refused


def _item(envelope: Msg, subject: str, data: bytes, carried: dict[str, str], message_id: str) -> Msg:
    headers = {**carried, MSG_ID: message_id} if message_id else dict(carried)
    return Msg(envelope._client, subject, envelope.reply, data, headers)


def unpacked(subject: str, data: bytes) -> list[tuple[str, bytes]]:
    """``(subject, payload)`` of each message a stored message holds: an envelope's messages (on the envelope's
    subject: the reader decodes them), or the message itself. For readers of a stream's history.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: an envelope that does not decode.
    """
    if subjects.parse_envelope(subject) is None:
        return [(subject, data)]
    return [(subject, bytes(raw)) for raw in envelope_decoder.decode(data).items]


def payloads(msg: Any) -> list[bytes]:
    """The payload of each message ``msg`` (a stored message, with ``subject`` and ``data``) holds."""
    return [data for _, data in unpacked(msg.subject, msg.data)]
