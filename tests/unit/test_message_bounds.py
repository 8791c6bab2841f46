"""Bounds every decoded message is held to, so that nothing downstream can silently misstore it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rrr.shared.messages import any_decoder

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
