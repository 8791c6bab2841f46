"""Wire schemas: round trips, family decoders, validation and the v1 contract."""

from __future__ import annotations

import re
import typing
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrr.shared import messages, subjects
from rrr.shared.errors import MisroutedMessageError
from rrr.shared.messages import (
    CancelOrder,
    CurrencyRisk,
    Heartbeat,
    MatchedThrough,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    PositionUpdated,
    Quote,
    QuoteBatch,
    QuoteRow,
    ReplaceOrder,
    ShardRisk,
    Signal,
    StrategyAt,
    SubmitOrder,
    Trade,
    TradingState,
    TradingStateApplied,
)

TS = 1_609_459_201_076_000_000


def _quote(**overrides: Any) -> Quote:
    fields: dict[str, Any] = {
        "id": "btcusdt@abc:2",
        "ts_event": TS,
        "ts_init": TS + 5,
        "symbol": "BTCUSDT",
        "bid": Decimal("39432.99"),
        "ask": Decimal("39433.62"),
        "bid_size": Decimal("0.031035000000000004"),
        "ask_size": Decimal("0.066851"),
    }
    return Quote(**(fields | overrides))


EXAMPLES: list[Message] = [
    _quote(),
    Quote(id="q2", ts_event=1, ts_init=2, symbol="EURUSD", bid=Decimal("1.121200"), ask=Decimal("1.121200")),
    Trade(id="t1", ts_event=TS, ts_init=TS, symbol="BTCUSDT", price=Decimal("39433.6"), size=Decimal("0.5")),
    Trade(id="t2", ts_event=TS, ts_init=TS, symbol="BTCUSDT", price=Decimal("1"), size=Decimal("2"), aggressor="sell"),
    Signal(
        id="s1",
        ts_event=TS,
        ts_init=TS,
        strategy="sma_cross",
        symbol="EURUSD",
        quote_id="q2",
        direction="up",
        fast=Decimal("1.1213"),
        slow=Decimal("1.1210"),
        target=Decimal("1"),
    ),
    SubmitOrder(
        id="sma_cross:EURUSD:1",
        ts_event=TS,
        ts_init=TS,
        strategy="sma_cross",
        symbol="EURUSD",
        side="buy",
        qty=Decimal("2"),
        quote_ts=TS - 1,
        quote_bid=Decimal("1.121200"),
        quote_ask=Decimal("1.121720"),
    ),
    OrderAccepted(
        id="a1",
        ts_event=TS,
        ts_init=TS,
        client_order_id="sma_cross:EURUSD:1",
        strategy="sma_cross",
        symbol="EURUSD",
        side="buy",
        qty=Decimal("2"),
    ),
    OrderRejected(
        id="r1",
        ts_event=TS,
        ts_init=TS,
        client_order_id="sma_cross:EURUSD:2",
        strategy="sma_cross",
        symbol="EURUSD",
        side="sell",
        qty=Decimal("2000"),
        reason="qty 2000 exceeds max_order_qty 1000",
    ),
    OrderFilled(
        id="sma_cross:EURUSD:1:1",
        ts_event=TS,
        ts_init=TS,
        client_order_id="sma_cross:EURUSD:1",
        symbol="EURUSD",
        side="buy",
        qty=Decimal("2"),
        price=Decimal("1.121720"),
        fee=Decimal("0.000224344"),
        venue="paper",
    ),
    PositionUpdated(
        id="p1",
        ts_event=TS,
        ts_init=TS,
        symbol="EURUSD",
        qty=Decimal("-2"),
        avg_price=Decimal("1.121720"),
        realized_pnl=Decimal("-0.000000000001"),
        version=3,
    ),
    Heartbeat(
        id="h1",
        ts_event=TS,
        ts_init=TS,
        service="execution",
        instance="execution-0",
        shard=0,
        shards=2,
        status="ok",
        counters={"orders": 3, "fills": 2},
    ),
    Heartbeat(
        id="h2", ts_event=TS, ts_init=TS, service="strategy", instance="s-1", shard=1, shards=2, status="starting"
    ),
    QuoteBatch(
        id="sim7:b:1",
        ts_event=TS,
        ts_init=TS + 9,
        source="sim",
        quotes=[
            QuoteRow("sim7:1", "BTCUSDT", TS, 3943299, 3943362, 2, 31035, 66851, 6, 6),
            QuoteRow("sim7:2", "BTCUSDT", TS + 1, 3943300, 3943301, 2),
        ],
    ),
    SubmitOrder(
        id="maker:BTCUSDT:9",
        ts_event=TS,
        ts_init=TS,
        strategy="maker",
        symbol="BTCUSDT",
        side="sell",
        qty=Decimal("0.25"),
        order_type="stop_limit",
        quote_ts=TS - 1,
        quote_bid=Decimal("39432.99"),
        quote_ask=Decimal("39433.62"),
        quote_seq=7,
        quote_index=3,
        limit_price=Decimal("39400"),
        stop_price=Decimal("39410.5"),
        tif="gtd",
        expire_ts=TS + 60_000_000_000,
        post_only=False,
        reduce_only=True,
    ),
    CancelOrder(
        id="maker:cancel:1",
        ts_event=TS,
        ts_init=TS,
        strategy="maker",
        symbol="BTCUSDT",
        client_order_id="maker:BTCUSDT:9",
    ),
    ReplaceOrder(
        id="maker:replace:1",
        ts_event=TS,
        ts_init=TS,
        strategy="maker",
        symbol="BTCUSDT",
        client_order_id="maker:BTCUSDT:9",
        limit_price=Decimal("39399.5"),
        quote_seq=8,
        quote_index=2,
        quote_ts=TS - 1,
    ),
    OrderAccepted(
        id="maker:BTCUSDT:9:accepted",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        side="buy",
        qty=Decimal("0.25"),
        order_type="limit",
        limit_price=Decimal("39400"),
        tif="gtd",
        expire_ts=TS + 1,
        post_only=True,
        quote_seq=7,
        quote_index=3,
    ),
    OrderFilled(
        id="maker:BTCUSDT:9:2",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        symbol="BTCUSDT",
        side="buy",
        qty=Decimal("0.1"),
        price=Decimal("39400"),
        fee=Decimal("0"),
        venue="paper",
        leaves_qty=Decimal("0.05"),
        cum_qty=Decimal("0.2"),
        liquidity="maker",
        quote_seq=8,
    ),
    OrderTriggered(
        id="maker:BTCUSDT:9:triggered",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        side="sell",
        qty=Decimal("0.25"),
        order_type="stop_market",
        stop_price=Decimal("39410.5"),
        quote_seq=8,
        quote_index=1,
    ),
    OrderCanceled(
        id="maker:BTCUSDT:9:canceled",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        side="buy",
        qty=Decimal("0.25"),
        filled_qty=Decimal("0.2"),
        reason="canceled by request",
        command_id="maker:cancel:1",
    ),
    OrderExpired(
        id="maker:BTCUSDT:9:expired",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        side="buy",
        qty=Decimal("0.25"),
        filled_qty=Decimal(0),
        expire_ts=TS,
    ),
    OrderReplaced(
        id="maker:BTCUSDT:9:replaced:1",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        side="buy",
        qty=Decimal("0.5"),
        limit_price=Decimal("39399.5"),
        replaces=1,
        command_id="maker:replace:1",
    ),
    OrderCancelRejected(
        id="maker:cancel:1:refused",
        ts_event=TS,
        ts_init=TS,
        client_order_id="maker:BTCUSDT:9",
        strategy="maker",
        symbol="BTCUSDT",
        command_id="maker:cancel:1",
        response_to="cancel",
        reason="order maker:BTCUSDT:9 is filled",
    ),
]
EXAMPLES += [
    StrategyAt(
        id="maker+taker@8.2-",
        ts_event=TS,
        ts_init=TS,
        shard=0,
        strategies=["maker", "taker"],
        quote_seq=8,
        quote_index=2,
        inclusive=False,
    ),
    MatchedThrough(
        id="maker@8.2-/8.2",
        ts_event=TS,
        ts_init=TS,
        shard=0,
        strategy="maker",
        marker_seq=8,
        marker_index=2,
        marker_inclusive=False,
        through_seq=8,
        through_index=2,
    ),
    TradingState(
        id="operator:account:1", ts_event=TS, ts_init=TS, scope="account", state="halted", reason="fat finger"
    ),
    TradingState(
        id="daily-loss:0:1", ts_event=TS, ts_init=TS, scope="pair", strategy="maker", symbol="BTCUSDT",
        state="reducing", source="daily_loss",
    ),
    TradingStateApplied(id="0:account:7", ts_event=TS, ts_init=TS, shard=0, key="account", revision=7, state="halted",
                        canceled=3),
    ShardRisk(
        id="shard.1:1", ts_event=TS, ts_init=TS, shard=1, shards=4, day=18628,
        currencies=[CurrencyRisk("USD", Decimal("1200.5"), Decimal("-300"), Decimal("-12.25"))],
    ),
]  # fmt: skip
ORDER_UPDATES = (
    OrderAccepted,
    OrderRejected,
    OrderFilled,
    OrderTriggered,
    OrderCanceled,
    OrderExpired,
    OrderReplaced,
    OrderCancelRejected,
)

