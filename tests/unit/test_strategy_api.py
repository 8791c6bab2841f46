"""The strategy API and engine (rrr.strategy.api, engine, loading): built-ins and user strategies, loading
errors in one line, isolation of a failing strategy, and snapshots that continue exactly."""

from __future__ import annotations

import csv
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from rrr.shared.fixed import rescale, to_units
from rrr.shared.messages import QuoteRow, Signal, SubmitOrder
from rrr.strategy import loading, snapshots
from rrr.strategy.engine import Engine, Output, StrategySpec
from tests.support.reference import sma_cross

DATA = Path(__file__).parents[1] / "data"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"
STRATEGIES = "tests.support.strategies"


def _rows(path: Path = EURUSD, symbol: str = "EURUSD", limit: int | None = None) -> list[QuoteRow]:
    rows = []
    with path.open(newline="") as fh:
        for i, record in enumerate(csv.DictReader(fh)):
            (bid, bp), (ask, ap) = to_units(Decimal(record["bid"])), to_units(Decimal(record["ask"]))
            places = max(bp, ap)
            # Event times one second apart: the file's own times are checked by the timer tests.
            rows.append(QuoteRow(f"q:{i + 2}", symbol, 1_000_000_000 * (i + 1), rescale(bid, bp, places),
                                 rescale(ask, ap, places), places))  # fmt: skip
            if limit is not None and len(rows) == limit:
                break
    return rows


def _engine(specs: list[StrategySpec]) -> Engine:
    # A fixed clock: what the engine stamps (ts_init) is then the same in every run.
    return Engine(specs, clock=lambda: 7)


def _feed(engine: Engine, rows: list[QuoteRow], first_seq: int = 1) -> list[Output]:
    out: list[Output] = []
    for i, row in enumerate(rows):
        out.extend(engine.on_row(row, first_seq + i, 0))
    return out


def _orders(out: list[Output]) -> list[tuple[str, str, str, Decimal, int]]:
    return [(o.id, o.strategy, o.side, o.qty, o.quote_seq) for o in out if isinstance(o, SubmitOrder)]


def test_sma_cross_on_the_api_sends_the_orders_and_signals_of_the_exact_reference_with_the_same_ids() -> None:
    rows = _rows(limit=3000)
    crosses = list(sma_cross([(Fraction(r.bid, 10**r.places), Fraction(r.ask, 10**r.places)) for r in rows]))
    engine = _engine([loading.spec("sma_cross", "sma_cross")])

    out = _feed(engine, rows)

    assert [(s.id, s.direction, Fraction(s.target)) for s in out if isinstance(s, Signal)] == [
        (f"sma_cross:{rows[c.index].id}", c.direction, c.target) for c in crosses
    ]
    assert _orders(out) == [
        (f"sma_cross-{rows[c.index].id}", "sma_cross", c.side, Decimal(int(abs(c.order_qty))), c.index + 1)
        for c in crosses
        if c.order_qty
    ]
    # Each order follows its signal, and names its quote's touch and time.
    order = next(o for o in out if isinstance(o, SubmitOrder))
    row = next(r for r in rows if order.id.endswith(r.id))
    assert (order.quote_ts, order.quote_bid, order.quote_ask, order.ts_init) == (
        row.ts_event, Decimal(row.bid).scaleb(-row.places), Decimal(row.ask).scaleb(-row.places), 7,
    )  # fmt: skip


def test_two_strategies_in_one_engine_each_send_their_own_orders_under_their_own_id() -> None:
    rows = _rows(limit=2000)
    alone = _feed(_engine([loading.spec("fast", "sma_cross", {"fast": 3, "slow": 10})]), rows)
    both = _feed(
        _engine([loading.spec("slow", "sma_cross"), loading.spec("fast", "sma_cross", {"fast": 3, "slow": 10})]), rows
    )
    assert [o for o in both if o.strategy == "fast"] == alone
    assert {o.strategy for o in both} == {"fast", "slow"}


