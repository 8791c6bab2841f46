"""The paper venue's matching rules, one by one, and against an independent computation."""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.execution.matching import (
    Accepted,
    Canceled,
    Costs,
    Expired,
    Fill,
    Rejected,
    Replaced,
    Report,
    SymbolBook,
    Touch,
    Triggered,
    WorkingOrder,
    invalid,
)
from tests.support.matching_reference import RefOrder, RefOutcome, RefQuote, reference

D = Decimal
BTCUSDT = Path(__file__).parents[1] / "data" / "btcusdt_quotes_2021-01-08.csv"


def _order(**fields: Any) -> WorkingOrder:
    base: dict[str, Any] = {"id": "o1", "strategy": "s", "symbol": "X", "side": "buy", "qty": D(5)}
    return WorkingOrder(**(base | fields))


def _touch(n: int, bid: str, ask: str, bid_size: str | None = None, ask_size: str | None = None) -> Touch:
    return Touch(
        ts_event=n * 1000,
        bid=D(bid),
        ask=D(ask),
        bid_size=None if bid_size is None else D(bid_size),
        ask_size=None if ask_size is None else D(ask_size),
        at=(n, 0),
    )


def _kinds(reports: list[Report]) -> list[str]:
    return [type(r).__name__ for r in reports]


def _fills(reports: list[Report]) -> list[tuple[Decimal, Decimal, bool]]:
    return [(r.qty, r.price, r.taker) for r in reports if isinstance(r, Fill)]


# -- market ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "price"), [("buy", D("101")), ("sell", D("100"))])
def test_market_order_fills_all_at_once_at_the_touch_whatever_the_displayed_size(side, price):
    book = SymbolBook("X")
    reports = book.submit(_order(side=side), _touch(1, "100", "101", "1", "1"))
    assert _kinds(reports) == ["Accepted", "Fill"]
    assert _fills(reports) == [(D(5), price, True)]
    assert len(book) == 0


def test_market_order_pays_slippage_and_fees_as_the_paper_venue_always_did():
    book = SymbolBook("X", Costs(slippage_bps=D(10), fee_bps=D("2.5")))
    [_, fill] = book.submit(_order(qty=D(4)), _touch(1, "199", "200"))
    assert isinstance(fill, Fill)
    assert fill.price == D("200.2")  # 200 * (1 + 10 / 10_000)
    assert fill.fee == D("0.2002")  # 200.2 * 4 * 2.5 / 10_000
    assert (fill.number, fill.cum_qty, fill.leaves_qty) == (1, D(4), D(0))


# -- limit ----------------------------------------------------------------------------------------------


def test_buy_limit_below_the_ask_rests_and_fills_at_its_price_when_the_ask_reaches_it():
    book = SymbolBook("X")
    assert _kinds(book.submit(_order(order_type="limit", limit_price=D(100)), _touch(1, "100.5", "101"))) == [
        "Accepted"
    ]
    assert book.on_quote(_touch(2, "100.2", "100.01")) == []
    reports = book.on_quote(_touch(3, "99", "99.5"))
    # The ask went through the limit: a resting order fills at its own price, no better.
    assert _fills(reports) == [(D(5), D(100), False)]
    assert len(book) == 0


def test_sell_limit_above_the_bid_rests_and_fills_when_the_bid_reaches_it():
    book = SymbolBook("X")
    book.submit(_order(side="sell", order_type="limit", limit_price=D(102)), _touch(1, "101", "101.5"))
    assert book.on_quote(_touch(2, "101.99", "102.5")) == []
    assert _fills(book.on_quote(_touch(3, "102", "102.5"))) == [(D(5), D(102), False)]


def test_buy_limit_marketable_on_arrival_takes_at_the_ask_which_is_better_than_its_limit():
    book = SymbolBook("X")
    reports = book.submit(_order(order_type="limit", limit_price=D(105)), _touch(1, "100", "101"))
    assert _fills(reports) == [(D(5), D(101), True)]


def test_slippage_never_takes_a_limit_order_beyond_its_limit():
    book = SymbolBook("X", Costs(slippage_bps=D(100)))
    [_, fill] = book.submit(_order(order_type="limit", limit_price=D("101.5")), _touch(1, "100", "101"))
    assert isinstance(fill, Fill)
    assert fill.price == D("101.5")  # 101 * 1.01 = 102.01, capped at the limit