FAMILY_DECODERS: list[tuple[msgspec.msgpack.Decoder[Any], tuple[type[Message], ...]]] = [
    (messages.market_data_decoder, (Quote, Trade, QuoteBatch)),
    (messages.signal_decoder, (Signal,)),
    (messages.order_command_decoder, (SubmitOrder, CancelOrder, ReplaceOrder, StrategyAt)),
    (messages.order_event_decoder, (*ORDER_UPDATES, PositionUpdated, MatchedThrough)),
    (messages.heartbeat_decoder, (Heartbeat,)),
    (messages.trading_state_decoder, (TradingState,)),
    (messages.trading_applied_decoder, (TradingStateApplied,)),
    (messages.shard_risk_decoder, (ShardRisk,)),
]


def _family_decoder(message: Message) -> msgspec.msgpack.Decoder[Any]:
    return next(decoder for decoder, types in FAMILY_DECODERS if isinstance(message, types))


def _ids(message: Message) -> str:
    return f"{type(message).__name__}-{message.id}"


# -- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=_ids)
def test_message_round_trips_through_any_decoder_unchanged(message):
    decoded = messages.any_decoder.decode(messages.encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", EXAMPLES, ids=_ids)
def test_message_round_trips_through_its_family_decoder_unchanged(message):
    decoded = _family_decoder(message).decode(messages.encode(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_every_message_type_has_an_example_here():
    assert {type(m) for m in EXAMPLES} == set(typing.get_args(messages.AnyMessage))


@pytest.mark.parametrize("message", EXAMPLES, ids=_ids)
def test_other_family_decoders_reject_the_message_naming_its_type_tag(message):
    payload = messages.encode(message)
    others = [decoder for decoder, types in FAMILY_DECODERS if not isinstance(message, types)]
    assert len(others) == len(FAMILY_DECODERS) - 1
    for decoder in others:
        with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
            decoder.decode(payload)


def test_message_type_tags_carry_a_version():
    tags = {type(m).__struct_config__.tag for m in EXAMPLES}
    assert tags == {
        "quote.v1",
        "quote_batch.v1",
        "trade.v1",
        "signal.v1",
        "submit_order.v1",
        "cancel_order.v1",
        "replace_order.v1",
        "strategy_at.v1",
        "matched_through.v1",
        "order_accepted.v1",
        "order_rejected.v1",
        "order_filled.v1",
        "order_triggered.v1",
        "order_canceled.v1",
        "order_expired.v1",
        "order_replaced.v1",
        "order_cancel_rejected.v1",
        "position_updated.v1",
        "heartbeat.v1",
        "trading_state.v1",
        "trading_state_applied.v1",
        "shard_risk.v1",
    }


@pytest.mark.parametrize(
    "text",
    ["0.031035000000000004", "39433.62000000", "1E-28", "123456789012345678.1234567890123456789012345678", "0.10"],
)
def test_decimal_travels_as_its_exact_text(text):
    quote = _quote(bid_size=Decimal(text))
    decoded = messages.market_data_decoder.decode(messages.encode(quote))
    assert str(decoded.bid_size) == text
    assert decoded.bid_size.as_tuple() == Decimal(text).as_tuple()


def test_decimal_is_encoded_as_text_not_as_a_binary_float():
    raw = msgspec.msgpack.decode(messages.encode(_quote()))
    assert raw["bid_size"] == "0.031035000000000004"
    assert raw["type"] == "quote.v1"


def test_fields_at_their_default_are_left_off_the_wire():
    raw = msgspec.msgpack.decode(messages.encode(EXAMPLES[1]))
    assert "bid_size" not in raw
    assert "ask_size" not in raw


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        _quote().bid = Decimal(1)  # type: ignore[misc]


@given(
    bid=st.decimals(min_value=Decimal("1e-8"), max_value=Decimal("1e12"), places=8),
    spread=st.decimals(min_value=Decimal(0), max_value=Decimal("1e6"), places=8),
    ts=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_valid_quote_round_trips_exactly(bid, spread, ts):
    quote = Quote(id="q", ts_event=ts, ts_init=ts, symbol="BTCUSDT", bid=bid, ask=bid + spread)
    decoded = messages.any_decoder.decode(messages.encode(quote))
    assert decoded == quote
    assert str(decoded.ask) == str(bid + spread)


# -- validation ----------------------------------------------------------------------------------------


def _raw_quote(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "quote.v1",
        "id": "q1",
        "ts_event": TS,
        "ts_init": TS,
        "symbol": "BTCUSDT",
        "bid": "39432.99",
        "ask": "39433.62",
    }
    return raw | overrides


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"bid": "2", "ask": "1"}, "crossed quote"),
        ({"bid": "0"}, "bid must be"),
        ({"ask": "-1"}, "ask must be"),
        ({"bid": "NaN"}, "bid must be"),
        ({"ask": "Infinity"}, "ask must be"),
        ({"bid_size": "-0.1"}, "bid_size must be"),
        ({"ask_size": "NaN"}, "ask_size must be"),
        ({"symbol": "btcusdt"}, "invalid symbol"),
        ({"symbol": "BTC.USDT"}, "invalid symbol"),
        ({"symbol": "md.>"}, "invalid symbol"),
        ({"symbol": ""}, "invalid symbol"),
        ({"bid": "abc"}, "decimal"),
    ],
)
def test_decoding_an_invalid_quote_raises_validation_error_with_the_reason(overrides, reason):
    payload = msgspec.msgpack.encode(_raw_quote(**overrides))
    for decoder in (messages.any_decoder, messages.market_data_decoder):
        with pytest.raises(msgspec.ValidationError, match=reason):
            decoder.decode(payload)


