"""The mean_reversion semantics, checked against the independent exact reference (tests.support.reference)."""

from __future__ import annotations

import csv
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrr.shared.fixed import rescale, to_units
from rrr.shared.messages import QuoteRow, Signal, SubmitOrder
from rrr.strategy import loading
from rrr.strategy.engine import Engine
from rrr.strategy.mean_reversion import z_compare
from tests.support.reference import mean_reversion_targets

DATA = Path(__file__).parents[1] / "data"
FILES = ["eurusd_quotes_2020-01-01.csv", "usdjpy_quotes_2013-01-01.csv", "btcusdt_quotes_2021-01-08.csv"]


def _rows(name: str) -> list[QuoteRow]:
    rows = []
    with (DATA / name).open(newline="") as fh:
        for i, record in enumerate(csv.DictReader(fh)):
            (bid, bp), (ask, ap) = to_units(Decimal(record["bid"])), to_units(Decimal(record["ask"]))
            places = max(bp, ap)
            rows.append(QuoteRow(f"q:{i}", "SYM", i + 1, rescale(bid, bp, places), rescale(ask, ap, places), places))
    return rows


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(("window", "entry", "exit_"), [(20, "2", "0.5"), (50, "1.5", "0"), (7, "1", "0.999")])
def test_mean_reversion_changes_its_target_exactly_where_the_reference_does(
    name: str, window: int, entry: str, exit_: str
) -> None:
    rows = _rows(name)
    params = {"window": window, "entry": entry, "exit": exit_, "qty": "2"}
    engine = Engine([loading.spec("mr", "mean_reversion", params)], clock=lambda: 0)
    out = [m for i, row in enumerate(rows) for m in engine.on_row(row, i + 1)]
    mids = [Fraction(r.bid + r.ask, 2 * 10**r.places) for r in rows]

    expected = list(mean_reversion_targets(mids, window, Fraction(entry), Fraction(exit_), Fraction(2)))

    signals = [m for m in out if isinstance(m, Signal)]
    orders = [m for m in out if isinstance(m, SubmitOrder)]
    assert [(int(s.quote_id[2:]), Fraction(s.target)) for s in signals] == expected
    assert len(expected) > 10
    held = Fraction(0)
    for order, (_, target) in zip(orders, expected, strict=True):
        assert (order.side, Fraction(order.qty)) == ("buy" if target > held else "sell", abs(target - held))
        held = target


@given(
    d=st.integers(-(10**12), 10**12),
    w=st.integers(1, 10**24),
    k=st.fractions(min_value=-10, max_value=10, max_denominator=1000),
)
def test_z_compare_is_the_sign_of_z_minus_k_exactly(d: int, w: int, k: Fraction) -> None:
    # Squares compared in integers against the definition, decided with exact fractions where z**2 is exact.
    z_sq = Fraction(d * d, w)
    if d >= 0 and k >= 0:
        expected = (z_sq > k * k) - (z_sq < k * k)
    elif d < 0 and k < 0:
        expected = (k * k > z_sq) - (k * k < z_sq)
    else:
        expected = 1 if d >= 0 else -1
        if d == 0 and k == 0:
            expected = 0
    assert z_compare(d, w, k) == expected
    if w < 10**15:  # where a float happens to be good enough to agree
        z = d / math.sqrt(w)
        if abs(z - float(k)) > 1e-6:
            assert z_compare(d, w, k) == (1 if z > k else -1)


def test_mean_reversion_refuses_parameters_that_make_no_sense() -> None:
    with pytest.raises(loading.StrategyLoadError, match=r"needs entry > 0"):
        loading.spec("mr", "mean_reversion", {"entry": "0", "exit": "0"})
    with pytest.raises(loading.StrategyLoadError, match=r"Expected `int` >= 2 - at `\$.window`"):
        loading.spec("mr", "mean_reversion", {"window": 1})