def test_a_resting_fill_pays_the_fee_but_no_slippage():
    book = SymbolBook("X", Costs(slippage_bps=D(100), fee_bps=D(10)))
    book.submit(_order(qty=D(2), order_type="limit", limit_price=D(100)), _touch(1, "100.5", "101"))
    [fill] = book.on_quote(_touch(2, "99", "99.5"))
    assert isinstance(fill, Fill)
    assert (fill.price, fill.fee) == (D(100), D("0.2"))


def test_limit_fills_partially_by_the_displayed_size_quote_after_quote():
    book = SymbolBook("X")
    arrival = book.submit(_order(order_type="limit", limit_price=D(100)), _touch(1, "99", "100", "9", "2"))
    assert _fills(arrival) == [(D(2), D(100), True)]
    partial = book.on_quote(_touch(2, "99", "99.5", "9", "1.5"))
    assert _fills(partial) == [(D("1.5"), D(100), False)]
    [fill] = partial
    assert isinstance(fill, Fill)
    assert (fill.number, fill.cum_qty, fill.leaves_qty) == (2, D("3.5"), D("1.5"))
    assert book.on_quote(_touch(3, "99", "99.5", "9", "0")) == []
    [last] = book.on_quote(_touch(4, "99", "99.5", "9", "7"))
    assert isinstance(last, Fill)
    assert (last.qty, last.number, last.cum_qty, last.leaves_qty) == (D("1.5"), 3, D(5), D(0))
    assert len(book) == 0


def test_without_sizes_a_limit_fills_in_full_at_the_first_quote_that_reaches_it():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100)), _touch(1, "100", "101"))
    assert _fills(book.on_quote(_touch(2, "99", "100"))) == [(D(5), D(100), False)]


def test_each_order_sees_the_whole_displayed_size_on_its_own():
    book = SymbolBook("X")
    book.submit(_order(id="a", order_type="limit", limit_price=D(100)), _touch(1, "100", "101", "5", "5"))
    book.submit(_order(id="b", order_type="limit", limit_price=D(100)), _touch(1, "100", "101", "5", "5"))
    reports = book.on_quote(_touch(2, "99", "100", "3", "3"))
    assert [(r.order.id, r.qty) for r in reports if isinstance(r, Fill)] == [("a", D(3)), ("b", D(3))]


def test_a_quote_is_matched_at_most_once_per_order_and_never_before_its_placement():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100)), _touch(5, "100", "101", "5", "5"))
    assert book.on_quote(_touch(4, "99", "99.5", "1", "1")) == []  # earlier than its placement
    assert len(_fills(book.on_quote(_touch(6, "99", "99.5", "1", "1")))) == 1
    assert book.on_quote(_touch(6, "99", "99.5", "1", "1")) == []  # the same quote again


# -- time in force ---------------------------------------------------------------------------------------


def test_ioc_takes_what_it_can_on_arrival_and_cancels_the_rest():
    book = SymbolBook("X")
    reports = book.submit(_order(order_type="limit", limit_price=D(101), tif="ioc"), _touch(1, "100", "101", "1", "2"))
    assert _kinds(reports) == ["Accepted", "Fill", "Canceled"]
    assert _fills(reports) == [(D(2), D(101), True)]
    assert isinstance(reports[2], Canceled)
    assert reports[2].reason == "ioc: 3 not filled at once"
    assert len(book) == 0


def test_ioc_that_is_not_marketable_is_canceled_saying_where_the_market_was():
    book = SymbolBook("X")
    reports = book.submit(
        _order(side="sell", order_type="limit", limit_price=D(101), tif="ioc"), _touch(1, "100", "102")
    )
    assert _kinds(reports) == ["Accepted", "Canceled"]
    assert isinstance(reports[1], Canceled)
    assert reports[1].reason == "ioc: not marketable, bid 100 against limit 101"


def test_fok_fills_all_or_nothing():
    book = SymbolBook("X")
    short = book.submit(
        _order(id="a", order_type="limit", limit_price=D(101), tif="fok"), _touch(1, "100", "101", "1", "4")
    )
    assert _kinds(short) == ["Accepted", "Canceled"]
    assert isinstance(short[1], Canceled)
    assert short[1].reason == "fok: 4 available of 5"
    whole = book.submit(
        _order(id="b", order_type="limit", limit_price=D(101), tif="fok"), _touch(1, "100", "101", "1", "5")
    )
    assert _fills(whole) == [(D(5), D(101), True)]