def test_decoding_a_quote_without_a_required_field_names_the_field():
    raw = _raw_quote()
    del raw["ask"]
    with pytest.raises(msgspec.ValidationError, match="missing required field `ask`"):
        messages.any_decoder.decode(msgspec.msgpack.encode(raw))


def test_quote_with_bid_equal_to_ask_is_valid():
    quote = messages.any_decoder.decode(msgspec.msgpack.encode(_raw_quote(bid="1.5", ask="1.50")))
    assert quote.bid == quote.ask


def test_constructing_a_crossed_quote_raises_value_error():
    with pytest.raises(ValueError, match="crossed quote: bid 2 > ask 1"):
        _quote(bid=Decimal(2), ask=Decimal(1))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"price": "0"}, "price must be"),
        ({"size": "-1"}, "size must be"),
        ({"price": "sNaN"}, "price must be"),
        ({"symbol": "BTC USDT"}, "invalid symbol"),
        ({"aggressor": "maker"}, "Invalid enum value 'maker'"),
    ],
)
def test_decoding_an_invalid_trade_raises_validation_error(overrides, reason):
    raw = {"type": "trade.v1", "id": "t", "ts_event": 1, "ts_init": 1, "symbol": "BTCUSDT", "price": "1", "size": "1"}
    with pytest.raises(msgspec.ValidationError, match=reason):
        messages.market_data_decoder.decode(msgspec.msgpack.encode(raw | overrides))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"qty": "0"}, "qty must be"),
        ({"qty": "-1"}, "qty must be"),
        ({"quote_bid": "NaN"}, "quote_bid must be"),
        ({"quote_ask": "0"}, "quote_ask must be"),
        ({"symbol": "EUR*"}, "invalid symbol"),
        ({"side": "short"}, "Invalid enum value 'short'"),
        ({"order_type": "iceberg"}, "Invalid enum value 'iceberg'"),
        ({"tif": "day"}, "Invalid enum value 'day'"),
    ],
)
def test_decoding_an_invalid_order_command_raises_validation_error(overrides, reason):
    raw = msgspec.msgpack.decode(messages.encode(EXAMPLES[5]))
    with pytest.raises(msgspec.ValidationError, match=reason):
        messages.order_command_decoder.decode(msgspec.msgpack.encode(raw | overrides))


