"""Strategy snapshots (rrr.strategy.snapshots): v2 round trips, and v1 snapshots of earlier versions still load."""

from __future__ import annotations

import csv
import decimal
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest

from rrr.shared.messages import QuoteRow, SubmitOrder
from rrr.shared.watermark import Watermark
from rrr.strategy import loading, snapshots
from rrr.strategy.engine import Engine
from rrr.strategy.sma_cross import Cross, SmaCross, SmaCrossParams
from tests.support.reference import sma_cross, sma_means

DATA = Path(__file__).parents[1] / "data"
PARAMS = SmaCrossParams()
_EXACT = decimal.Context(prec=100, traps=[decimal.Inexact])

# strategy_snapshot.v1 as the version before fixed-point prices (commit 5d417c3) encoded it, with
# rrr.strategy.snapshots.encode(4321, "sma_cross", SmaCrossParams(), books, watermarks) after feeding its
# SmaCross.on_quote the first 1,234 EUR/USD quotes (symbol EURUSD) and the first 200 BTC/USDT quotes
# (BTCUSDT) of tests/data, with watermarks Watermark(ts=n, ids=[f"q:{n + 1}"]) for n quotes.
V1_SNAPSHOT = bytes.fromhex(
    "88a474797065b473747261746567795f736e617073686f742e7631a3736571cd10e1a87374726174656779a9736d615f"
    "63726f7373a46661737405a4736c6f7714a3717479a131a5626f6f6b7382a645555255534494dc0014a8322e32343333"
    "3230a8322e323433333030a8322e323433333130a8322e323433323830a8322e323433333130a8322e323433323830a8"
    "322e323433333130a8322e323433323930a8322e323433333130a8322e323433323930a8322e323433333130a8322e32"
    "3433323930a8322e323433333230a8322e323433333130a8322e323433323930a8322e323433333130a8322e32343332"
    "3930a8322e323433333130a8322e323433323930a8322e32343333313001a131cd04d2a74254435553445494dc0014a8"
    "37383937322e3137a837383937362e3038a837383937342e3131a837383937362e3035a837383937362e3035a8373839"
    "37392e3939a837383938372e3830a837383938372e3832a837383939302e3836a837383939312e3832a837383939322e"
    "3635a837383938382e3031a837383939302e3239a837383939302e3239a837383939382e3633a837383939392e3939a8"
    "37383939392e3939a837383939392e3939a837383939392e3939a837383939392e393901a131ccc8aa77617465726d61"
    "726b7382a645555255534492cd04d291a6713a31323335a74254435553445492ccc891a5713a323031"
)
V1_QUOTES = {"EURUSD": ("eurusd_quotes_2020-01-01.csv", 1234), "BTCUSDT": ("btcusdt_quotes_2021-01-08.csv", 200)}


def _quotes(name: str) -> list[tuple[Decimal, Decimal]]:
    with (DATA / name).open(newline="") as fh:
        return [(Decimal(row["bid"]), Decimal(row["ask"])) for row in csv.DictReader(fh)]


def _feed(book: SmaCross, quotes: list[tuple[Decimal, Decimal]]) -> list[tuple[int, Cross]]:
    return [(i, cross) for i, (bid, ask) in enumerate(quotes) if (cross := book.on_decimal_quote(bid, ask))]


def test_a_v1_snapshot_of_the_earlier_version_loads_and_continues_with_the_crosses_of_an_uninterrupted_run() -> None:
    snapshot = snapshots.decode(V1_SNAPSHOT)

    assert (snapshot.seq, snapshot.strategy, snapshot.fast, snapshot.slow, snapshot.qty) == (
        4321,
        "sma_cross",
        5,
        20,
        1,
    )
    assert snapshot.watermarks == {
        "EURUSD": Watermark(ts=1234, ids=["q:1235"]),
        "BTCUSDT": Watermark(ts=200, ids=["q:201"]),
    }
    for symbol, (name, cut) in V1_QUOTES.items():
        quotes = _quotes(name)
        uninterrupted = SmaCross(PARAMS)
        _feed(uninterrupted, quotes[:cut])
        restored = SmaCross.from_state(PARAMS, snapshot.books[symbol])
        assert restored.state() == uninterrupted.state()
        after = _feed(restored, quotes[cut:])
        assert after == _feed(uninterrupted, quotes[cut:])
        exact = [(Fraction(bid), Fraction(ask)) for bid, ask in quotes]
        assert [(cut + i, cross.direction) for i, cross in after] == [
            (cross.index, cross.direction) for cross in sma_cross(exact) if cross.index >= cut
        ]
        assert len(after) > 10