def test_gtd_expires_at_the_first_quote_at_or_after_its_expire_time_before_it_may_fill():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100), tif="gtd", expire_ts=3000), _touch(1, "100", "101"))
    assert book.on_quote(_touch(2, "100", "100.5")) == []
    reports = book.on_quote(_touch(3, "98", "99"))  # would fill, but it is 3000 now
    assert _kinds(reports) == ["Expired"]
    assert isinstance(reports[0], Expired)
    assert (reports[0].ts_event, reports[0].at) == (3000, (3, 0))
    assert len(book) == 0


def test_gtd_fills_normally_before_its_expire_time():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100), tif="gtd", expire_ts=3001), _touch(1, "100", "101"))
    assert _fills(book.on_quote(_touch(3, "98", "99"))) == [(D(5), D(100), False)]


# -- stops -----------------------------------------------------------------------------------------------


def test_buy_stop_market_triggers_when_the_ask_touches_the_stop_and_fills_there():
    book = SymbolBook("X", Costs(slippage_bps=D(10)))
    book.submit(_order(order_type="stop_market", stop_price=D(102)), _touch(1, "100", "101"))
    assert book.on_quote(_touch(2, "101", "101.99")) == []
    reports = book.on_quote(_touch(3, "101.5", "102"))
    assert _kinds(reports) == ["Triggered", "Fill"]
    assert _fills(reports) == [(D(5), D("102.102"), True)]


def test_sell_stop_triggers_when_the_bid_touches_the_stop():
    book = SymbolBook("X")
    book.submit(_order(side="sell", order_type="stop_market", stop_price=D(99)), _touch(1, "100", "101"))
    assert book.on_quote(_touch(2, "99.01", "100")) == []
    assert _fills(book.on_quote(_touch(3, "98", "98.5"))) == [(D(5), D(98), True)]


def test_a_stop_already_through_its_trigger_on_arrival_triggers_at_once():
    book = SymbolBook("X")
    reports = book.submit(_order(order_type="stop_market", stop_price=D(100)), _touch(1, "100", "101"))
    assert _kinds(reports) == ["Accepted", "Triggered", "Fill"]


def test_stop_limit_triggers_then_rests_as_a_limit_when_the_market_ran_past_its_limit():
    book = SymbolBook("X")
    book.submit(_order(order_type="stop_limit", stop_price=D(102), limit_price=D("102.5")), _touch(1, "100", "101"))
    triggered = book.on_quote(_touch(2, "102.8", "103"))  # the ask jumped past the limit
    assert _kinds(triggered) == ["Triggered"]
    assert _fills(book.on_quote(_touch(3, "102", "102.4"))) == [(D(5), D("102.5"), False)]


def test_stop_limit_marketable_at_its_trigger_takes_at_the_touch():
    book = SymbolBook("X")
    book.submit(_order(order_type="stop_limit", stop_price=D(102), limit_price=D(103)), _touch(1, "100", "101"))
    reports = book.on_quote(_touch(2, "101.5", "102.2", "1", "2"))
    assert _kinds(reports) == ["Triggered", "Fill"]
    assert _fills(reports) == [(D(2), D("102.2"), True)]


def test_ioc_stop_applies_its_time_in_force_at_the_trigger():
    book = SymbolBook("X")
    book.submit(
        _order(order_type="stop_limit", stop_price=D(102), limit_price=D("102.5"), tif="ioc"), _touch(1, "100", "101")
    )
    assert book.on_quote(_touch(2, "100", "101")) == []
    assert _kinds(book.on_quote(_touch(3, "102.8", "103"))) == ["Triggered", "Canceled"]


# -- flags -----------------------------------------------------------------------------------------------


def test_post_only_limit_that_would_take_is_rejected_and_not_held():
    book = SymbolBook("X")
    [rejected] = book.submit(_order(order_type="limit", limit_price=D(101), post_only=True), _touch(1, "100", "101"))
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "post-only order would take liquidity: ask 101 <= limit 101"
    assert len(book) == 0


def test_post_only_limit_that_rests_is_accepted_and_fills_as_a_maker():
    book = SymbolBook("X")
    assert _kinds(
        book.submit(_order(order_type="limit", limit_price=D(100), post_only=True), _touch(1, "100", "101"))
    ) == ["Accepted"]
    assert _fills(book.on_quote(_touch(2, "99", "100"))) == [(D(5), D(100), False)]


