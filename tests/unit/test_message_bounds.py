"""Bounds every decoded message is held to, so that nothing downstream can silently misstore it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rrr.shared.messages import (
    ID_MAX,
    NAME_MAX,
    ORDER_ID_MAX,
    QUOTE_ID_MAX,
    Quote,
    any_decoder,
    encode,
    heartbeat_decoder,
    order_command_decoder,
)
from rrr.shared.service import heartbeat_pid
from tests.support.factories import (
    make_order,
    make_order_accepted,
    make_order_filled,
    make_order_rejected,
    make_signal,
)

QUOTE: dict[str, Any] = {
    "type": "quote.v1",
    "id": "q1",
    "ts_event": 1,
    "ts_init": 2,
    "symbol": "EURUSD",
    "bid": "1.1",
    "ask": "1.2",
}


def _decode(**changes: Any) -> object:
    return any_decoder.decode(msgspec.msgpack.encode(QUOTE | changes))


@pytest.mark.parametrize(
    "price",
    [
        "1E+200000",  # asyncpg would encode this as 0 without a word
        "1000000000000000000",  # 19 digits before the point
        "1E-29",  # 29 places
    ],
)
def test_a_quote_with_a_price_out_of_range_is_refused_naming_the_field(price: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"bid .* is out of range"):
        _decode(bid=price, ask="1E+300000" if "+" in price else "2E+18")


def test_prices_at_the_bounds_are_accepted_exactly() -> None:
    quote = _decode(bid="0.0000000000000000000000000001", ask="999999999999999999.9999999999999999999999999999")
    assert quote.bid == Decimal("1E-28")  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad_id", ["", "has space", "nul\x00byte", "é", "x" * 257])
def test_an_id_that_cannot_be_a_header_or_key_is_refused(bad_id: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        _decode(id=bad_id)


@pytest.mark.parametrize("ts", [-1, 2**63])
def test_a_time_outside_bigint_nanoseconds_is_refused(ts: int) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.ts_event"):
        _decode(ts_event=ts)


@pytest.mark.parametrize(("field", "symbol"), [("bid", "EURUSD"), ("symbol", "A" * 100_000)])
def test_a_refused_value_of_100000_characters_is_quoted_in_80_with_its_length(field: str, symbol: str) -> None:
    # The reason travels in a dead letter's header and in logs: it must stay short whatever was sent.
    with pytest.raises(msgspec.ValidationError) as info:
        _decode(symbol=symbol, bid="1" * 100_000 if field == "bid" else "1.1")
    assert "... (100,000 characters)" in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("bad_id", ["nl-order\n", "q\r", "q\n\n"])
def test_an_id_with_a_trailing_line_break_is_refused(bad_id: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        _decode(id=bad_id)


def test_a_name_with_a_trailing_line_break_is_refused() -> None:
    signal = msgspec.to_builtins(make_signal()) | {"strategy": "sma_cross\n"}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.strategy"):
        any_decoder.decode(msgspec.msgpack.encode(signal))


def test_a_quote_id_longer_than_its_bound_is_refused_though_it_would_be_a_valid_id() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        _decode(id="q" * (QUOTE_ID_MAX + 1))


def test_the_ids_derived_from_the_longest_inbound_ids_are_valid_ids() -> None:
    """The strategy's signal and order ids from a quote id, and execution's event ids from an order id."""
    strategy = "s" * NAME_MAX
    quote = _decode(id="q" * QUOTE_ID_MAX)
    assert isinstance(quote, Quote)
    order = make_order(id=f"{strategy}-{quote.id}", strategy=strategy)
    signal = make_signal(quote_id=quote.id, strategy=strategy)
    events = [
        make_order_accepted(order),
        make_order_rejected(order),
        make_order_filled(order),
        msgspec.structs.replace(make_order_filled(order), id=f"{order.id}:{2**63 - 1}"),
    ]
    for message in [order, signal, *events]:
        assert any_decoder.decode(encode(message)) == message


@pytest.mark.parametrize("length", [ORDER_ID_MAX + 1, ID_MAX])
def test_a_client_order_id_without_room_for_the_ids_execution_derives_from_it_is_refused(length: int) -> None:
    order = make_order(id="o" * length)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        order_command_decoder.decode(encode(order))


HEARTBEAT: dict[str, Any] = {
    "type": "heartbeat.v1",
    "id": "strategy-0@host:42:7",
    "ts_event": 1,
    "ts_init": 1,
    "service": "strategy",
    "instance": "strategy-0@host",
    "shard": 0,
    "shards": 1,
    "status": "ok",
    "counters": {"handled": 3},
}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"service": "strategy\x1b[2J"}, "service"),
        ({"instance": "i\x1b]0;x\x07"}, "instance"),
        ({"instance": "i" * 129}, "instance"),
        ({"counters": {"handled\n": 1}}, "counters"),
        ({"counters": {"x" * 65: 1}}, "counters"),
        ({"counters": {f"c{i}": i for i in range(129)}}, "counters"),
        ({"counters": {"handled": -1}}, "counters"),
        ({"shard": 1024}, "shard"),
        ({"shards": 0}, "shards"),
    ],
)
def test_a_heartbeat_out_of_its_bounds_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=rf"\$\.{field}"):
        heartbeat_decoder.decode(msgspec.msgpack.encode(HEARTBEAT | changes))


def test_a_heartbeat_within_its_bounds_decodes() -> None:
    beat = heartbeat_decoder.decode(msgspec.msgpack.encode(HEARTBEAT))
    assert (beat.instance, beat.counters, heartbeat_pid(beat)) == ("strategy-0@host", {"handled": 3}, 42)


@pytest.mark.parametrize("beat_id", ["other-0@host:42:7", "strategy-0@host:42", "strategy-0@host:x:7", "42"])
def test_a_heartbeat_id_that_is_not_its_instances_pid_and_sequence_names_no_pid(beat_id: str) -> None:
    beat = heartbeat_decoder.decode(msgspec.msgpack.encode(HEARTBEAT | {"id": beat_id}))
    assert heartbeat_pid(beat) is None