def test_a_strategy_trades_only_its_listed_symbols() -> None:
    rows = _rows(limit=500) + _rows(symbol="OTHER", limit=500)
    engine = _engine([loading.spec("only_other", "sma_cross", symbols=["OTHER"])])
    out = _feed(engine, rows)
    assert out
    assert {o.symbol for o in out} == {"OTHER"}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "sma_cross",
            {"fast": 0},
            r"^parameters of sma_cross: expected SmaCrossParams, got Expected `int` >= 1 - at `\$.fast`$",
        ),
        (
            "sma_cross",
            {"fast": 9, "slow": 5},
            r"^parameters of sma_cross: .*sma_cross needs 1 <= fast < slow, got fast=9 slow=5",
        ),
        ("sma_cross", {"fats": 3}, r"^parameters of sma_cross: .*unknown field `fats`"),
        ("sma_cross", '{"fast": ', r"^parameters of sma_cross: expected a JSON object"),
        ("mean_reversion", {"entry": 1, "exit": 2}, r"0 <= exit < entry, got exit=2 entry=1"),
        ("no_such", {}, r"^strategy: expected a built-in \(sma_cross, mean_reversion, ml_signal\), .* got 'no_such'$"),
        (
            "no_such_module.x:Y",
            {},
            r"^strategy no_such_module.x:Y: expected an importable module, got ModuleNotFoundError",
        ),
        (f"{STRATEGIES}:Missing", {}, r"expected a class Missing in tests.support.strategies, got no such name$"),
        (f"{STRATEGIES}:NotAStrategy", {}, r"expected a subclass of rrr.strategy.api.Strategy"),
    ],
)
def test_a_strategy_that_cannot_load_is_one_line_naming_what_was_wrong(name: str, params: object, message: str) -> None:
    with pytest.raises(loading.StrategyLoadError, match=message) as caught:
        loading.spec("x", name, params)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_strategies_file_loads_its_strategies_and_refuses_unknown_keys_duplicates_and_too_many(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        'name = "desk"\n[[strategy]]\nid = "a"\nclass = "sma_cross"\nparams = { fast = 3, slow = 10 }\n'
        'symbols = ["EURUSD"]\n[[strategy]]\nid = "b"\nclass = "tests.support.strategies:TimedMomentum"\n'
    )
    name, specs = loading.from_file(good)
    assert name == "desk"
    assert [(s.id, s.ref, s.symbols) for s in specs] == [
        ("a", "sma_cross", frozenset({"EURUSD"})),
        ("b", "tests.support.strategies:TimedMomentum", frozenset()),
    ]
    bad = {
        "unknown.toml": ('[[strategy]]\nid = "a"\nclass = "sma_cross"\ncolour = 1\n', r"unknown field `colour`"),
        "dup.toml": (
            '[[strategy]]\nid = "a"\nclass = "sma_cross"\n' * 2,
            r"expected distinct strategy ids, got 'a' twice",
        ),
        "many.toml": (
            "".join(f'[[strategy]]\nid = "s{i}"\nclass = "sma_cross"\n' for i in range(loading.MAX_STRATEGIES + 1)),
            rf"expected at most {loading.MAX_STRATEGIES} strategies, got {loading.MAX_STRATEGIES + 1}",
        ),
        "id.toml": ('[[strategy]]\nid = "A-1"\nclass = "sma_cross"\n', r"^strategy id: expected 1-64 characters"),
        "notoml.toml": ("[[strategy]\n", r"expected a TOML file"),
    }
    for file_name, (text, message) in bad.items():
        path = tmp_path / file_name
        path.write_text(text)
        with pytest.raises(loading.StrategyLoadError, match=message) as caught:
            loading.from_file(path)
        assert "\n" not in str(caught.value)


def test_the_builtins_are_listed_with_their_summary() -> None:
    listed = {name: (target, doc) for name, target, doc in loading.available()}
    assert listed["sma_cross"][0] == "rrr.strategy.sma_cross:SmaCrossStrategy"
    assert listed["mean_reversion"][1].startswith("``mean_reversion``")