def test_reduce_only_fills_only_what_reduces_the_position_and_cancels_the_rest():
    book = SymbolBook("X")
    reports = book.submit(_order(side="sell", qty=D(5), reduce_only=True), _touch(1, "100", "101"), Fraction(3))
    assert _kinds(reports) == ["Accepted", "Fill", "Canceled"]
    assert _fills(reports) == [(D(3), D(100), True)]
    assert isinstance(reports[2], Canceled)
    assert reports[2].reason == "reduce-only: nothing left to reduce"


def test_reduce_only_resting_limit_is_canceled_when_the_position_is_gone_by_the_time_it_would_fill():
    book = SymbolBook("X")
    book.submit(
        _order(side="sell", order_type="limit", limit_price=D(102), reduce_only=True),
        _touch(1, "100", "101"),
        Fraction(5),
    )
    reports = book.on_quote(_touch(2, "102", "103"), Fraction(0))
    assert _kinds(reports) == ["Canceled"]


def test_reduce_only_with_a_fractional_position_fills_it_exactly():
    book = SymbolBook("X")
    net = Fraction(D("0.0061909999999999995"))
    reports = book.submit(_order(side="sell", qty=D(1), reduce_only=True), _touch(1, "100", "101"), net)
    assert _fills(reports) == [(D("0.0061909999999999995"), D(100), True)]


# -- cancel and replace ----------------------------------------------------------------------------------


def test_cancel_removes_the_order_with_the_reason():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100)), _touch(1, "100", "101"))
    [canceled] = book.cancel("o1", "canceled by request", 5)
    assert isinstance(canceled, Canceled)
    assert (canceled.reason, canceled.ts_event) == ("canceled by request", 5)
    assert book.on_quote(_touch(2, "98", "99")) == []
    with pytest.raises(KeyError):
        book.cancel("o1", "again", 6)


def test_replace_moving_a_limit_through_the_market_takes_at_the_touch_of_the_next_quote():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(99)), _touch(1, "100", "101"))
    book.on_quote(_touch(2, "100", "100.5", "1", "3"))
    assert _kinds(book.replace("o1", 2500, limit_price=D(101))) == ["Replaced"]
    assert book.orders["o1"].replaces == 1
    # It arrives again at the next quote: it takes there, at the touch, better than its limit.
    assert _fills(book.on_quote(_touch(3, "100", "100.7", "1", "3"))) == [(D(3), D("100.7"), True)]
    # Then it rests again: at its limit.
    assert _fills(book.on_quote(_touch(4, "100", "100.6", "1", "1"))) == [(D(1), D(101), False)]


def test_replace_of_the_quantity_keeps_what_is_filled_and_never_sees_a_quote_twice():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(100)), _touch(1, "99", "100", "1", "2"))
    assert _kinds(book.replace("o1", 1500, qty=D(3))) == ["Replaced"]
    assert book.orders["o1"].leaves == D(1)
    assert book.on_quote(_touch(1, "99", "100", "1", "2")) == []
    with pytest.raises(ValueError, match="qty 2 is not above the 2 filled"):
        book.replace("o1", 1600, qty=D(2))


def test_replace_of_a_post_only_limit_through_the_market_is_refused_and_changes_nothing():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(99), post_only=True), _touch(1, "100", "101"))
    [refused] = book.replace("o1", 1500, limit_price=D(101), qty=D(7))
    assert isinstance(refused, Rejected)
    order = book.orders["o1"]
    assert (order.limit_price, order.qty, order.replaces) == (D(99), D(5), 0)


def test_replace_of_a_stop_through_its_trigger_triggers_it_at_the_next_quote():
    book = SymbolBook("X")
    book.submit(_order(order_type="stop_market", stop_price=D(105)), _touch(1, "100", "101"))
    assert _kinds(book.replace("o1", 1500, stop_price=D(101))) == ["Replaced"]
    assert _kinds(book.on_quote(_touch(2, "100", "101"))) == ["Triggered", "Fill"]


def test_a_replaced_post_only_limit_goes_on_resting_and_fills_as_a_maker():
    book = SymbolBook("X")
    book.submit(_order(order_type="limit", limit_price=D(98), post_only=True), _touch(1, "100", "101"))
    book.replace("o1", 1500, limit_price=D(100))
    assert _fills(book.on_quote(_touch(2, "99", "99.5"))) == [(D(5), D(100), False)]


