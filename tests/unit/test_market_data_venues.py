"""The venues' normalisers on frames as their documentation shows them, and the symbol naming across venues."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from rrr.market_data.venues import VENUES, binance, coinbase, kraken
from rrr.market_data.venues.base import Gap, MalformedFrameError, Sequencer, rfc3339_ns
from rrr.market_data.venues.symbols import parse_symbols, shard_symbols, system_symbol
from rrr.shared.errors import ConfigError
from rrr.shared.messages import QUOTE_ID_MAX, Quote, Trade
from rrr.shared.subjects import shard_of

NOW = 1_700_000_000_123_456_789


def _frame(value: object) -> bytes:
    return json.dumps(value).encode()


def _binance_book(u: int, symbol: str = "BTCUSDT", bid: str = "25.35190000", ask: str = "25.36520000") -> bytes:
    data = {"u": u, "s": symbol, "b": bid, "B": "31.21000000", "a": ask, "A": "40.66000000"}
    return _frame({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def _binance_trade(t: int, symbol: str = "BTCUSDT", maker: bool = True) -> bytes:
    data = {"e": "trade", "E": 1672515782136, "s": symbol, "t": t, "p": "0.001", "q": "100", "T": 1672515782136}
    return _frame({"stream": f"{symbol.lower()}@trade", "data": {**data, "m": maker, "M": True}})


# -- symbols -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("venue", "venue_symbol", "expected"),
    [
        ("binance", "BTCUSDT", "BTCUSDT"),
        ("binance", "1000SATSUSDT", "1000SATSUSDT"),
        ("coinbase", "BTC-USD", "BTCUSD"),
        ("coinbase", "ETH-USDC", "ETHUSDC"),
        ("kraken", "BTC/USD", "BTCUSD"),
        ("kraken", "XBT/EUR", "BTCEUR"),
        ("kraken", "XDG/USD", "DOGEUSD"),
    ],
)
def test_a_venue_symbol_maps_to_its_base_and_quote_run_together(venue: str, venue_symbol: str, expected: str) -> None:
    assert system_symbol(venue, venue_symbol) == expected


@pytest.mark.parametrize(
    ("venue", "venue_symbol"),
    [
        ("binance", "btcusdt"),
        ("binance", "BTC-USDT"),
        ("coinbase", "BTCUSD"),
        ("coinbase", "BTC-USD-X"),
        ("kraken", "BTC-USD"),
        ("kraken", "BTC/USD/"),
        ("kraken", "A" * 12 + "/" + "B" * 12 + "X"),
        ("nasdaq", "AAPL"),
    ],
)
def test_a_symbol_not_of_its_venues_form_is_refused(venue: str, venue_symbol: str) -> None:
    with pytest.raises(ConfigError):
        system_symbol(venue, venue_symbol)


def test_symbols_are_sorted_by_venue_and_a_plain_one_belongs_to_the_only_venue() -> None:
    assert parse_symbols(["BTCUSDT", "ETHUSDT"], ["binance"]) == {
        "binance": {"BTCUSDT": "BTCUSDT", "ETHUSDT": "ETHUSDT"}
    }
    assert parse_symbols(
        ["binance:BTCUSDT", "coinbase:ETH-USD", "kraken:SOL/USD"], ["binance", "coinbase", "kraken"]
    ) == {
        "binance": {"BTCUSDT": "BTCUSDT"},
        "coinbase": {"ETH-USD": "ETHUSD"},
        "kraken": {"SOL/USD": "SOLUSD"},
    }


def test_one_instrument_asked_of_two_venues_is_refused() -> None:
    with pytest.raises(ConfigError, match="BTCUSD is coinbase:BTC-USD already"):
        parse_symbols(["coinbase:BTC-USD", "kraken:BTC/USD"], ["coinbase", "kraken"])
    with pytest.raises(ConfigError, match="already"):
        parse_symbols(["XBT/USD", "BTC/USD"], ["kraken"])


def test_a_symbol_without_its_venue_is_refused_when_several_venues_run() -> None:
    with pytest.raises(ConfigError, match="venue:SYMBOL"):
        parse_symbols(["BTCUSDT"], ["binance", "kraken"])
    with pytest.raises(ConfigError, match="one of the venues"):
        parse_symbols(["coinbase:BTC-USD"], ["binance"])


def test_each_shard_takes_only_the_symbols_it_owns() -> None:
    symbols = {f"S{i}USDT": f"S{i}USDT" for i in range(200)}
    parts = [shard_symbols(symbols, shard, 3) for shard in range(3)]
    assert sum(len(p) for p in parts) == 200
    for shard, part in enumerate(parts):
        assert all(shard_of(system, 3) == shard for system in part.values())


# -- binance -------------------------------------------------------------------------------------------


def test_binance_book_ticker_becomes_a_quote_stamped_at_receipt() -> None:
    normaliser = binance.Normaliser({"BNBUSDT": "BNBUSDT"})
    decoded = normaliser.decode(_binance_book(400900217, "BNBUSDT"), NOW)
    assert decoded.ticks == [
        Quote(
            id="binance:BNBUSDT:400900217",
            ts_event=NOW,
            ts_init=NOW,
            symbol="BNBUSDT",
            bid=Decimal("25.35190000"),
            ask=Decimal("25.36520000"),
            bid_size=Decimal("31.21000000"),
            ask_size=Decimal("40.66000000"),
        )
    ]


def test_binance_trade_takes_the_trade_time_and_the_aggressor_from_the_maker_flag() -> None:
    normaliser = binance.Normaliser({"BNBBTC": "BNBBTC"})
    sold = normaliser.decode(_binance_trade(12345, "BNBBTC", maker=True), NOW).ticks
    bought = normaliser.decode(_binance_trade(12346, "BNBBTC", maker=False), NOW).ticks
    assert sold == [
        Trade(
            id="binance:BNBBTC:t12345",
            ts_event=1672515782136 * 1_000_000,
            ts_init=NOW,
            symbol="BNBBTC",
            price=Decimal("0.001"),
            size=Decimal("100"),
            aggressor="sell",
        )
    ]
    assert isinstance(bought[0], Trade)
    assert bought[0].aggressor == "buy"


def test_binance_repeated_or_older_update_ids_are_duplicates() -> None:
    normaliser = binance.Normaliser({"BTCUSDT": "BTCUSDT"})
    assert len(normaliser.decode(_binance_book(10), NOW).ticks) == 1
    again = normaliser.decode(_binance_book(10), NOW)
    older = normaliser.decode(_binance_book(9), NOW)
    assert (again.ticks, again.duplicates, older.ticks, older.duplicates) == ([], 1, [], 1)
    assert len(normaliser.decode(_binance_book(11), NOW).ticks) == 1


def test_binance_trade_ids_that_jump_are_reported_as_a_gap() -> None:
    normaliser = binance.Normaliser({"BTCUSDT": "BTCUSDT"})
    normaliser.decode(_binance_trade(100), NOW)
    decoded = normaliser.decode(_binance_trade(105), NOW)
    assert len(decoded.ticks) == 1
    assert decoded.gaps == [Gap("BTCUSDT", "trades", 101, 104)]
    assert decoded.gaps[0].missed == 4


def test_binance_subscribe_batches_streams_and_counts_the_acks_it_expects() -> None:
    symbols = [f"S{i}USDT" for i in range(150)]
    messages = [json.loads(m) for m in binance.subscribe(symbols, 7)]
    assert [m["id"] for m in messages] == [7, 8]
    assert sum(len(m["params"]) for m in messages) == 300
    assert messages[0]["params"][:2] == ["s0usdt@bookTicker", "s0usdt@trade"]
    assert binance.expected_acks(symbols) == len(messages)
    normaliser = binance.Normaliser({})
    assert normaliser.decode(b'{"result":null,"id":7}', NOW).acks == 1
    assert "Invalid request" in normaliser.decode(b'{"code":2,"msg":"Invalid request","id":8}', NOW).error


# -- coinbase ------------------------------------------------------------------------------------------

_COINBASE_TICKER = {
    "type": "ticker",
    "sequence": 37475248783,
    "product_id": "ETH-USD",
    "price": "1285.22",
    "open_24h": "1310.79",
    "volume_24h": "245532.79269678",
    "low_24h": "1280.52",
    "high_24h": "1313.8",
    "volume_30d": "9788783.60117027",
    "best_bid": "1285.04",
    "best_bid_size": "0.46688654",
    "best_ask": "1285.27",
    "best_ask_size": "1.56637040",
    "side": "buy",
    "time": "2022-10-19T23:28:22.061769Z",
    "trade_id": 370843401,
    "last_size": "11.4396987",
}


def _coinbase_match(trade_id: int, kind: str = "match") -> bytes:
    return _frame(
        {
            "type": kind,
            "trade_id": trade_id,
            "maker_order_id": "ac928c66-ca53-498f-9c13-a110027a60e8",
            "taker_order_id": "132fb6ae-456b-4654-b4e0-d681ac05cea1",
            "side": "sell",
            "size": "5.23512",
            "price": "400.23",
            "product_id": "ETH-USD",
            "sequence": 50 + trade_id,
            "time": "2014-11-07T08:19:27.028459Z",
        }
    )


def test_coinbase_ticker_becomes_a_quote_at_the_venues_time_with_its_sequence_in_the_id() -> None:
    decoded = coinbase.Normaliser({"ETH-USD": "ETHUSD"}).decode(_frame(_COINBASE_TICKER), NOW)
    assert decoded.ticks == [
        Quote(
            id="coinbase:ETHUSD:37475248783",
            ts_event=rfc3339_ns("t", "2022-10-19T23:28:22.061769Z", b""),
            ts_init=NOW,
            symbol="ETHUSD",
            bid=Decimal("1285.04"),
            ask=Decimal("1285.27"),
            bid_size=Decimal("0.46688654"),
            ask_size=Decimal("1.56637040"),
        )
    ]
    assert decoded.ticks[0].ts_event == 1666222102061769000


def test_coinbase_match_is_a_trade_whose_aggressor_took_the_makers_other_side() -> None:
    decoded = coinbase.Normaliser({"ETH-USD": "ETHUSD"}).decode(_coinbase_match(10), NOW)
    assert decoded.ticks == [
        Trade(
            id="coinbase:ETHUSD:t10",
            ts_event=1415348367028459000,
            ts_init=NOW,
            symbol="ETHUSD",
            price=Decimal("400.23"),
            size=Decimal("5.23512"),
            aggressor="buy",
        )
    ]


def test_coinbase_trade_ids_that_jump_are_a_gap_and_repeats_are_duplicates() -> None:
    normaliser = coinbase.Normaliser({"ETH-USD": "ETHUSD"})
    assert len(normaliser.decode(_coinbase_match(10, "last_match"), NOW).ticks) == 1
    assert normaliser.decode(_coinbase_match(11), NOW).gaps == []
    jumped = normaliser.decode(_coinbase_match(20), NOW)
    assert jumped.gaps == [Gap("ETHUSD", "trades", 12, 19)]
    assert normaliser.decode(_coinbase_match(20), NOW).duplicates == 1


def test_coinbase_tickers_are_ordered_by_sequence_and_heartbeats_show_life() -> None:
    normaliser = coinbase.Normaliser({"ETH-USD": "ETHUSD"})
    normaliser.decode(_frame(_COINBASE_TICKER), NOW)
    older = normaliser.decode(_frame({**_COINBASE_TICKER, "sequence": 37475248700}), NOW)
    assert (older.ticks, older.duplicates) == ([], 1)
    beat = {
        "type": "heartbeat",
        "sequence": 90,
        "last_trade_id": 20,
        "product_id": "ETH-USD",
        "time": "2014-11-07T08:19:28.464459Z",
    }
    assert normaliser.decode(_frame(beat), NOW).alive == ["ETHUSD"]
    subscribed = {"type": "subscriptions", "channels": [{"name": "ticker", "product_ids": ["ETH-USD"]}]}
    assert normaliser.decode(_frame(subscribed), NOW).acks == 1
    refused = normaliser.decode(
        _frame({"type": "error", "message": "Failed to subscribe", "reason": "X is not a valid product"}), NOW
    )
    assert refused.error == "Failed to subscribe: X is not a valid product"


# -- kraken --------------------------------------------------------------------------------------------


def _kraken_ticker(bid: object, ask: object, timestamp: str = "2023-09-25T07:48:36.925533Z") -> bytes:
    entry = {"symbol": "BTC/USD", "bid": bid, "bid_qty": 0.5, "ask": ask, "ask_qty": 1.25, "last": 26500.1}
    return _frame({"channel": "ticker", "type": "update", "data": [{**entry, "timestamp": timestamp}]})


def test_kraken_ticker_prices_are_read_exactly_from_their_json_numbers() -> None:
    frame = (
        b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":26500.1,"bid_qty":0.50000001,'
        b'"ask":26500.2,"ask_qty":1.2,"last":26500.1,"volume":1.0,"timestamp":"2023-09-25T07:48:36.925533Z"}]}'
    )
    decoded = kraken.Normaliser({"BTC/USD": "BTCUSD"}).decode(frame, NOW)
    quote = decoded.ticks[0]
    assert isinstance(quote, Quote)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (
        Decimal("26500.1"),
        Decimal("26500.2"),
        Decimal("0.50000001"),
        Decimal("1.2"),
    )
    assert quote.ts_event == 1695628116925533000
    assert quote.id.startswith("kraken:BTCUSD:1695628116925533000-")


def test_kraken_ticker_repeats_are_duplicates_and_a_changed_price_at_the_same_time_is_not() -> None:
    normaliser = kraken.Normaliser({"BTC/USD": "BTCUSD"})
    first = normaliser.decode(_kraken_ticker(1.5, 1.6), NOW)
    again = normaliser.decode(_kraken_ticker(1.5, 1.6), NOW)
    changed = normaliser.decode(_kraken_ticker(1.5, 1.7), NOW)
    earlier = normaliser.decode(_kraken_ticker(1.4, 1.7, "2023-09-25T07:48:35Z"), NOW)
    assert [len(d.ticks) for d in (first, again, changed, earlier)] == [1, 0, 1, 0]
    assert first.ticks[0].id != changed.ticks[0].id


def test_kraken_trade_snapshot_is_taken_in_trade_id_order_and_once() -> None:
    frame = _frame(
        {
            "channel": "trade",
            "type": "snapshot",
            "data": [
                {
                    "symbol": "BTC/USD",
                    "side": side,
                    "price": 26500.5,
                    "qty": 0.01,
                    "ord_type": "limit",
                    "trade_id": tid,
                    "timestamp": "2023-09-25T07:48:36.925533Z",
                }
                for tid, side in ((5, "sell"), (4, "buy"))
            ],
        }
    )
    normaliser = kraken.Normaliser({"BTC/USD": "BTCUSD"})
    decoded = normaliser.decode(frame, NOW)
    assert [t.id for t in decoded.ticks] == ["kraken:BTCUSD:t4", "kraken:BTCUSD:t5"]
    assert [t.aggressor for t in decoded.ticks if isinstance(t, Trade)] == ["buy", "sell"]
    assert normaliser.decode(frame, NOW).duplicates == 2


def test_kraken_control_frames_yield_acks_errors_and_nothing_else() -> None:
    normaliser = kraken.Normaliser({"BTC/USD": "BTCUSD"})
    ack = (
        b'{"method":"subscribe","result":{"channel":"ticker","symbol":"BTC/USD","event_trigger":"bbo",'
        b'"snapshot":true},"success":true,"time_in":"2023-09-25T09:04:31.742599Z",'
        b'"time_out":"2023-09-25T09:04:31.742648Z","req_id":1}'
    )
    assert normaliser.decode(ack, NOW).acks == 1
    refused = (
        b'{"error":"Currency pair not supported ABC/USD","method":"subscribe","req_id":2,"success":false,'
        b'"symbol":"ABC/USD"}'
    )
    assert "not supported" in normaliser.decode(refused, NOW).error
    for quiet in (
        b'{"channel":"heartbeat"}',
        b'{"method":"pong","req_id":3}',
        b'{"channel":"status","type":"update","data":[{"system":"online","api_version":"v2"}]}',
    ):
        assert normaliser.decode(quiet, NOW) == type(normaliser.decode(quiet, NOW))()
    assert json.loads(kraken.ping(3)) == {"method": "ping", "req_id": 3}
    assert kraken.expected_acks(["BTC/USD", "ETH/USD"]) == 4


# -- hostile frames ------------------------------------------------------------------------------------

_HOSTILE_BINANCE = [
    b"not json",
    b"[1,2,3]",
    b'{"stream":"btcusdt@bookTicker","data":{"u":"x","s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"NaN","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"-1","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"3","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1e400","B":"1","a":"2e400","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"' + b"9" * 100 + b'","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"ETHUSDT","b":"1","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@bookTicker","data":{"u":99999999999999999999999,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}',
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"0","T":1,"m":true}}',
    b'{"stream":"btcusdt@depth","data":{}}',
    b'{"stream":"' + b"x" * 1000 + b'","data":{}}',
    b"{}",
]


@pytest.mark.parametrize("frame", _HOSTILE_BINANCE)
def test_a_hostile_binance_frame_is_malformed_and_changes_nothing(frame: bytes) -> None:
    normaliser = binance.Normaliser({"BTCUSDT": "BTCUSDT"})
    with pytest.raises(MalformedFrameError) as raised:
        normaliser.decode(frame, NOW)
    assert len(str(raised.value)) < 400
    assert len(normaliser.decode(_binance_book(1), NOW).ticks) == 1


@pytest.mark.parametrize(
    "frame",
    [
        _frame({**_COINBASE_TICKER, "best_bid": "1300", "best_ask": "1285.27"}),
        _frame({**_COINBASE_TICKER, "time": "yesterday"}),
        _frame({**_COINBASE_TICKER, "time": "2022-13-19T23:28:22Z"}),
        _frame({**_COINBASE_TICKER, "best_ask": "Infinity"}),
        _frame({**_COINBASE_TICKER, "type": "full"}),
        _frame({**_COINBASE_TICKER, "sequence": -1}),
    ],
)
def test_a_hostile_coinbase_frame_is_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        coinbase.Normaliser({"ETH-USD": "ETHUSD"}).decode(frame, NOW)


@pytest.mark.parametrize(
    "frame",
    [
        _kraken_ticker([1.5], 1.6),
        _kraken_ticker(1e308, 1e309),
        _kraken_ticker(0, 1.6),
        b'{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":NaN,"ask":1}]}',
        b'{"channel":"trade","type":"update","data":"all of them"}',
        b'{"channel":"nonsense"}',
    ],
)
def test_a_hostile_kraken_frame_is_malformed(frame: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        kraken.Normaliser({"BTC/USD": "BTCUSD"}).decode(frame, NOW)


def test_ids_of_the_longest_symbols_fit_a_quote_id() -> None:
    longest = "A" * 12 + "/" + "B" * 12
    normaliser = kraken.Normaliser({longest: system_symbol("kraken", longest)})
    frame = _frame(
        {
            "channel": "ticker",
            "type": "update",
            "data": [{"symbol": longest, "bid": 1, "ask": 2, "timestamp": "2262-04-11T23:47:16.854775807Z"}],
        }
    )
    assert len(normaliser.decode(frame, NOW).ticks[0].id) <= QUOTE_ID_MAX
    assert len(f"binance:{'A' * 20}:{2**63 - 1}") <= QUOTE_ID_MAX


# -- shared pieces -------------------------------------------------------------------------------------


def test_rfc3339_times_are_exact_to_the_nanosecond() -> None:
    assert rfc3339_ns("v", "1970-01-01T00:00:00Z", b"") == 0
    assert rfc3339_ns("v", "2000-03-01T00:00:00.000000001Z", b"") == 951868800_000_000_001
    assert rfc3339_ns("v", "2262-04-11T23:47:16.854775807Z", b"") == 2**63 - 1
    for bad in (
        "2262-04-11T23:47:16.854775808Z",
        "1969-12-31T23:59:59Z",
        "2020-01-01 00:00:00Z",
        "2020-01-01T00:00:00+01:00",
    ):
        with pytest.raises(MalformedFrameError):
            rfc3339_ns("v", bad, b"")


def test_the_sequencer_tells_new_repeated_and_skipped_sequences() -> None:
    sequencer = Sequencer()
    assert sequencer.check_contiguous("k", 5) == (True, None)
    assert sequencer.check_contiguous("k", 6) == (True, None)
    assert sequencer.check_contiguous("k", 6) == (False, None)
    assert sequencer.check_contiguous("k", 9) == (True, (7, 8))
    assert sequencer.check("other", 1) is True


def test_every_venue_keeps_within_its_documented_limits() -> None:
    assert binance.MAX_SYMBOLS_PER_CONNECTION * 2 <= 1024
    assert binance.SUBSCRIBE_MESSAGES_PER_S < 5
    for venue in VENUES.values():
        assert venue.max_symbols_per_connection >= 100
