"""``rrr-train``: fit the model of the ``ml_signal`` strategy on recorded quotes, and say whether it beats naive.

    rrr-train FILE... --out model.json [--lags 1,5,20] [--horizon 20] [--test-fraction 0.3]

Features are those of ``rrr.strategy.ml_signal.features`` (returns over the lags, relative spread), computed by
that very function; the label is whether the mid is higher ``horizon`` quotes later. Rows keep their time order:
the first part trains, the last ``--test-fraction`` tests (no shuffling: no future leaks into training). The
model is scikit-learn's logistic regression on standardised features; the standardisation is folded into the
weights, so the strategy computes the score with no library, in exact fractions. Two naive baselines on the
same test rows: always the training majority, and the sign of the last return (momentum). The model file
(``rrr.ml_signal.model.v1``) holds the feature spec, weights, horizon, the metrics and the files' ids.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import msgspec

from rrr.market_data.replay import UnsupportedFileError, read_quotes, source_id
from rrr.shared.errors import BadRowError
from rrr.strategy.ml_signal import MODEL_FORMAT, Model, features


def dataset(files: Sequence[Path], lags: list[int], horizon: int) -> tuple[list[list[float]], list[int]]:
    """Features and labels of every quote with ``max(lags)`` quotes before it and ``horizon`` after it, in
    time order (files one after the other, each symbol on its own)."""
    xs: list[list[float]] = []
    ys: list[int] = []
    depth = max(lags) + 1
    for path in files:
        series: dict[str, list[tuple[Fraction, Fraction]]] = {}
        for row in read_quotes(path):
            mid = (Fraction(row.bid) + Fraction(row.ask)) / 2
            series.setdefault(row.symbol, []).append((mid, Fraction(row.ask) - Fraction(row.bid)))
        for quotes in series.values():
            window: deque[Fraction] = deque(maxlen=depth)
            for t, (mid, spread) in enumerate(quotes):
                window.append(mid)
                if len(window) < depth or t + horizon >= len(quotes):
                    continue
                xs.append([float(f) for f in features(window, spread, lags)])
                ys.append(1 if quotes[t + horizon][0] > mid else 0)
    return xs, ys


def _accuracy(predicted: Sequence[int], actual: Sequence[int]) -> float:
    return sum(1 for p, a in zip(predicted, actual, strict=True) if p == a) / len(actual)


def train(files: Sequence[Path], lags: list[int], horizon: int, test_fraction: float) -> Model:
    """Fit and evaluate the model (see the module's docstring).

    Raises:
        ValueError: too few rows, or a single class in the training part.
    """
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss, roc_auc_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ValueError("rrr-train needs scikit-learn: pip install 'rrralgorithms[ml]'") from None
    xs, ys = dataset(files, lags, horizon)
    cut = int(len(xs) * (1 - test_fraction))
    if cut < 50 or len(xs) - cut < 50:
        raise ValueError(f"{len(xs)} rows: too few for a training part and a test part of 50 rows each")
    if len(set(ys[:cut])) < 2:
        raise ValueError("the training part has a single label: nothing to learn")
    scaler = StandardScaler().fit(xs[:cut])
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(xs[:cut]), ys[:cut])
    test_x, test_y = scaler.transform(xs[cut:]), ys[cut:]
    proba = model.predict_proba(test_x)[:, 1]
    majority = 1 if sum(ys[:cut]) * 2 >= cut else 0
    metrics = {
        "test_accuracy": _accuracy([int(p > 0.5) for p in proba], test_y),
        "test_log_loss": float(log_loss(test_y, proba, labels=[0, 1])),
        "test_auc": float(roc_auc_score(test_y, proba)) if len(set(test_y)) == 2 else math.nan,
        "baseline_majority_accuracy": _accuracy([majority] * len(test_y), test_y),
        "baseline_momentum_accuracy": _accuracy([int(x[0] > 0) for x in xs[cut:]], test_y),
        "train_rows": float(cut),
        "test_rows": float(len(xs) - cut),
    }
    # score = b + sum(c_i * (x_i - mean_i) / scale_i) = (b - sum(c_i * mean_i / scale_i)) + sum((c_i / scale_i) * x_i)
    coef = [float(c) for c in model.coef_[0]]
    means, scales = [float(m) for m in scaler.mean_], [float(x) for x in scaler.scale_]
    weights = [c / x for c, x in zip(coef, scales, strict=True)]
    intercept = float(model.intercept_[0]) - sum(c * m / x for c, m, x in zip(coef, means, scales, strict=True))
    return Model(
        format=MODEL_FORMAT,
        lags=lags,
        horizon=horizon,
        weights=[repr(w) for w in weights],
        intercept=repr(intercept),
        metrics={k: round(v, 6) for k, v in metrics.items()},
        trained_on=[f"{path.name} {source_id(path)}" for path in files],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-train``."""
    parser = argparse.ArgumentParser(prog="rrr-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="quote files (.csv, .parquet)")
    parser.add_argument("--out", type=Path, required=True, help="the model file to write (JSON)")
    parser.add_argument("--lags", default="1,5,20", help="return lags in quotes, comma-separated")
    parser.add_argument("--horizon", type=int, default=20, help="quotes ahead the label looks")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="the last part of the rows, for testing")
    args = parser.parse_args(argv)
    try:
        lags = sorted({int(x) for x in args.lags.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--lags: expected integers separated by commas, got {args.lags!r}")
    if not lags or lags[0] < 1 or args.horizon < 1 or not 0 < args.test_fraction < 1:
        parser.error("expected --lags >= 1, --horizon >= 1 and 0 < --test-fraction < 1")
    try:
        model = train(args.files, lags, args.horizon, args.test_fraction)
    except (ValueError, BadRowError, UnsupportedFileError) as exc:
        print(f"rrr-train: error: {exc}", file=sys.stderr)
        return 2
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(model)) + b"\n")
    m = model.metrics
    print(
        f"wrote {args.out}: test accuracy {m['test_accuracy']:.4f} (log loss {m['test_log_loss']:.4f}, AUC "
        f"{m['test_auc']:.4f}) against naive {m['baseline_majority_accuracy']:.4f} (majority) and "
        f"{m['baseline_momentum_accuracy']:.4f} (momentum), on {int(m['test_rows']):,} test rows after "
        f"{int(m['train_rows']):,} training rows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
