"""Envelopes (rrr.shared.bus.envelopes): what goes out together travels as one message and comes back
exactly as it went, each message held to the envelope's family and shard; anything else is refused."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus import MSG_ID, Outgoing, open_envelope, pack, payloads
from rrr.shared.errors import InvalidSubjectError
from rrr.shared.messages import (
    ENVELOPE_MAX,
    Envelope,
    Message,
    encode,
    order_command_decoder,
    order_event_decoder,
    subject_of,
)
from tests.support.factories import (
    make_order,
    make_order_accepted,
    make_order_filled,
    make_position,
    make_signal,
    unique_symbol,
)

SHARDS = 4


def _out(message: Message) -> Outgoing:
    subject = subject_of(message, SHARDS)  # type: ignore[arg-type]
    return Outgoing(subject, encode(message), {MSG_ID: message.id, "traceparent": "00-a-b-01"})


def _delivered(out: Outgoing, seq: int = 7) -> Msg:
    return Msg(None, subject=out.subject, reply=f"$JS.ACK.RRR_CMD.c.1.{seq}.3.0.0", data=out.data, headers=out.headers)  # type: ignore[arg-type]


def _symbols(n: int, shard: int) -> list[str]:
    return [unique_symbol("ENV", shard=shard, shards=SHARDS) for _ in range(n)]


def test_several_orders_of_one_shard_go_in_one_envelope_and_come_back_in_order_on_their_own_subjects() -> None:
    orders = [make_order(symbol) for symbol in _symbols(5, shard=2)]
    (envelope,) = pack([_out(o) for o in orders], 64 * 1024)
    assert envelope.subject == "cmd.order.2._batch"
    opened, refused = open_envelope(_delivered(envelope), "cmd.order", 2, order_command_decoder, SHARDS)
    assert refused == []
    assert [m for _, m in opened] == orders
    assert [msg.subject for msg, _ in opened] == [subjects.order_command(o.symbol, SHARDS) for o in orders]
    # Each its own id (retries and dead letters are per message); the envelope's sequence and trace context.
    assert [msg.headers[MSG_ID] for msg, _ in opened] == [o.id for o in orders]  # type: ignore[index]
    assert {msg.reply for msg, _ in opened} == {"$JS.ACK.RRR_CMD.c.1.7.3.0.0"}
    assert {msg.headers["traceparent"] for msg, _ in opened} == {"00-a-b-01"}  # type: ignore[index]


def test_a_lone_message_goes_as_it_is_and_other_families_pass_in_their_place() -> None:
    (one,) = _symbols(1, shard=1)
    order = _out(make_order(one))
    assert pack([order], 64 * 1024) == [order]
    accepted = [make_order_accepted(make_order(s)) for s in _symbols(3, shard=0)]
    position = _out(make_position(accepted[0].symbol))
    packed = pack([_out(accepted[0]), position, _out(accepted[1]), _out(accepted[2])], 64 * 1024)
    # The events' envelope where the first event was: before the position it is followed by.
    assert [o.subject for o in packed] == ["evt.order.0._batch", position.subject]
    assert [order_event_decoder.decode(d) for d in payloads(_delivered(packed[0]))] == accepted


def test_the_positions_a_batch_of_fills_makes_go_in_one_envelope_after_the_fills_every_version_kept() -> None:
    orders = [make_order(s) for s in _symbols(3, shard=1)]
    # Two fills of the first symbol, then one of each other: a position after each, as execution makes them.
    fills = [make_order_filled(o) for o in (orders[0], orders[0], *orders[1:])]
    positions = [
        make_position(orders[0].symbol, qty=1, version=1),
        make_position(orders[0].symbol, qty=2, version=2),
        make_position(orders[1].symbol),
        make_position(orders[2].symbol),
    ]
    out = [_out(m) for pair in zip(fills, positions, strict=True) for m in pair]
    packed = pack(out, 64 * 1024)
    # One message for the events, one for the positions: every fill is stored before any position it made.
    assert [o.subject for o in packed] == ["evt.order.1._batch", "evt.position.1._batch"]
    opened, refused = open_envelope(_delivered(packed[1]), "evt.position", 1, order_event_decoder, SHARDS)
    assert refused == []
    assert [m for _, m in opened] == positions
    assert [msg.subject for msg, _ in opened] == [subjects.position(p.symbol, SHARDS) for p in positions]
    # A position in the envelope of another family, or of another shard, is refused as misrouted.
    for family, shard in (("evt.order", 1), ("evt.position", 2)):
        _, refused = open_envelope(_delivered(packed[1]), family, shard, order_event_decoder, SHARDS)
        assert len(refused) == len(positions)
        assert all("misrouted" in reason for _, reason, _ in refused)


def test_envelopes_are_split_by_family_shard_size_and_count() -> None:
    signals = [make_signal(s) for s in _symbols(40, shard=3)]
    orders = [make_order(s) for s in _symbols(2, shard=1)]
    packed = pack([*map(_out, signals), *map(_out, orders)], 4 * 1024)
    assert [o.subject for o in packed][-1] == "cmd.order.1._batch"
    signal_envelopes = [o for o in packed if o.subject == "sig.signal.3._batch"]
    assert len(signal_envelopes) > 1
    assert all(len(o.data) <= 4 * 1024 for o in packed)
    assert [d for o in signal_envelopes for d in payloads(_delivered(o))] == [encode(s) for s in signals]


def test_the_same_messages_make_the_same_envelope_id_and_others_another() -> None:
    orders = [_out(make_order(s)) for s in _symbols(3, shard=0)]
    first, again = pack(orders, 64 * 1024), pack(list(orders), 64 * 1024)
    assert first[0].headers[MSG_ID] == again[0].headers[MSG_ID]
    (other,) = pack([orders[0], orders[2], orders[1]], 64 * 1024)
    assert other.headers[MSG_ID] != first[0].headers[MSG_ID]


def test_an_envelope_holding_another_family_another_shard_or_garbage_refuses_those_and_keeps_the_rest() -> None:
    good = make_order(_symbols(1, shard=2)[0])
    other_shard = make_order(_symbols(1, shard=3)[0])
    event = make_order_accepted(make_order(_symbols(1, shard=2)[0]))
    items = [encode(good), encode(other_shard), encode(event), msgspec.msgpack.encode({"type": "nope", "id": 1})]
    msg = Msg(None, subject="cmd.order.2._batch", reply="$JS.ACK.RRR_CMD.c.1.9.3.0.0",  # type: ignore[arg-type]
              data=encode(Envelope([msgspec.Raw(i) for i in items])), headers={})  # fmt: skip
    opened, refused = open_envelope(msg, "cmd.order", 2, order_command_decoder, SHARDS)
    assert [m for _, m in opened] == [good]
    reasons = [(reason.split(":")[0], misrouted) for _, reason, misrouted in refused]
    # The event does not decode as an order command; the order of shard 3 is misrouted; the garbage is garbage.
    assert reasons == [("subject", True), ("decode", False), ("decode", False)]
    assert [m.data for m, _, _ in refused] == [items[1], items[2], items[3]]


@pytest.mark.parametrize(
    "data",
    [
        b"not msgpack",
        encode(make_order("EURUSD")),  # a message, not an envelope
        msgspec.msgpack.encode({"type": "envelope.v1", "items": []}),
        msgspec.msgpack.encode({"type": "envelope.v1", "items": [1] * (ENVELOPE_MAX + 1)}),
    ],
)
def test_what_is_not_an_envelope_within_bounds_is_refused_whole(data: bytes) -> None:
    msg = Msg(None, subject="cmd.order.0._batch", reply="$JS.ACK.RRR_CMD.c.1.9.3.0.0", data=data)  # type: ignore[arg-type]
    opened, refused = open_envelope(msg, "cmd.order", 0, order_command_decoder, SHARDS)
    assert opened == []
    ((refused_msg, reason, misrouted),) = refused
    assert refused_msg is msg
    assert reason.startswith("decode: envelope")
    assert not misrouted


def test_only_the_envelope_families_have_envelope_subjects() -> None:
    assert subjects.parse_envelope("evt.order.12._batch") == ("evt.order", 12)
    assert subjects.parse_envelope("evt.position.3._batch") == ("evt.position", 3)
    for subject in ("md.trade.1._batch", "md.quote.1._batch", "evt.order.x._batch", "evt.order.1.EURUSD",
                    "evt.order.1._batch.x", "retry.execution.cmd.order.0._batch"):  # fmt: skip
        assert subjects.parse_envelope(subject) is None
    with pytest.raises(InvalidSubjectError):
        subjects.envelope("md.quote", 0)