def test_decoding_garbage_bytes_raises_a_decode_error():
    with pytest.raises(msgspec.DecodeError):
        messages.any_decoder.decode(b"\xc1not msgpack")


def test_decoding_an_unknown_type_tag_names_the_tag():
    with pytest.raises(msgspec.ValidationError, match=re.escape("Invalid value 'quote.v9'")):
        messages.any_decoder.decode(msgspec.msgpack.encode(_raw_quote(type="quote.v9")))


# -- contract: v1 payloads as the previous writers produced them ---------------------------------------

V1_PAYLOADS: list[tuple[dict[str, Any], Message]] = [
    (
        {
            "type": "quote.v1",
            "id": "btcusdt@abc:2",
            "ts_event": TS,
            "ts_init": TS + 5,
            "symbol": "BTCUSDT",
            "bid": "39432.99",
            "ask": "39433.62",
            "bid_size": "0.031035000000000004",
            "ask_size": "0.066851",
        },
        EXAMPLES[0],
    ),
    (
        {
            "type": "quote.v1",
            "id": "q2",
            "ts_event": 1,
            "ts_init": 2,
            "symbol": "EURUSD",
            "bid": "1.121200",
            "ask": "1.121200",
        },
        EXAMPLES[1],
    ),
    (
        {
            "type": "trade.v1",
            "id": "t1",
            "ts_event": TS,
            "ts_init": TS,
            "symbol": "BTCUSDT",
            "price": "39433.6",
            "size": "0.5",
        },
        EXAMPLES[2],
    ),
    (
        {
            "type": "signal.v1",
            "id": "s1",
            "ts_event": TS,
            "ts_init": TS,
            "strategy": "sma_cross",
            "symbol": "EURUSD",
            "quote_id": "q2",
            "direction": "up",
            "fast": "1.1213",
            "slow": "1.1210",
            "target": "1",
        },
        EXAMPLES[4],
    ),
    (
        {
            "type": "submit_order.v1",
            "id": "sma_cross:EURUSD:1",
            "ts_event": TS,
            "ts_init": TS,
            "strategy": "sma_cross",
            "symbol": "EURUSD",
            "side": "buy",
            "qty": "2",
            "quote_ts": TS - 1,
            "quote_bid": "1.121200",
            "quote_ask": "1.121720",
        },
        EXAMPLES[5],
    ),
    (
        {
            "type": "order_accepted.v1",
            "id": "a1",
            "ts_event": TS,
            "ts_init": TS,
            "client_order_id": "sma_cross:EURUSD:1",
            "strategy": "sma_cross",
            "symbol": "EURUSD",
            "side": "buy",
            "qty": "2",
            "order_type": "market",
        },
        EXAMPLES[6],
    ),
    (
        {
            "type": "order_rejected.v1",
            "id": "r1",
            "ts_event": TS,
            "ts_init": TS,
            "client_order_id": "sma_cross:EURUSD:2",
            "strategy": "sma_cross",
            "symbol": "EURUSD",
            "side": "sell",
            "qty": "2000",
            "reason": "qty 2000 exceeds max_order_qty 1000",
        },
        EXAMPLES[7],
    ),
    (
        {
            "type": "order_filled.v1",
            "id": "sma_cross:EURUSD:1:1",
            "ts_event": TS,
            "ts_init": TS,
            "client_order_id": "sma_cross:EURUSD:1",
            "symbol": "EURUSD",
            "side": "buy",
            "qty": "2",
            "price": "1.121720",
            "fee": "0.000224344",
            "venue": "paper",
        },
        EXAMPLES[8],
    ),
    (
        {
            "type": "position_updated.v1",
            "id": "p1",
            "ts_event": TS,
            "ts_init": TS,
            "symbol": "EURUSD",
            "qty": "-2",
            "avg_price": "1.121720",
            "realized_pnl": "-0.000000000001",
            "version": 3,
        },
        EXAMPLES[9],
    ),
    (
        {
            "type": "heartbeat.v1",
            "id": "h1",
            "ts_event": TS,
            "ts_init": TS,
            "service": "execution",
            "instance": "execution-0",
            "shard": 0,
            "shards": 2,
            "status": "ok",
            "counters": {"orders": 3, "fills": 2},
        },
        EXAMPLES[10],
    ),
]


