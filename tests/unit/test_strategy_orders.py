"""The strategy API's orders (rrr.strategy.api.Context): order types, time in force and flags, cancels and replaces,
each bad input refused at the edge with what was expected and what was given, and ids the same for the same quote."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from rrr.shared.messages import (
    ORDER_ID_MAX,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderReplaced,
    OrderTriggered,
    QuoteRow,
    ReplaceOrder,
    SubmitOrder,
)
from rrr.strategy.api import MAX_COMMANDS_PER_QUOTE, Context, Cursor, StrategyApiError

TS = 1_700_000_000_000_000_000


def _row(i: int = 1, symbol: str = "EURUSD", quote_id: str = "") -> QuoteRow:
    return QuoteRow(quote_id or f"f1:{i}", symbol, TS + i, 112_000 + i, 112_010 + i, 5)


def _ctx(*, closed_loop: bool = True, row: QuoteRow | None = None) -> Context:
    cursor = Cursor()
    cursor.quote, cursor.seq, cursor.index = row or _row(), 7, 2
    latest = {cursor.quote.symbol: cursor.quote}
    return Context(
        "maker", clock=lambda: 9, latest=latest, assume_fills=not closed_loop, cursor=cursor,
        latest_at={cursor.quote.symbol: (7, 2)},
    )  # fmt: skip


def _next_quote(ctx: Context, i: int) -> QuoteRow:
    """Move ``ctx`` on to the quote ``i`` (what the engine takes of its output is taken)."""
    row = _row(i)
    ctx._cursor.quote, ctx._cursor.seq = row, 7 + i
    ctx.out.clear()
    return row


def _accept(ctx: Context, order: SubmitOrder) -> None:
    assert ctx.apply_event(
        OrderAccepted(
            id=f"{order.id}:accepted", ts_event=TS, ts_init=TS, client_order_id=order.id, strategy="maker",
            symbol=order.symbol, side=order.side, qty=order.qty, order_type=order.order_type,
            limit_price=order.limit_price, stop_price=order.stop_price,
        )
    )  # fmt: skip


def _fill(ctx: Context, order: SubmitOrder, n: int, qty: str, leaves: str | None, cum: str | None) -> bool:
    return ctx.apply_event(
        OrderFilled(
            id=f"{order.id}:{n}", ts_event=TS, ts_init=TS, client_order_id=order.id, symbol=order.symbol,
            side=order.side, qty=Decimal(qty), price=Decimal("1.12"), fee=Decimal(0), venue="paper",
            leaves_qty=None if leaves is None else Decimal(leaves), cum_qty=None if cum is None else Decimal(cum),
        )
    )  # fmt: skip


# -- order types -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prices", "order_type"),
    [
        ({}, "market"),
        ({"limit": Decimal("1.12")}, "limit"),
        ({"stop": "1.13"}, "stop_market"),
        ({"limit": 2, "stop": Fraction(21, 10)}, "stop_limit"),
    ],
)
def test_the_order_type_follows_from_the_prices_given_in_any_exact_number_type(
    prices: dict[str, Any], order_type: str
) -> None:
    ctx = _ctx()
    order = ctx.submit("buy", "1.5", **prices)
    assert order.order_type == order_type
    assert order.limit_price == (None if "limit" not in prices else Decimal(str(prices["limit"])))
    assert order.stop_price == (None if "stop" not in prices else Decimal(str(float(prices["stop"]))))
    assert (order.quote_seq, order.quote_index, order.qty) == (7, 2, Decimal("1.5"))
    # A closed-loop strategy's orders are matched in lockstep with it; it holds them as open until their outcome.
    assert order.lockstep is True
    assert ctx.open_orders[order.id].status == "sent"
    assert ctx.open_symbols == {"EURUSD": 1}


def test_time_in_force_and_flags_go_on_the_order_as_given() -> None:
    ctx = _ctx()
    order = ctx.submit("sell", 2, limit="1.2", tif="gtd", expire_ts=TS + 60, post_only=True, reduce_only=True)
    assert (order.tif, order.expire_ts, order.post_only, order.reduce_only) == ("gtd", TS + 60, True, True)
    _next_quote(ctx, 2)
    assert ctx.submit("buy", 1, limit="1.1", tif="ioc").tif == "ioc"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"side": "long"}, "order side must be 'buy' or 'sell', got 'long'"),
        ({"qty": 0}, "invalid qty 0: qty must be > 0"),
        ({"qty": Decimal(-1)}, "invalid order: qty must be > 0, got -1"),
        ({"limit": Decimal("1e-40")}, "invalid order: limit_price 1E-40 is out of range"),
        ({"qty": Decimal("NaN")}, "qty must be a finite number"),
        ({"qty": 1.5}, "qty must be a Decimal, int, str or Fraction, got 1.5"),
        ({"qty": "10e30"}, "is out of range"),
        ({"qty": Fraction(1, 3)}, "invalid qty Fraction(1, 3)"),
        ({"limit": 0}, "invalid limit 0: limit must be > 0"),
        ({"limit": "cheap"}, "invalid limit 'cheap'"),
        ({"limit": 1.1}, "limit must be a Decimal, int, str or Fraction, got 1.1"),
        ({"stop": -2}, "invalid stop -2: stop must be > 0"),
        ({"stop": True}, "stop must be a Decimal, int, str or Fraction, got True"),
        ({"tif": "day"}, "tif must be one of gtc, ioc, fok, gtd, got 'day'"),
        ({"limit": 1, "tif": "gtd", "expire_ts": 1.5}, "expire_ts must be integer nanoseconds >= 0, got 1.5"),
        ({"limit": 1, "tif": "gtd", "expire_ts": -1}, "expire_ts must be integer nanoseconds >= 0, got -1"),
        ({"limit": 1, "tif": "gtd", "expire_ts": True}, "expire_ts must be integer nanoseconds >= 0, got True"),
        ({"limit": 1, "tif": "gtd", "expire_ts": TS}, f"expire_ts {TS} must be after the quote's time {TS + 1}"),
        ({"limit": 1, "tif": "gtd"}, "expire_ts 0 must be after the quote's time"),
        ({"tif": "gtd", "expire_ts": TS + 9}, "a market order fills at once: tif 'gtd' does not apply"),
        ({"limit": 1, "expire_ts": TS + 9}, f"expire_ts is for tif 'gtd', got {TS + 9} with 'gtc'"),
        ({"limit": 1, "post_only": "yes"}, "post_only must be True or False, got 'yes'"),
        ({"reduce_only": 1}, "reduce_only must be True or False, got 1"),
        ({"post_only": True}, "post_only is for limit orders, got a market order"),
        ({"stop": 1, "limit": 1, "post_only": True}, "post_only is for limit orders, got a stop_limit order"),
        ({"limit": 1, "post_only": True, "tif": "ioc"}, "a post_only order rests: tif 'ioc' does not go with it"),
    ],
)
def test_each_bad_order_argument_is_refused_saying_what_was_expected_and_what_was_given(
    call: dict[str, Any], message: str
) -> None:
    ctx = _ctx()
    args = {"side": "buy", "qty": 1} | call
    side, qty = args.pop("side"), args.pop("qty")
    with pytest.raises(StrategyApiError, match="strategy maker: ") as info:
        ctx.submit(side, qty, **args)
    assert message in str(info.value)
    assert not ctx.out
    assert not ctx.open_orders


def test_a_second_order_on_one_quote_and_an_order_outside_a_quote_are_refused() -> None:
    ctx = _ctx()
    ctx.submit("buy", 1, limit=1)
    with pytest.raises(StrategyApiError, match="a second order on quote f1:1: at most one per quote"):
        ctx.submit("sell", 1)
    ctx._cursor.quote = None
    with pytest.raises(StrategyApiError, match="cannot submit an order outside on_quote or on_timer"):
        ctx.submit("buy", 1)
    with pytest.raises(StrategyApiError, match="cannot cancel an order outside on_quote or on_timer"):
        ctx.cancel(next(iter(ctx.open_orders)))


# -- a strategy that sends and forgets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "what"),
    [
        ({"limit": 1}, "a limit order"),
        ({"stop": 1}, "a stop_market order"),
        ({"tif": "ioc"}, "a market order, tif 'ioc'"),
        ({"reduce_only": True}, "reduce_only"),
    ],
)
def test_a_strategy_that_does_not_read_its_orders_events_may_send_only_plain_market_orders(
    call: dict[str, Any], what: str
) -> None:
    ctx = _ctx(closed_loop=False)
    with pytest.raises(StrategyApiError, match="needs the strategy to read its orders' events") as info:
        ctx.submit("buy", 1, **call)
    assert what in str(info.value)
    assert "Override on_order_event" in str(info.value)
    order = ctx.submit("buy", 1)
    assert (order.order_type, order.lockstep) == ("market", False)
    assert not ctx.open_orders  # it assumes the fill instead
    assert ctx.position("EURUSD").qty == 1


def test_a_strategy_that_does_not_read_its_orders_events_cannot_cancel_or_replace() -> None:
    ctx = _ctx(closed_loop=False)
    order = ctx.submit("buy", 1)
    for call in (lambda: ctx.cancel(order.id), lambda: ctx.replace(order.id, qty=2)):
        with pytest.raises(StrategyApiError, match=r"a (cancel|replace) needs the strategy to read its orders' events"):
            call()


# -- cancels and replaces --------------------------------------------------------------------------------------


def test_cancels_and_replaces_of_own_open_orders_carry_ids_derived_from_the_quote_and_its_place() -> None:
    ctx = _ctx()
    first = ctx.submit("buy", 2, limit="1.1")
    _accept(ctx, first)
    row = _next_quote(ctx, 2)
    second = ctx.submit("buy", 1, stop="1.3")
    replace = ctx.replace(first.id, limit="1.11")
    cancel = ctx.cancel(second.id)  # an order sent at this very quote is open too
    assert isinstance(replace, ReplaceOrder)
    assert isinstance(cancel, CancelOrder)
    assert (replace.id, cancel.id) == (f"maker-{row.id}:replace1", f"maker-{row.id}:cancel2")
    assert (replace.client_order_id, replace.limit_price, replace.qty, replace.stop_price) == (
        first.id, Decimal("1.11"), None, None,
    )  # fmt: skip
    # Judged at the newest quote of its symbol the strategy saw.
    assert (replace.quote_seq, replace.quote_index) == (7, 2)
    assert ctx.out == [second, replace, cancel]

    # The same quote handled again (a restart) gives the same ids.
    again = _ctx()
    again.track(ctx.open_orders[first.id])
    _next_quote(again, 2)
    again.submit("buy", 1, stop="1.3")
    assert again.replace(first.id, limit="1.11").id == replace.id


def test_a_command_id_stays_within_an_order_ids_length_for_the_longest_quote_ids() -> None:
    ctx = _ctx(row=_row(quote_id="q" * 159))
    order = ctx.submit("buy", 1, limit=1)
    cancel = ctx.cancel(order.id)
    assert len(order.id) <= ORDER_ID_MAX
    assert len(cancel.id) <= ORDER_ID_MAX
    assert cancel.id.startswith("maker-")
    assert cancel.id.endswith(":cancel1")
    # Another run at the same quote: the same digest, so the same id.
    again = _ctx(row=_row(quote_id="q" * 159))
    again.track(ctx.open_orders[order.id])
    assert again.cancel(order.id).id == cancel.id


def test_a_cancel_or_replace_of_an_unknown_or_finished_order_is_refused() -> None:
    ctx = _ctx()
    order = ctx.submit("buy", 2, limit="1.1")
    _accept(ctx, order)
    _next_quote(ctx, 2)
    with pytest.raises(StrategyApiError, match=r"cannot cancel 'maker-f1:404': not one of this strategy's open"):
        ctx.cancel("maker-f1:404")
    with pytest.raises(StrategyApiError, match="the order id must be a str, got 3"):
        ctx.replace(3, qty=1)  # type: ignore[arg-type]
    # Filled: finished, no longer open.
    assert _fill(ctx, order, 1, "2", None, None)
    assert order.id not in ctx.open_orders
    with pytest.raises(StrategyApiError, match="a filled, canceled, expired or rejected order is finished"):
        ctx.cancel(order.id)
    with pytest.raises(StrategyApiError, match="not one of this strategy's open orders"):
        ctx.replace(order.id, qty=3)


def test_one_command_per_order_per_quote_and_a_bounded_number_per_quote() -> None:
    ctx = _ctx()
    orders = []
    for i in range(MAX_COMMANDS_PER_QUOTE + 1):
        _next_quote(ctx, 10 + i)
        orders.append(ctx.submit("buy", 1, limit=1))
    row = _next_quote(ctx, 100)
    ctx.cancel(orders[0].id)
    with pytest.raises(StrategyApiError, match=f"cannot replace {orders[0].id}: it was canceled or replaced at"):
        ctx.replace(orders[0].id, qty=2)
    for order in orders[1:MAX_COMMANDS_PER_QUOTE]:
        ctx.cancel(order.id)
    with pytest.raises(StrategyApiError, match=f"a 17th cancel or replace on quote {row.id}: at most 16 per quote"):
        ctx.cancel(orders[-1].id)
    # The next quote starts the count again.
    _next_quote(ctx, 101)
    assert ctx.cancel(orders[-1].id).id.endswith(":cancel1")


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("limit", {}, "give qty, limit or stop, got none"),
        ("limit", {"qty": 1}, "qty 1 must be above the 1 filled"),
        ("limit", {"qty": "0"}, "invalid qty '0': qty must be > 0"),
        ("limit", {"stop": 2}, "cannot change its stop: a limit order has no stop price"),
        ("stop_market", {"limit": 2}, "a stop_market order has no limit price to change"),
        ("stop_market", {"stop": 1.5}, "stop must be a Decimal, int, str or Fraction, got 1.5"),
        ("triggered", {"stop": 2}, "cannot change its stop: it triggered already"),
    ],
)
def test_a_replace_the_order_cannot_take_is_refused(kind: str, change: dict[str, Any], message: str) -> None:
    ctx = _ctx()
    order = ctx.submit("buy", 3, limit="1.1") if kind == "limit" else ctx.submit("buy", 3, stop="1.3")
    _accept(ctx, order)
    if kind == "limit":
        _fill(ctx, order, 1, "1", "2", None)
    if kind == "triggered":
        assert ctx.apply_event(
            OrderTriggered(
                id=f"{order.id}:triggered", ts_event=TS, ts_init=TS, client_order_id=order.id, strategy="maker",
                symbol="EURUSD", side="buy", qty=Decimal(3), order_type="stop_market", stop_price=Decimal("1.3"),
            )
        )  # fmt: skip
    _next_quote(ctx, 2)
    with pytest.raises(StrategyApiError, match="strategy maker: ") as info:
        ctx.replace(order.id, **change)
    assert message in str(info.value)


# -- open orders from their events -------------------------------------------------------------------------------


def test_open_orders_follow_their_events_and_events_already_applied_are_no_news() -> None:
    ctx = _ctx()
    order = ctx.submit("buy", 3, limit="1.1")
    _accept(ctx, order)
    assert not ctx.apply_event(  # accepted twice: a copy
        OrderAccepted(
            id=f"{order.id}:accepted", ts_event=TS, ts_init=TS, client_order_id=order.id, strategy="maker",
            symbol="EURUSD", side="buy", qty=Decimal(3),
        )
    )  # fmt: skip
    assert _fill(ctx, order, 1, "1", "2", None)
    assert not _fill(ctx, order, 1, "1", "2", None)
    held = ctx.open_orders[order.id]
    assert (held.status, held.filled_qty, held.leaves_qty, held.fills) == ("partially_filled", 1, 2, 1)
    assert ctx.apply_event(
        OrderReplaced(
            id=f"{order.id}:replaced:1", ts_event=TS, ts_init=TS, client_order_id=order.id, strategy="maker",
            symbol="EURUSD", side="buy", qty=Decimal(5), limit_price=Decimal("1.2"), replaces=1, command_id="c",
        )
    )  # fmt: skip
    held = ctx.open_orders[order.id]
    assert (held.qty, held.limit_price, held.leaves_qty, held.replaces) == (5, Decimal("1.2"), 4, 1)
    assert ctx.position("EURUSD").qty == 1
    assert ctx.apply_event(
        OrderCanceled(
            id=f"{order.id}:canceled", ts_event=TS, ts_init=TS, client_order_id=order.id, strategy="maker",
            symbol="EURUSD", side="buy", qty=Decimal(5), filled_qty=Decimal(1), reason="canceled by request",
        )
    )  # fmt: skip
    assert not ctx.open_orders
    assert ctx.open_symbols == {}
    with pytest.raises(TypeError):
        ctx.open_orders["x"] = held  # type: ignore[index]