@pytest.mark.parametrize("bad", ["RaisesAfter", "ReturnsGarbage", "TwoOrdersOnAQuote", "FailsAtStart", "FailsInInit"])
def test_a_strategy_that_fails_is_stopped_and_counted_and_the_others_go_on(bad: str) -> None:
    rows = _rows(limit=1500)
    reference = _feed(_engine([loading.spec("sma_cross", "sma_cross")]), rows)
    engine = _engine([loading.spec("bad", f"{STRATEGIES}:{bad}"), loading.spec("sma_cross", "sma_cross")])

    out = _feed(engine, rows)

    assert out == reference
    assert engine.counters.strategies_failed == 1
    assert engine.stopped == 1
    assert engine.runner("bad").stopped.startswith(
        {"FailsAtStart": "on_start: ValueError", "FailsInInit": "__init__: RuntimeError"}.get(
            bad, "on_quote at quote q:"
        )
    )
    # Stopped for good: its state says so in a snapshot, and a restored engine keeps it stopped.
    again = _engine([loading.spec("bad", f"{STRATEGIES}:{bad}"), loading.spec("sma_cross", "sma_cross")])
    again.restore(snapshots.decode_any(snapshots.encode_engine(9, engine)).strategies)  # type: ignore[union-attr]
    assert again.runner("bad").stopped == engine.runner("bad").stopped


def _specs() -> list[StrategySpec]:
    return [
        loading.spec("sma_cross", "sma_cross"),
        loading.spec("mean_rev", "mean_reversion", {"window": 30, "entry": "1.5", "exit": "0.25"}),
        loading.spec("momentum", f"{STRATEGIES}:TimedMomentum", {"every_ms": 45_000}),
    ]


@pytest.mark.parametrize("cut", [1, 700, 2345])
def test_an_engine_restored_from_its_snapshot_continues_exactly_like_an_uninterrupted_one(cut: int) -> None:
    rows = _rows(limit=4000)
    uninterrupted = _feed(_engine(_specs()), rows)
    assert {o.strategy for o in uninterrupted if isinstance(o, SubmitOrder)} == {"sma_cross", "mean_rev", "momentum"}
    first = _engine(_specs())
    before = _feed(first, rows[:cut])
    data = snapshots.encode_engine(cut, first)

    restored = _engine(_specs())
    snapshot = snapshots.decode_any(data)
    assert isinstance(snapshot, snapshots.SnapshotV4)
    restored.restore(snapshot.strategies)
    restored.watermarks.update(snapshot.watermarks)
    restored.latest.update(snapshot.latest)
    # The quotes after the snapshot, and some before it again (a redelivery): those are skipped.
    after = _feed(restored, rows[max(cut - 50, 0) :], first_seq=max(cut - 50, 0) + 1)

    assert before + after == uninterrupted
    assert restored.counters.stale_skipped == min(cut, 50)


def test_a_timer_fires_at_the_first_quote_at_or_after_its_event_time_never_by_the_wall_clock() -> None:
    rows = _rows(limit=400)  # one second apart
    engine = _engine([loading.spec("momentum", f"{STRATEGIES}:TimedMomentum", {"every_ms": 60_500})])
    out = _feed(engine, rows)
    # Looks at quotes 1 + 61 k (the first at or after 60.5 s since the previous look).
    assert {int(o.quote_id.split(":")[1]) - 2 for o in out if isinstance(o, Signal)} <= {61 * k for k in range(1, 7)}
    assert engine.runner("momentum").ctx.timers[0].at == rows[61 * 6].ts_event + 60_500_000_000


def test_a_strategy_installed_with_an_entry_point_is_listed_and_loaded_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What pip leaves of a package that declares [project.entry-points."rrr.strategies"]: its dist-info.
    dist = tmp_path / "momentum_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: momentum-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{loading.ENTRY_POINT_GROUP}]\nmomentum = {STRATEGIES}:TimedMomentum\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    listed = {name: target for name, target, _ in loading.available()}
    spec = loading.spec("momentum", "momentum", {"every_ms": 1000})

    assert listed["momentum"] == f"{STRATEGIES}:TimedMomentum"
    assert spec.cls.__name__ == "TimedMomentum"
    assert spec.ref == "momentum"