def _contract_id(case: tuple[dict[str, Any], Message]) -> str:
    return str(case[0]["type"])


@pytest.mark.parametrize("case", V1_PAYLOADS, ids=_contract_id)
def test_v1_payload_decodes_into_its_class_with_its_values(case):
    raw, expected = case
    payload = msgspec.msgpack.encode(raw)
    for decoder in (messages.any_decoder, _family_decoder(expected)):
        decoded = decoder.decode(payload)
        assert type(decoded) is type(expected)
        assert decoded == expected


@pytest.mark.parametrize("case", V1_PAYLOADS, ids=_contract_id)
def test_v1_payload_with_an_unknown_extra_field_still_decodes(case):
    raw, expected = case
    payload = msgspec.msgpack.encode(raw | {"added_in_v2": {"nested": [1, 2.5, "x"]}, "venue_seq": 7})
    assert messages.any_decoder.decode(payload) == expected
    assert _family_decoder(expected).decode(payload) == expected


@pytest.mark.parametrize("case", V1_PAYLOADS, ids=_contract_id)
def test_v1_payload_with_fields_in_another_order_decodes_the_same(case):
    raw, expected = case
    shuffled = dict(reversed(list(raw.items())))
    assert messages.any_decoder.decode(msgspec.msgpack.encode(shuffled)) == expected


