"""The paper venue: fills at the touch of the quote it read, with optional slippage and fees."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rrr.execution.paper_venue import PaperFill, PaperVenue
from rrr.shared.messages import Quote, SubmitOrder


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


def _quote_of(order: SubmitOrder) -> Quote:
    """The quote the market-data stream holds for ``order``: here, the one it says it saw."""
    return Quote(
        id="q", ts_event=order.quote_ts, ts_init=1, symbol=order.symbol, bid=order.quote_bid, ask=order.quote_ask
    )


def _execute(venue: PaperVenue, order: SubmitOrder) -> PaperFill:
    return venue.execute(order, _quote_of(order))


def test_buy_fills_in_full_at_the_ask_without_fee_by_default():
    fill = _execute(PaperVenue(), _order(side="buy"))
    assert fill == PaperFill(fill_id="sma_cross:EURUSD:7:1", price=Decimal("1.121720"), qty=Decimal(2), fee=Decimal(0))


def test_sell_fills_in_full_at_the_bid_without_fee_by_default():
    fill = _execute(PaperVenue(), _order(side="sell", qty=Decimal("0.5")))
    assert (fill.price, fill.qty, fill.fee) == (Decimal("1.121200"), Decimal("0.5"), Decimal(0))


def test_default_venue_is_named_paper_with_zero_slippage_and_fees():
    venue = PaperVenue()
    assert (venue.name, venue.slippage_bps, venue.fee_bps) == ("paper", Decimal(0), Decimal(0))


def test_buy_with_slippage_pays_more_than_the_ask():
    fill = _execute(PaperVenue(slippage_bps=Decimal(10)), _order(side="buy", quote_ask=Decimal(200)))
    assert fill.price == Decimal("200.2")  # 200 * (1 + 10 / 10_000)


def test_sell_with_slippage_receives_less_than_the_bid():
    fill = _execute(
        PaperVenue(slippage_bps=Decimal(10)), _order(side="sell", quote_bid=Decimal(100), quote_ask=Decimal(101))
    )
    assert fill.price == Decimal("99.9")  # 100 * (1 - 10 / 10_000)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_fee_is_charged_on_the_notional_at_the_fill_price(side):
    venue = PaperVenue(fee_bps=Decimal("2.5"))
    fill = _execute(venue, _order(side=side, qty=Decimal(4), quote_bid=Decimal(100), quote_ask=Decimal(100)))
    assert fill.fee == Decimal("0.1")  # 4 * 100 * 2.5 / 10_000


def test_fee_applies_to_the_slipped_price():
    venue = PaperVenue(slippage_bps=Decimal(100), fee_bps=Decimal(100))
    fill = _execute(venue, _order(side="buy", qty=Decimal(1), quote_ask=Decimal(50)))
    assert fill.price == Decimal("50.5")
    assert fill.fee == Decimal("0.505")


def test_fill_id_derives_from_the_client_order_id_so_a_retry_gets_the_same_one():
    venue = PaperVenue()
    first = _execute(venue, _order(id="strat:BTCUSDT:42"))
    retry = _execute(venue, _order(id="strat:BTCUSDT:42", ts_init=999))
    other = _execute(venue, _order(id="strat:BTCUSDT:43"))
    assert first.fill_id == retry.fill_id == "strat:BTCUSDT:42:1"
    assert other.fill_id != first.fill_id


def test_fill_price_depends_on_the_order_not_on_when_it_runs():
    venue = PaperVenue(slippage_bps=Decimal(3), fee_bps=Decimal(1))
    order = _order()
    assert _execute(venue, order) == _execute(venue, order)


def test_fill_price_keeps_the_quotes_decimal_places():
    fill = _execute(PaperVenue(), _order(side="buy", quote_ask=Decimal("39433.62000")))
    assert str(fill.price) == "39433.62000"


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_fill_price_is_the_quotes_never_the_one_the_order_carries(side):
    # A forged order saying the market was at 0.000000000001: the venue fills at the quote it read.
    order = _order(side=side, quote_bid=Decimal("0.000000000001"), quote_ask=Decimal("0.000000000001"))
    market = Quote(id="q", ts_event=1, ts_init=1, symbol="EURUSD", bid=Decimal("1.1212"), ask=Decimal("1.1217"))
    fill = PaperVenue().execute(order, market)
    assert fill.price == (Decimal("1.1217") if side == "buy" else Decimal("1.1212"))
