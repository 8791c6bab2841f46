"""The latest-quote cache behind market-data's request-reply subject."""

from __future__ import annotations

from decimal import Decimal

from cachetools import LRUCache

from rrr.market_data.handlers import LatestQuotes
from rrr.shared.messages import Quote


def _quote(symbol: str = "EURUSD", ts: int = 1, bid: str = "1.1000", qid: str | None = None) -> Quote:
    return Quote(
        id=qid or f"{symbol}:{ts}:{bid}",
        ts_event=ts,
        ts_init=ts,
        symbol=symbol,
        bid=Decimal(bid),
        ask=Decimal(bid) + Decimal("0.0002"),
    )


def test_first_quote_of_a_symbol_is_kept():
    latest = LatestQuotes()
    quote = _quote()
    latest.update(quote)
    assert latest.cache["EURUSD"] is quote


def test_later_quote_replaces_the_held_one():
    latest = LatestQuotes()
    latest.update(_quote(ts=1, bid="1.1000"))
    latest.update(_quote(ts=2, bid="1.2000"))
    assert latest.cache["EURUSD"].bid == Decimal("1.2000")


def test_older_quote_arriving_late_is_ignored():
    latest = LatestQuotes()
    latest.update(_quote(ts=5, bid="1.5000"))
    latest.update(_quote(ts=4, bid="1.4000"))
    assert latest.cache["EURUSD"].ts_event == 5
    assert latest.cache["EURUSD"].bid == Decimal("1.5000")


def test_quote_with_the_same_time_replaces_the_held_one():
    latest = LatestQuotes()
    latest.update(_quote(ts=5, bid="1.5000", qid="a"))
    latest.update(_quote(ts=5, bid="1.5001", qid="b"))
    assert latest.cache["EURUSD"].id == "b"


def test_symbols_are_kept_apart():
    latest = LatestQuotes()
    latest.update(_quote("EURUSD", ts=9))
    latest.update(_quote("USDJPY", ts=1, bid="86.655"))
    latest.update(_quote("EURUSD", ts=3))
    assert (latest.cache["EURUSD"].ts_event, latest.cache["USDJPY"].ts_event) == (9, 1)


def test_out_of_order_stream_leaves_the_latest_of_each_symbol():
    latest = LatestQuotes()
    for ts in [3, 1, 7, 2, 7, 6, 5]:
        latest.update(_quote(ts=ts))
    assert latest.cache["EURUSD"].ts_event == 7


def test_cache_is_bounded_and_forgets_the_least_recently_used_symbol():
    latest = LatestQuotes(cache=LRUCache(maxsize=2))
    latest.update(_quote("AAA", ts=1))
    latest.update(_quote("BBB", ts=1))
    latest.update(_quote("AAA", ts=2))  # AAA used again, so BBB is now the oldest
    latest.update(_quote("CCC", ts=1))
    assert set(latest.cache) == {"AAA", "CCC"}
