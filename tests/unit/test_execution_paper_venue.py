"""The paper venue: fills at the trigger quote's touch, with optional slippage and fees."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rrr.execution.paper_venue import PaperFill, PaperVenue
from rrr.shared.messages import SubmitOrder


def _order(**overrides: Any) -> SubmitOrder:
    fields: dict[str, Any] = {
        "id": "sma_cross:EURUSD:7",
        "ts_event": 1,
        "ts_init": 1,
        "strategy": "sma_cross",
        "symbol": "EURUSD",
        "side": "buy",
        "qty": Decimal(2),
        "quote_ts": 1,
        "quote_bid": Decimal("1.121200"),
        "quote_ask": Decimal("1.121720"),
    }
    return SubmitOrder(**(fields | overrides))


def test_buy_fills_in_full_at_the_ask_without_fee_by_default():
    fill = PaperVenue().execute(_order(side="buy"))
    assert fill == PaperFill(fill_id="sma_cross:EURUSD:7:1", price=Decimal("1.121720"), qty=Decimal(2), fee=Decimal(0))


def test_sell_fills_in_full_at_the_bid_without_fee_by_default():
    fill = PaperVenue().execute(_order(side="sell", qty=Decimal("0.5")))
    assert (fill.price, fill.qty, fill.fee) == (Decimal("1.121200"), Decimal("0.5"), Decimal(0))


def test_default_venue_is_named_paper_with_zero_slippage_and_fees():
    venue = PaperVenue()
    assert (venue.name, venue.slippage_bps, venue.fee_bps) == ("paper", Decimal(0), Decimal(0))


def test_buy_with_slippage_pays_more_than_the_ask():
    fill = PaperVenue(slippage_bps=Decimal(10)).execute(_order(side="buy", quote_ask=Decimal(200)))
    assert fill.price == Decimal("200.2")  # 200 * (1 + 10 / 10_000)


def test_sell_with_slippage_receives_less_than_the_bid():
    fill = PaperVenue(slippage_bps=Decimal(10)).execute(
        _order(side="sell", quote_bid=Decimal(100), quote_ask=Decimal(101))
    )
    assert fill.price == Decimal("99.9")  # 100 * (1 - 10 / 10_000)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_fee_is_charged_on_the_notional_at_the_fill_price(side):
    venue = PaperVenue(fee_bps=Decimal("2.5"))
    fill = venue.execute(_order(side=side, qty=Decimal(4), quote_bid=Decimal(100), quote_ask=Decimal(100)))
    assert fill.fee == Decimal("0.1")  # 4 * 100 * 2.5 / 10_000


def test_fee_applies_to_the_slipped_price():
    venue = PaperVenue(slippage_bps=Decimal(100), fee_bps=Decimal(100))
    fill = venue.execute(_order(side="buy", qty=Decimal(1), quote_ask=Decimal(50)))
    assert fill.price == Decimal("50.5")
    assert fill.fee == Decimal("0.505")


def test_fill_id_derives_from_the_client_order_id_so_a_retry_gets_the_same_one():
    venue = PaperVenue()
    first = venue.execute(_order(id="strat:BTCUSDT:42"))
    retry = venue.execute(_order(id="strat:BTCUSDT:42", ts_init=999))
    other = venue.execute(_order(id="strat:BTCUSDT:43"))
    assert first.fill_id == retry.fill_id == "strat:BTCUSDT:42:1"
    assert other.fill_id != first.fill_id


def test_fill_price_depends_on_the_order_not_on_when_it_runs():
    venue = PaperVenue(slippage_bps=Decimal(3), fee_bps=Decimal(1))
    order = _order()
    assert venue.execute(order) == venue.execute(order)


def test_fill_price_keeps_the_quotes_decimal_places():
    fill = PaperVenue().execute(_order(side="buy", quote_ask=Decimal("39433.62000")))
    assert str(fill.price) == "39433.62000"
