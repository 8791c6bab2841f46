"""ml_signal and rrr-train: a model trained on recorded quotes, loaded at start, scored exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrr.deploy import backtest, train
from rrr.strategy import loading, snapshots
from rrr.strategy.engine import Engine

DATA = Path(__file__).parents[1] / "data"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.json"
    assert train.main([str(EURUSD), "--out", str(path), "--lags", "1,5,20", "--horizon", "20"]) == 0
    return path


def test_rrr_train_writes_a_versioned_model_with_its_features_metrics_and_naive_baselines(model_file: Path) -> None:
    model = json.loads(model_file.read_text())
    assert (model["format"], model["lags"], model["horizon"], len(model["weights"])) == (
        "rrr.ml_signal.model.v1", [1, 5, 20], 20, 4,
    )  # fmt: skip
    assert {"test_accuracy", "baseline_majority_accuracy", "baseline_momentum_accuracy", "test_auc"} <= set(
        model["metrics"]
    )
    assert model["trained_on"][0].startswith("eurusd_quotes_2020-01-01.csv f")


def test_ml_signal_backtests_deterministically_and_continues_exactly_after_a_snapshot(model_file: Path) -> None:
    spec = loading.spec("ml", "ml_signal", {"model": str(model_file), "margin": "0.5"})
    first, second = backtest.run([EURUSD], [spec]), backtest.run([EURUSD], [spec])
    assert first.orders
    assert [o.id for o in first.orders] == [o.id for o in second.orders]
    assert not first.stopped

    engine = Engine([spec], clock=lambda: 0)
    restored = Engine([spec], clock=lambda: 0)
    snapshot = snapshots.decode_any(snapshots.encode_engine(1, engine))
    assert isinstance(snapshot, snapshots.SnapshotV4)
    restored.restore(snapshot.strategies)
    assert not restored.runner("ml").stopped


def test_ml_signal_without_its_model_or_with_another_format_does_not_start_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(loading.StrategyLoadError, match=r"model file .*nope.json: No such file or directory"):
        loading.spec("ml", "ml_signal", {"model": str(tmp_path / "nope.json")})
    other = tmp_path / "other.json"
    other.write_text('{"format": "something.v9", "lags": [1], "horizon": 1, "weights": ["1", "2"], "intercept": "0"}')
    with pytest.raises(loading.StrategyLoadError, match=r"expected format rrr.ml_signal.model.v1, got 'something.v9'"):
        loading.spec("ml", "ml_signal", {"model": str(other)})
    short = tmp_path / "short.json"
    short.write_text(
        '{"format": "rrr.ml_signal.model.v1", "lags": [1, 2], "horizon": 1, "weights": ["1"], "intercept": "0"}'
    )
    with pytest.raises(loading.StrategyLoadError, match=r"1 weights for 3 features"):
        loading.spec("ml", "ml_signal", {"model": str(short)})


def test_a_model_file_changed_since_the_snapshot_stops_the_strategy_rather_than_trade_differently(
    model_file: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model.json"
    copy.write_bytes(model_file.read_bytes())
    spec = loading.spec("ml", "ml_signal", {"model": str(copy)})
    data = snapshots.encode_engine(1, Engine([spec], clock=lambda: 0))
    copy.write_text(model_file.read_text().replace('"horizon": 20', '"horizon": 21'))
    restored = Engine([spec], clock=lambda: 0)
    snapshot = snapshots.decode_any(data)
    assert isinstance(snapshot, snapshots.SnapshotV4)
    restored.restore(snapshot.strategies)
    assert "changed since the snapshot" in restored.runner("ml").stopped