# -- what the venue accepts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"order_type": "limit"}, "a limit order needs a limit_price"),
        ({"limit_price": D(1)}, "a market order carries no limit_price, got 1"),
        ({"order_type": "stop_limit", "limit_price": D(1)}, "a stop_limit order needs a stop_price"),
        (
            {"order_type": "limit", "limit_price": D(1), "stop_price": D(1)},
            "a limit order carries no stop_price, got 1",
        ),
        ({"tif": "gtd", "expire_ts": 10}, "a market order fills at once: time in force gtd does not apply"),
        (
            {"order_type": "limit", "limit_price": D(1), "tif": "gtd", "expire_ts": 10, "ts_event": 10},
            "expire_ts 10 is not after the order's time 10",
        ),
        ({"expire_ts": 10}, "expire_ts is for time in force gtd, got 10 with gtc"),
        ({"post_only": True}, "post_only is for limit orders, got a market order"),
        (
            {"order_type": "limit", "limit_price": D(1), "post_only": True, "tif": "ioc"},
            "a post_only order rests: time in force ioc does not go with it",
        ),
    ],
)
def test_an_order_the_venue_cannot_take_as_written_says_why(fields, reason):
    order = _order(**fields)
    assert invalid(order) == reason
    with pytest.raises(ValueError, match="order o1: "):
        SymbolBook("X").submit(order, _touch(1, "1", "2"))


def test_exact_quantities_never_round():
    book = SymbolBook("X")
    qty = D("123456789012345678.1234567890123456789012345678")
    book.submit(_order(qty=qty, order_type="limit", limit_price=D(100)), _touch(1, "100", "101"))
    [fill] = book.on_quote(_touch(2, "99", "100", None, "0.0000000000000000000000000001"))
    assert isinstance(fill, Fill)
    # Decimal's default context (28 digits) would round this remainder.
    assert str(qty - D("1E-28")) == "123456789012345678.1234567890"
    assert str(fill.leaves_qty) == "123456789012345678.1234567890123456789012345677"


# -- against the independent computation -----------------------------------------------------------------


def _outcome(reports: list[Report], positions: dict[tuple[int, int], int]) -> RefOutcome:
    """The book's reports for one order, in the reference's terms (quotes by their index)."""
    out = RefOutcome()
    from tests.support.matching_reference import RefFill

    for r in reports:
        if isinstance(r, Rejected):
            out.accepted, out.end, out.end_at = False, "rejected", 0
        elif isinstance(r, Triggered):
            out.triggered_at = positions[r.at]
        elif isinstance(r, Fill):
            out.fills.append(RefFill(positions[r.at], Fraction(r.qty), Fraction(r.price), Fraction(r.fee)))
            if r.leaves_qty == 0:
                out.end, out.end_at = "filled", positions[r.at]
        elif isinstance(r, Canceled | Expired):
            out.end, out.end_at = ("canceled" if isinstance(r, Canceled) else "expired"), positions[r.at]
        else:
            assert isinstance(r, Accepted | Replaced)
    return out


def _run(order: RefOrder, quotes: list[RefQuote], costs: Costs, order_id: str = "o1") -> RefOutcome:
    book = SymbolBook("X", costs)
    touches = [Touch(q.ts, q.bid, q.ask, q.bid_size, q.ask_size, (i + 1, 0)) for i, q in enumerate(quotes)]
    working = _order(
        id=order_id,
        side=order.side,
        qty=order.qty,
        order_type=order.kind,
        limit_price=order.limit,
        stop_price=order.stop,
        tif=order.tif,
        expire_ts=order.expire_ts,
        post_only=order.post_only,
    )
    reports = book.submit(working, touches[0])
    for touch in touches[1:]:
        reports.extend(book.on_quote(touch))
    return _outcome(reports, {t.at: i for i, t in enumerate(touches)})


_prices = st.integers(min_value=9_000, max_value=11_000).map(lambda n: Decimal(n).scaleb(-2))
_sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=40).map(lambda n: Decimal(n).scaleb(-1)))


@st.composite
def _quotes(draw: st.DrawFn) -> list[RefQuote]:
    n = draw(st.integers(min_value=1, max_value=30))
    out = []
    for i in range(n):
        bid = draw(_prices)
        spread = draw(st.integers(min_value=0, max_value=50))
        with_sizes = draw(st.booleans())
        out.append(
            RefQuote(
                ts=(i + 1) * 1000,
                bid=bid,
                ask=bid + Decimal(spread).scaleb(-2),
                bid_size=draw(_sizes) if with_sizes else None,
                ask_size=draw(_sizes) if with_sizes else None,
            )
        )
    return out