def test_a_v1_window_of_28_places_loads_exactly_and_continues_at_28_places() -> None:
    # Earlier versions took prices of up to 28 places; such a window converts to units of 10**-28, and the
    # quotes after it (at most 18 places now) are scaled up to it.
    before = [Decimal(f"1.{k:028d}") for k in (1, 3, 2, 5, 4)]
    after = [Decimal(m) for m in ("1", "1.1", "1", "0.9", "1.00000000000000001", "1.2", "1.2", "1.1")]
    mids = before + after
    params = SmaCrossParams(fast=1, slow=3)
    exact = [(Fraction(m), Fraction(m)) for m in mids]
    crosses = list(sma_cross(exact, fast=1, slow=3))
    means = list(sma_means([Fraction(m) for m in mids[: len(before)]], fast=1, slow=3))[-2:]
    relation = [None if m is None else (m[0] > m[1]) - (m[0] < m[1]) for m in means][-1]
    targets = [cross.target for cross in crosses if cross.index < len(before)]
    v1 = snapshots.SnapshotV1(
        seq=9,
        strategy="sma_cross",
        fast=1,
        slow=3,
        qty=Decimal(1),
        books={
            "EURUSD": snapshots.SmaCrossStateV1(
                window=[_EXACT.add(m, m) for m in before[-3:]],  # as v1's exact context added them
                prev_relation=relation,
                target=Decimal(int(targets[-1])) if targets else Decimal(0),
                quotes_seen=len(before),
            )
        },
    )

    state = snapshots.decode(msgspec.msgpack.encode(v1)).books["EURUSD"]

    assert state.places == 28
    assert [Fraction(int(mid2), 10**28) for mid2 in state.window] == [2 * Fraction(m) for m in before[-3:]]
    book = SmaCross.from_state(params, state)
    got = [(len(before) + i, cross.direction) for i, cross in _feed(book, [(m, m) for m in after])]
    assert got == [(cross.index, cross.direction) for cross in crosses if cross.index >= len(before)]
    assert len(got) >= 3
    # Saved again, now as v2 (the window past 64 bits as text), and loaded again: the same state.
    again = snapshots.decode(snapshots.encode(10, "sma_cross", params, {"EURUSD": book}, {}))
    assert again.books["EURUSD"] == book.state()
    assert all(isinstance(mid2, str) for mid2 in book.state().window)


def test_a_v2_snapshot_round_trips_every_book_and_watermark() -> None:
    books = {"EURUSD": SmaCross(PARAMS), "BTCUSDT": SmaCross(PARAMS)}
    _feed(books["EURUSD"], _quotes("eurusd_quotes_2020-01-01.csv")[:500])
    _feed(books["BTCUSDT"], _quotes("btcusdt_quotes_2021-01-08.csv")[:7])
    marks = {"EURUSD": Watermark(ts=5, ids=["a"]), "BTCUSDT": Watermark(ts=6, ids=["b", "c"])}

    snapshot = snapshots.decode(snapshots.encode(77, "sma_cross", PARAMS, books, marks))

    assert snapshot.seq == 77
    assert snapshot.books == {symbol: book.state() for symbol, book in books.items()}
    assert snapshot.watermarks == marks


def test_the_earlier_version_refuses_a_v2_snapshot_rather_than_misreading_it() -> None:
    # What the earlier version decoded with: only strategy_snapshot.v1.
    earlier = msgspec.msgpack.Decoder(snapshots.SnapshotV1)
    data = snapshots.encode(1, "sma_cross", PARAMS, {"EURUSD": SmaCross(PARAMS)}, {})
    with pytest.raises(msgspec.ValidationError, match=r"strategy_snapshot\.v2"):
        earlier.decode(data)