@pytest.mark.parametrize(
    "case", [c for c in V1_PAYLOADS if c[0]["type"].startswith(("submit_order", "order_"))], ids=_contract_id
)
def test_a_market_order_and_its_events_encode_to_exactly_what_they_did_before_order_types(case):
    raw, message = case
    encoded = msgspec.msgpack.decode(messages.encode(message))
    # No new field goes on the wire; an older writer sent the default order type, which is left off now.
    assert encoded == {k: v for k, v in raw.items() if k in encoded}
    assert set(raw) - set(encoded) <= {"order_type"}


def test_a_replace_that_changes_nothing_does_not_decode():
    raw = {"type": "replace_order.v1", "id": "r", "ts_event": 1, "ts_init": 1, "strategy": "s", "symbol": "X",
           "client_order_id": "o"}  # fmt: skip
    with pytest.raises(msgspec.ValidationError, match="a replace changes qty, limit_price or stop_price"):
        messages.order_command_decoder.decode(msgspec.msgpack.encode(raw))


@pytest.mark.parametrize("field", ["limit_price", "stop_price"])
@pytest.mark.parametrize("value", ["0", "-1", "NaN"])
def test_an_order_price_must_be_a_positive_number(field, value):
    raw = msgspec.msgpack.decode(messages.encode(EXAMPLES[13])) | {field: value}
    with pytest.raises(msgspec.ValidationError, match=field):
        messages.order_command_decoder.decode(msgspec.msgpack.encode(raw))


def test_a_fill_says_how_much_of_its_order_is_filled():
    single, later = EXAMPLES[8], EXAMPLES[17]
    assert isinstance(single, OrderFilled)
    assert isinstance(later, OrderFilled)
    assert (single.filled_qty, single.open_qty) == (Decimal(2), Decimal(0))
    assert (later.filled_qty, later.open_qty) == (Decimal("0.2"), Decimal("0.05"))


# -- subject agreement ---------------------------------------------------------------------------------


def test_each_message_belongs_on_the_subject_of_its_family_symbol_and_shard():
    for message in EXAMPLES:
        subject = messages.subject_of(message, 4)  # type: ignore[arg-type]
        messages.check_subject(subject, message, 4)
        messages.check_subject(f"retry.persistence.{subject}", message, 4)


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("md.quote.0.NOTEURUSD", _quote(symbol="SUBJTEST")),  # another symbol
        ("md.trade.1.BTCUSDT", _quote()),  # another family
        ("evt.order.0.EURUSD", PositionUpdated(id="p", ts_event=1, ts_init=1, symbol="EURUSD", qty=Decimal(1),
                                               avg_price=Decimal(1), realized_pnl=Decimal(0), version=1)),
        ("md.quote.0.EURUSD", _quote(symbol="EURUSD")),  # EURUSD is shard 1 of 2
        ("md.quote.0.BTCUSDT", _quote()),  # BTCUSDT is shard 1 of 2
        ("retry.execution.md.quote.1.EURUSD", _quote(symbol="BTCUSDT")),
        ("md.quote", _quote()),
        ("ctl.heartbeat.strategy.0", Heartbeat(id="h", ts_event=1, ts_init=1, service="execution", instance="i",
                                               shard=0, shards=2, status="ok")),
    ],
)  # fmt: skip
def test_a_message_on_a_subject_not_its_own_is_refused_naming_where_it_belongs(subject, message):
    with pytest.raises(MisroutedMessageError) as info:
        messages.check_subject(subject, message, 2)
    assert info.value.subject == subject
    assert messages.subject_of(message, 2) in str(info.value)