@st.composite
def _orders(draw: st.DrawFn) -> RefOrder:
    kind = draw(st.sampled_from(["market", "limit", "stop_market", "stop_limit"]))
    priced = kind in ("limit", "stop_limit")
    tif = draw(st.sampled_from(["gtc", "ioc", "fok", "gtd"] if kind != "market" else ["gtc", "ioc", "fok"]))
    post_only = kind == "limit" and tif in ("gtc", "gtd") and draw(st.booleans())
    return RefOrder(
        side=draw(st.sampled_from(["buy", "sell"])),
        qty=Decimal(draw(st.integers(min_value=1, max_value=60))).scaleb(-1),
        kind=kind,
        limit=draw(_prices) if priced else None,
        stop=draw(_prices) if kind.startswith("stop") else None,
        tif=tif,
        expire_ts=draw(st.integers(min_value=1001, max_value=35_000)) if tif == "gtd" else 0,
        post_only=post_only,
    )


_costs = st.builds(
    Costs,
    slippage_bps=st.sampled_from([D(0), D(3), D("12.5")]),
    fee_bps=st.sampled_from([D(0), D(1), D("2.5")]),
)


@settings(max_examples=400, deadline=None)
@given(order=_orders(), quotes=_quotes(), costs=_costs)
def test_every_order_type_matches_as_the_independent_computation_says(order, quotes, costs):
    expected = reference(order, quotes, slippage_bps=costs.slippage_bps, fee_bps=costs.fee_bps)
    assert _run(order, quotes, costs) == expected


@settings(max_examples=100, deadline=None)
@given(orders=st.lists(_orders(), min_size=2, max_size=6), quotes=_quotes())
def test_orders_in_one_book_each_fill_as_if_alone(orders, quotes):
    book = SymbolBook("X")
    touches = [Touch(q.ts, q.bid, q.ask, q.bid_size, q.ask_size, (i + 1, 0)) for i, q in enumerate(quotes)]
    reports: dict[str, list[Report]] = {}
    for n, order in enumerate(orders):
        working = _order(
            id=f"o{n}", side=order.side, qty=order.qty, order_type=order.kind, limit_price=order.limit,
            stop_price=order.stop, tif=order.tif, expire_ts=order.expire_ts, post_only=order.post_only,
        )  # fmt: skip
        reports[working.id] = book.submit(working, touches[0])
    for touch in touches[1:]:
        for report in book.on_quote(touch):
            reports[report.order.id].append(report)
    positions = {t.at: i for i, t in enumerate(touches)}
    for n, order in enumerate(orders):
        assert _outcome(reports[f"o{n}"], positions) == reference(order, quotes)


def _btcusdt() -> list[RefQuote]:
    with BTCUSDT.open(newline="") as f:
        return [
            RefQuote(
                ts=int(datetime.fromisoformat(row["ts"].replace("Z", "+00:00")).timestamp() * 1000),
                bid=D(row["bid"]),
                ask=D(row["ask"]),
                bid_size=D(row["bid_size"]),
                ask_size=D(row["ask_size"]),
            )
            for row in csv.DictReader(f)
        ]


@pytest.mark.parametrize(
    "order",
    [
        # The day rises from 39,433 to 39,550 in 33 s, then falls back to 39,453.
        RefOrder("buy", D("0.5"), "limit", limit=D("39460")),
        RefOrder("sell", D("0.25"), "limit", limit=D("39500")),
        RefOrder("buy", D("1"), "stop_limit", limit=D("39495"), stop=D("39490")),
        RefOrder("buy", D("2"), "stop_market", stop=D("39520")),
        RefOrder("sell", D("2"), "stop_market", stop=D("39440")),
        RefOrder("buy", D("0.1"), "limit", limit=D("39430"), tif="gtd", expire_ts=1_610_064_030_000),
    ],
    ids=["buy-limit", "sell-limit", "buy-stop-limit", "buy-stop", "sell-stop", "gtd"],
)
def test_limit_and_stop_orders_over_a_recorded_day_with_sizes_fill_as_the_independent_computation_says(order):
    quotes = _btcusdt()
    costs = Costs(fee_bps=D("7.5"), slippage_bps=D(1))
    expected = reference(order, quotes, slippage_bps=costs.slippage_bps, fee_bps=costs.fee_bps)
    assert _run(order, quotes, costs) == expected
    assert expected.fills or expected.end != "open", "the order should do something over the day"