def test_a_v2_snapshot_becomes_the_state_of_the_sma_cross_of_its_name_and_parameters_and_of_no_other() -> None:
    book = SmaCross(PARAMS)
    _feed(book, _quotes("eurusd_quotes_2020-01-01.csv")[:500])
    marks = {"EURUSD": Watermark(ts=5, ids=["a"])}
    v2 = snapshots.decode(snapshots.encode(77, "sma_cross", PARAMS, {"EURUSD": book}, marks))
    engine = Engine([loading.spec("sma_cross", "sma_cross")])

    v3 = snapshots._upgrade_sma_cross(v2, engine, "test")
    engine.restore(v3.strategies)

    assert engine.runner("sma_cross").strategy.books["EURUSD"].state() == book.state()  # type: ignore[attr-defined]
    assert (v3.seq, v3.watermarks) == (77, marks)
    other = Engine([loading.spec("sma_cross", "sma_cross", {"fast": 3})])
    with pytest.raises(snapshots.SnapshotMismatchError, match=r"taken with sma_cross fast=5 slow=20 qty=1, but"):
        snapshots._upgrade_sma_cross(v2, other, "test")
    renamed = Engine([loading.spec("cross", "sma_cross")])
    with pytest.raises(snapshots.SnapshotMismatchError, match=r"runs with cross \(sma_cross\)"):
        snapshots._upgrade_sma_cross(v2, renamed, "test")


def _rests_engine() -> Engine:
    params = {"qty": "1", "tick": "0.0001", "below": 2, "chase": 3, "take": 5, "stop": 5, "max_age": 5}
    return Engine([loading.spec("rests", "tests.support.strategies:RestsLimits", params)], clock=lambda: 1)


def test_a_v4_snapshot_keeps_a_closed_loop_strategys_open_orders_progress_and_where_its_quotes_are() -> None:
    engine = _rests_engine()
    row = QuoteRow("q:1", "EURUSD", 1_000, 11_000, 11_002, 4)
    (order,) = engine.on_row(row, 41, 3)
    assert isinstance(order, SubmitOrder)
    runner = engine.runner("rests")
    runner.marker, runner.through = (41, 3, 1), (41, 3)
    snapshot = snapshots.decode_any(snapshots.encode_engine(41, engine, 17))
    assert isinstance(snapshot, snapshots.SnapshotV4)
    restored = _rests_engine()
    restored.restore(snapshot.strategies)
    restored.latest_at.update(snapshot.latest_at)
    again = restored.runner("rests")
    assert dict(again.ctx.open_orders) == dict(runner.ctx.open_orders)
    assert again.ctx.open_orders[order.id].status == "sent"
    assert again.ctx.open_symbols == {"EURUSD": 1}
    assert (again.marker, again.through) == ((41, 3, 1), (41, 3))
    assert restored.latest_at == {"EURUSD": (41, 3)}


def test_a_v3_snapshot_still_loads_its_orders_awaiting_an_outcome_as_open_orders_sent() -> None:
    engine = _rests_engine()
    (order,) = engine.on_row(QuoteRow("q:1", "EURUSD", 1_000, 11_000, 11_002, 4), 41, 0)
    assert isinstance(order, SubmitOrder)
    (state,) = engine.state()
    v3 = snapshots.SnapshotV3(
        seq=41, strategies=[msgspec.structs.replace(state, orders=[], open_orders=[order])], watermarks={}
    )
    loaded = snapshots.decode_any(msgspec.msgpack.encode(v3))
    assert isinstance(loaded, snapshots.SnapshotV3)
    restored = _rests_engine()
    restored.restore(loaded.strategies)
    held = restored.runner("rests").ctx.open_orders[order.id]
    assert (held.status, held.limit_price, held.post_only) == ("sent", order.limit_price, True)