def test_every_per_symbol_family_has_its_message_types_and_every_message_type_one_family():
    assert set(messages.FAMILY_TYPES) == subjects.SYMBOL_FAMILIES - {subjects.LATEST_QUOTE}
    kinds = [kind for kinds in messages.FAMILY_TYPES.values() for kind in kinds]
    assert sorted(k.__name__ for k in kinds) == sorted(
        k.__name__
        for k in typing.get_args(messages.AnyMessage)
        if k not in (Heartbeat, QuoteBatch, *typing.get_args(messages.ControlMessage), StrategyAt, MatchedThrough)
    )


def test_every_shard_family_has_its_lockstep_message_and_each_travels_on_its_own_shards_step_subject():
    assert set(messages.SHARD_TYPES) == subjects.STEP_FAMILIES
    marker = next(m for m in EXAMPLES if isinstance(m, StrategyAt))
    progress = next(m for m in EXAMPLES if isinstance(m, MatchedThrough))
    assert messages.subject_of(marker, 4) == "cmd.order.0._step"
    assert messages.subject_of(progress, 4) == "evt.order.0._step"
    messages.check_subject("cmd.order.0._step", marker, 4)
    messages.check_subject("retry.execution.cmd.order.0._step", marker, 4)
    for wrong in ("cmd.order.1._step", "evt.order.0._step", "cmd.order.0.BTCUSDT", "cmd.order.0._batch"):
        with pytest.raises(MisroutedMessageError):
            messages.check_subject(wrong, marker, 4)
    with pytest.raises(MisroutedMessageError):
        messages.check_subject("cmd.order.0._step", progress, 4)
    # In an envelope of its family and shard, and no other.
    assert messages.check_envelope_item("cmd.order.0._batch", "cmd.order", 0, marker, 4) == "cmd.order.0._step"
    with pytest.raises(MisroutedMessageError, match="shard 2"):
        messages.check_envelope_item("cmd.order.2._batch", "cmd.order", 2, marker, 4)
    with pytest.raises(MisroutedMessageError):
        messages.check_envelope_item("evt.order.0._batch", "evt.order", 0, marker, 4)


def test_a_lockstep_marker_names_distinct_strategies_and_a_quote_that_can_be_one():
    marker = next(m for m in EXAMPLES if isinstance(m, StrategyAt))
    raw = msgspec.to_builtins(marker)
    for bad, match in (
        ({"strategies": []}, "length >= 1"),
        ({"strategies": ["a"] * 2}, "distinct"),
        ({"strategies": [f"s{i}" for i in range(33)]}, "length <= 32"),
        ({"strategies": ["Not A Name"]}, "regex"),
        ({"quote_seq": 0}, ">= 1"),
        ({"quote_index": 4096}, "<= 4095"),
        ({"shard": 1024}, "<= 1023"),
    ):
        with pytest.raises(msgspec.ValidationError, match=match):
            messages.order_command_decoder.decode(msgspec.msgpack.encode(raw | bad))
    assert marker.position == (8, 2, 0)


# -- quote batches ------------------------------------------------------------------------------------


def _batch(*rows: QuoteRow, source: str = "load") -> bytes:
    # Encoded from builtins, so that rows a constructor would refuse can be sent as a hostile peer would.
    return msgspec.msgpack.encode(
        {"type": "quote_batch.v1", "id": "b1", "ts_event": TS, "ts_init": TS, "source": source, "quotes": rows}
    )


