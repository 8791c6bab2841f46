"""Write the local venues' scripts (``<name>.script.jsonl``) and what a feed must make of them
(``<name>.expected.json``), from the frame formats each venue documents.

    python tests/data/venues/make_frames.py

Seeded, so the files are the same on every run. A script is one JSON object a line, run in order by the
test server of ``tests/support/venue_server.py`` on the n-th connection's ``session`` n:
``{"session": n}`` starts a connection's part, ``{"await_subscribed": k}`` waits for k subscribe
messages (each answered as the venue does), ``{"send": "<frame>"}`` sends a text frame, ``{"ping": 1}``
a WebSocket ping, ``{"drop": 1}`` cuts the connection without a close, ``{"stall": 1}`` sends nothing more
on it, ``{"await_next": 1}`` waits until the next connection is subscribed, ``{"hold": 1}`` keeps it open.

The expected file lists every tick a feed must publish, once each (``id``, ``symbol``, prices, times),
the frames it must refuse (``malformed``), the repeats it must drop (at least ``duplicates``: a rollover's
overlap adds some), and the gaps it must report.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
T0_MS = 1_700_000_000_000
BASE = {"BTC": Decimal("37000.00"), "ETH": Decimal("2000.00"), "SOL": Decimal("60.000")}


def _iso(ms: int, micros: int = 0) -> str:
    seconds, ms = divmod(ms, 1000)
    days, rest = divmod(seconds, 86400)
    # 2023-11-14 is day 19675 since the epoch; the scripts stay within that day.
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    assert days == 19675
    return f"2023-11-14T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}{micros:03d}Z"


class _Script:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.expected: list[dict[str, Any]] = []
        self.malformed = 0
        self.duplicates = 0
        self.gaps: list[dict[str, Any]] = []

    def act(self, **action: Any) -> None:
        self.lines.append(action)

    def send(self, frame: object) -> None:
        self.lines.append({"send": frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))})

    def bad(self, frame: str) -> None:
        self.malformed += 1
        self.lines.append({"send": frame})

    def repeat_last(self) -> None:
        sent = [line for line in self.lines if "send" in line]
        self.duplicates += 1
        self.lines.append(dict(sent[-1]))

    def write(self, name: str) -> None:
        (HERE / f"{name}.script.jsonl").write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        expected = {
            "ticks": self.expected,
            "malformed": self.malformed,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
        }
        (HERE / f"{name}.expected.json").write_text(json.dumps(expected) + "\n")


def _walk(rng: random.Random, price: Decimal, places: str) -> Decimal:
    return max(price + Decimal(rng.randint(-5, 5)) * Decimal(places), Decimal(places) * 100)


def binance(rng: random.Random, *, rollover: bool) -> _Script:
    script = _Script()
    symbols = {"BTCUSDT": "BTC", "ETHUSDT": "ETH", "SOLUSDT": "SOL"}
    price = {s: BASE[b] for s, b in symbols.items()}
    update = dict.fromkeys(symbols, 1000)
    trade_id = dict.fromkeys(symbols, 500)
    clock = T0_MS

    def event(symbol: str, *, skip_trades: int = 0) -> None:
        nonlocal clock
        clock += rng.randint(0, 3)
        price[symbol] = _walk(rng, price[symbol], "0.01")
        if rng.random() < 0.7:
            update[symbol] += rng.randint(1, 4)
            bid, ask = price[symbol], price[symbol] + Decimal("0.01") * rng.randint(1, 3)
            bid_size, ask_size = Decimal(rng.randint(1, 5000)) / 1000, Decimal(rng.randint(1, 5000)) / 1000
            data = {"u": update[symbol], "s": symbol, "b": f"{bid:.8f}", "B": f"{bid_size:.8f}"}
            data |= {"a": f"{ask:.8f}", "A": f"{ask_size:.8f}"}
            script.send({"stream": f"{symbol.lower()}@bookTicker", "data": data})
            script.expected.append(
                {
                    "id": f"binance:{symbol}:{update[symbol]}",
                    "symbol": symbol,
                    "bid": f"{bid:.8f}",
                    "ask": f"{ask:.8f}",
                    "bid_size": f"{bid_size:.8f}",
                    "ask_size": f"{ask_size:.8f}",
                }
            )
        else:
            if skip_trades:
                script.gaps.append(
                    {"symbol": symbol, "first": trade_id[symbol] + 1, "last": trade_id[symbol] + skip_trades}
                )
                trade_id[symbol] += skip_trades
            trade_id[symbol] += 1
            qty = Decimal(rng.randint(1, 900)) / 1000
            maker = rng.random() < 0.5
            data = {"e": "trade", "E": clock, "s": symbol, "t": trade_id[symbol], "p": f"{price[symbol]:.8f}"}
            data |= {"q": f"{qty:.8f}", "T": clock, "m": maker, "M": True}
            script.send({"stream": f"{symbol.lower()}@trade", "data": data})
            script.expected.append(
                {
                    "id": f"binance:{symbol}:t{trade_id[symbol]}",
                    "symbol": symbol,
                    "price": f"{price[symbol]:.8f}",
                    "size": f"{qty:.8f}",
                    "ts_event": clock * 1_000_000,
                    "aggressor": "sell" if maker else "buy",
                }
            )

    def events(n: int) -> None:
        for _ in range(n):
            event(rng.choice(list(symbols)))

    if rollover:
        script.act(session=1)
        script.act(await_subscribed=1)
        events(800)
        # The replacement subscribes; both connections then carry the same events for a while.
        script.act(await_next=1)
        overlap_from = len(script.lines)
        events(200)
        overlap = [line for line in script.lines[overlap_from:] if "send" in line]
        script.act(hold=1)
        script.act(session=2)
        script.act(await_subscribed=1)
        script.lines.extend(overlap)
        events(800)
        script.act(hold=1)
        return script

    script.act(session=1)
    script.act(await_subscribed=1)
    events(600)
    for _ in range(10):
        events(rng.randint(5, 40))
        script.repeat_last()
    script.act(ping=1)
    hostile = [
        "not json at all",
        '{"stream":"btcusdt@bookTicker","data":{"u":"1x","s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"BTCUSDT","b":"NaN","B":"1","a":"2","A":"1"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"BTCUSDT","b":"-5","B":"1","a":"2","A":"1"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"BTCUSDT","b":"9","B":"1","a":"2","A":"1"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"BTCUSDT","b":"1e30","B":"1","a":"2e30","A":"1"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"'
        + "X" * 5000
        + '","b":"1","B":"1","a":"2","A":"1"}}',
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":99999999,"p":1,"q":[],"T":1,"m":true}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":99999999,"s":"DOGEUSDT","b":"1","B":"1","a":"2","A":"1"}}',
    ]
    for frame in hostile:
        events(rng.randint(5, 40))
        script.bad(frame)
    events(300)
    script.act(drop=1)
    # What the venue published while the feed was away never reaches it: Binance offers no replay.
    script.act(session=2)
    script.act(await_subscribed=1)
    events(400)
    # A sequence gap: five trades of BTCUSDT that the venue never sent.
    while not script.gaps:
        event("BTCUSDT", skip_trades=5)
    events(400)
    script.act(stall=1)
    script.act(session=3)
    script.act(await_subscribed=1)
    events(500)
    script.act(hold=1)
    return script


def coinbase(rng: random.Random) -> _Script:
    script = _Script()
    products = {"BTC-USD": "BTCUSD", "ETH-USD": "ETHUSD"}
    price = {"BTC-USD": BASE["BTC"], "ETH-USD": BASE["ETH"]}
    sequence = dict.fromkeys(products, 10000)
    trade_id = dict.fromkeys(products, 7000)
    clock = T0_MS

    def event(product: str, skip: int = 0) -> None:
        nonlocal clock
        clock += rng.randint(0, 3)
        micros = rng.randint(0, 999)
        symbol = products[product]
        sequence[product] += rng.randint(1, 9)
        price[product] = _walk(rng, price[product], "0.01")
        if skip:
            script.gaps.append({"symbol": symbol, "first": trade_id[product] + 1, "last": trade_id[product] + skip})
            trade_id[product] += skip
        trade_id[product] += 1
        size = Decimal(rng.randint(1, 10**8)) / 10**8
        side = rng.choice(["buy", "sell"])
        time = _iso(clock, micros)
        ts = (clock * 1000 + micros) * 1000
        script.send(
            {
                "type": "match",
                "trade_id": trade_id[product],
                "maker_order_id": "ac928c66-ca53-498f-9c13-a110027a60e8",
                "taker_order_id": "132fb6ae-456b-4654-b4e0-d681ac05cea1",
                "side": side,
                "size": str(size),
                "price": str(price[product]),
                "product_id": product,
                "sequence": sequence[product],
                "time": time,
            }
        )
        script.expected.append(
            {
                "id": f"coinbase:{symbol}:t{trade_id[product]}",
                "symbol": symbol,
                "price": str(price[product]),
                "size": str(size),
                "ts_event": ts,
                "aggressor": "buy" if side == "sell" else "sell",
            }
        )
        sequence[product] += 1
        bid = price[product] - Decimal("0.01") * rng.randint(0, 2)
        ask = bid + Decimal("0.01") * rng.randint(1, 3)
        bid_size, ask_size = Decimal(rng.randint(1, 10**8)) / 10**8, Decimal(rng.randint(1, 10**8)) / 10**8
        script.send(
            {
                "type": "ticker",
                "sequence": sequence[product],
                "product_id": product,
                "price": str(price[product]),
                "open_24h": "1310.79",
                "volume_24h": "245532.79269678",
                "low_24h": "1280.52",
                "high_24h": "1313.8",
                "volume_30d": "9788783.60117027",
                "best_bid": str(bid),
                "best_bid_size": str(bid_size),
                "best_ask": str(ask),
                "best_ask_size": str(ask_size),
                "side": side,
                "time": time,
                "trade_id": trade_id[product],
                "last_size": str(size),
            }
        )
        script.expected.append(
            {
                "id": f"coinbase:{symbol}:{sequence[product]}",
                "symbol": symbol,
                "bid": str(bid),
                "ask": str(ask),
                "bid_size": str(bid_size),
                "ask_size": str(ask_size),
                "ts_event": ts,
            }
        )
        if rng.random() < 0.05:
            script.send(
                {
                    "type": "heartbeat",
                    "sequence": sequence[product],
                    "last_trade_id": trade_id[product],
                    "product_id": product,
                    "time": time,
                }
            )

    def events(n: int) -> None:
        for _ in range(n):
            event(rng.choice(list(products)))

    script.act(session=1)
    script.act(await_subscribed=1)
    events(500)
    for _ in range(5):
        events(rng.randint(3, 30))
        script.repeat_last()
    event("ETH-USD", skip=3)
    events(100)
    for frame in (
        '{"type":"ticker","sequence":1,"product_id":"BTC-USD","best_bid":"5","best_ask":"4","time":"2023-11-14T22:13:20Z"}',
        '{"type":"match","trade_id":"x"}',
        '{"type":"ticker","sequence":1,"product_id":"BTC-USD","best_bid":"Infinity","best_ask":"4","time":"2023-11-14T22:13:20Z"}',
        '{"type":"l2update"}',
        "{",
    ):
        events(rng.randint(3, 30))
        script.bad(frame)
    events(200)
    script.act(drop=1)
    # While away, trades happen that the ticker channel never replays: the gap is reported on return.
    for product in products:
        skipped = rng.randint(2, 6)
        script.gaps.append(
            {"symbol": products[product], "first": trade_id[product] + 1, "last": trade_id[product] + skipped}
        )
        trade_id[product] += skipped
        sequence[product] += 50
    script.act(session=2)
    script.act(await_subscribed=1)
    events(600)
    script.act(hold=1)
    return script


def kraken(rng: random.Random) -> _Script:
    script = _Script()
    pairs = {"BTC/USD": "BTCUSD", "ETH/USD": "ETHUSD"}
    price = {"BTC/USD": BASE["BTC"], "ETH/USD": BASE["ETH"]}
    trade_id = dict.fromkeys(pairs, 40_000)
    history: dict[str, list[dict[str, Any]]] = {p: [] for p in pairs}
    sent: set[tuple[str, int]] = set()
    clock = T0_MS

    def quote(pair: str) -> None:
        nonlocal clock
        clock += rng.randint(1, 3)
        micros = rng.randint(0, 999)
        price[pair] = _walk(rng, price[pair], "0.1")
        bid, ask = price[pair], price[pair] + Decimal("0.1") * rng.randint(1, 3)
        bid_qty, ask_qty = Decimal(rng.randint(1, 10**6)) / 10**5, Decimal(rng.randint(1, 10**6)) / 10**5
        entry = {"symbol": pair, "bid": bid, "bid_qty": bid_qty, "ask": ask, "ask_qty": ask_qty, "last": bid}
        entry |= {"volume": 1234.5, "vwap": bid, "low": bid, "high": ask, "change": 0.5, "change_pct": 0.01}
        entry |= {"timestamp": _iso(clock, micros)}
        text = json.dumps({k: str(v) if isinstance(v, Decimal) else v for k, v in entry.items()})
        # Kraken writes prices as JSON numbers: unquote the decimal text.
        for key in ("bid", "bid_qty", "ask", "ask_qty", "last", "vwap", "low", "high"):
            text = text.replace(f'"{key}": "{entry[key]}"', f'"{key}": {entry[key]}')
        script.send('{"channel":"ticker","type":"update","data":[' + text + "]}")
        script.expected.append(
            {
                "symbol": pairs[pair],
                "bid": str(bid),
                "ask": str(ask),
                "bid_size": str(bid_qty),
                "ask_size": str(ask_qty),
                "ts_event": (clock * 1000 + micros) * 1000,
            }
        )

    def trade(pair: str, *, send: bool = True) -> None:
        nonlocal clock
        clock += rng.randint(1, 3)
        trade_id[pair] += 1
        qty = Decimal(rng.randint(1, 10**6)) / 10**6
        side = rng.choice(["buy", "sell"])
        entry = {"symbol": pair, "side": side, "price": str(price[pair]), "qty": str(qty), "ord_type": "limit"}
        entry |= {"trade_id": trade_id[pair], "timestamp": _iso(clock)}
        history[pair].append(entry)
        if send:
            sent.add((pair, trade_id[pair]))
            script.send(_trades_frame("update", [entry]))
        script.expected.append(
            {
                "id": f"kraken:{pairs[pair]}:t{trade_id[pair]}",
                "symbol": pairs[pair],
                "price": str(price[pair]),
                "size": str(qty),
                "ts_event": clock * 1_000_000,
                "aggressor": side,
            }
        )

    def events(n: int, *, send: bool = True) -> None:
        for _ in range(n):
            pair = rng.choice(list(pairs))
            if rng.random() < 0.6 and send:
                quote(pair)
            else:
                trade(pair, send=send)

    script.act(session=1)
    script.act(await_subscribed=2)
    script.send(
        '{"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":1,"system":"online","version":"2.0.0"}]}'
    )
    events(700)
    script.send('{"channel":"heartbeat"}')
    for _ in range(5):
        events(rng.randint(3, 30))
        script.repeat_last()
    for frame in (
        '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":-1,"ask":1,"timestamp":"2023-11-14T22:13:20Z"}]}',
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"up","price":1,"qty":1,"trade_id":1,"timestamp":"2023-11-14T22:13:20Z"}]}',
        '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1e999,"ask":1e999}]}',
    ):
        events(rng.randint(3, 30))
        script.bad(frame)
    events(200)
    script.act(drop=1)
    # Trades while away: the trade snapshot on resubscribing brings back the last 50 of each symbol.
    events(30, send=False)
    script.act(session=2)
    script.act(await_subscribed=2)
    for pair in pairs:
        last = history[pair][-50:]
        script.send(_trades_frame("snapshot", list(reversed(last))))
        script.duplicates += sum(1 for e in last if (pair, e["trade_id"]) in sent)
    events(500)
    script.act(hold=1)
    return script


def _trades_frame(kind: str, entries: list[dict[str, Any]]) -> str:
    text = json.dumps({"channel": "trade", "type": kind, "data": entries}, separators=(",", ":"))
    for entry in entries:
        for key in ("price", "qty"):
            text = text.replace(f'"{key}":"{entry[key]}"', f'"{key}":{entry[key]}')
    return text


def main() -> None:
    """Write every script and its expectations."""
    binance(random.Random(1), rollover=False).write("binance")
    binance(random.Random(2), rollover=True).write("binance_rollover")
    coinbase(random.Random(3)).write("coinbase")
    kraken(random.Random(4)).write("kraken")


if __name__ == "__main__":
    main()