def test_a_quote_batch_row_is_the_exact_quote_it_stands_for():
    batch = EXAMPLES[12]
    assert isinstance(batch, QuoteBatch)
    quote = batch.quote(0)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (
        Decimal("39432.99"), Decimal("39433.62"), Decimal("0.031035"), Decimal("0.066851"),
    )  # fmt: skip
    assert (quote.id, quote.symbol, quote.ts_event, quote.ts_init) == ("sim7:1", "BTCUSDT", TS, TS + 9)
    assert batch.quote(1).bid_size is None


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (["q 1", "EURUSD", TS, 1, 2, 0], "printable ASCII without spaces"),
        (["q\n1", "EURUSD", TS, 1, 2, 0], "printable ASCII without spaces"),
        (["q1", "EUR.USD", TS, 1, 2, 0], "invalid symbol"),
        (["q1", "EURUSD", TS, 3, 2, 0], "crossed quote q1 at index 0"),
        (["q1", "EURUSD", TS, 0, 2, 0], r"Expected `int` >= 1 - at `\$.quotes\[0\]\[3\]`"),
        (["q1", "EURUSD", TS, 1, 10**18, 0], r"<= 999999999999999999"),
        (["q1", "EURUSD", TS, 1, 2, 29], r"<= 28"),
        (["q1", "EURUSD", -1, 1, 2, 0], r">= 0"),
        (["q1", "EURUSD", TS, 1, 2, 0, -5], r">= 0"),
        (["x" * 200, "EURUSD", TS, 1, 2, 0], "length <= 159"),
    ],
)
def test_a_hostile_row_makes_the_whole_batch_undecodable_with_its_reason(row, error):
    with pytest.raises(msgspec.ValidationError, match=error):
        messages.market_data_decoder.decode(_batch(row))


def test_an_empty_or_oversized_batch_is_refused():
    with pytest.raises(msgspec.ValidationError, match="length >= 1"):
        messages.market_data_decoder.decode(_batch())
    row = ["q", "EURUSD", TS, 1, 2, 0]
    with pytest.raises(msgspec.ValidationError, match="length <= 4096"):
        messages.market_data_decoder.decode(_batch(*[row] * 4097))


def test_a_batch_belongs_on_its_shard_and_source_subject_only():
    rows = [QuoteRow(f"q{i}", s, TS, 1, 2, 0) for i, s in enumerate(["EURUSD", "EURUSD"])]
    batch = QuoteBatch(id="b", ts_event=TS, ts_init=TS, source="replay", quotes=rows)
    shard = subjects.shard_of("EURUSD", 4)
    messages.check_subject(f"md.quotes.{shard}.replay", batch, 4)
    for wrong in (f"md.quotes.{shard}.sim", f"md.quotes.{(shard + 1) % 4}.replay", f"md.quote.{shard}.EURUSD"):
        with pytest.raises(MisroutedMessageError):
            messages.check_subject(wrong, batch, 4)


def test_a_batch_with_a_symbol_of_another_shard_is_misrouted_naming_the_row():
    other = next(
        s
        for s in ("USDJPY", "BTCUSDT", "ETHUSDT", "GBPUSD")
        if subjects.shard_of(s, 4) != subjects.shard_of("EURUSD", 4)
    )
    rows = [QuoteRow("q0", "EURUSD", TS, 1, 2, 0), QuoteRow("q1", other, TS, 1, 2, 0)]
    batch = QuoteBatch(id="b", ts_event=TS, ts_init=TS, source="replay", quotes=rows)
    with pytest.raises(MisroutedMessageError, match=f"{other} at index 1"):
        messages.check_subject(messages.subject_of(batch, 4), batch, 4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "account", "symbol": "EURUSD"}, "scope account names no strategy and no symbol"),
        ({"scope": "pair", "strategy": "s"}, "scope pair names a strategy and a symbol"),
        ({"scope": "symbol", "symbol": "EUR.USD"}, "invalid symbol"),
        ({"scope": "strategy", "strategy": "Not-A-Name"}, "strategy"),
    ],
)
def test_a_trading_state_names_exactly_what_its_scope_needs(fields, message):
    raw = {"type": "trading_state.v1", "id": "t", "ts_event": 1, "ts_init": 1, "state": "halted"} | fields
    with pytest.raises(msgspec.ValidationError, match=message):
        messages.trading_state_decoder.decode(msgspec.msgpack.encode(raw))
