"""The ``ml_signal`` strategy: a linear model trained offline (``rrr-train``) scores each quote; trade its sign.

The model file (JSON, ``rrr.ml_signal.model.v1``) holds the feature spec (``lags``), the weights and intercept
as decimal text (already folded with the training's standardisation), the horizon it was trained for and its
metrics. Features at a quote of a symbol, from the mids m_t of that symbol's quotes:

- for each lag k: the return (m_t - m_{t-k}) / m_{t-k};
- the relative spread (ask - bid) / m_t.

score = intercept + sum(weight_i * feature_i), computed in exact fractions (so the same on every machine and
after every restart); score > margin: target +qty, score < -margin: -qty, else keep. Defined once
max(lags) + 1 quotes of the symbol were seen.

The file is read and checked at start (``check_params``): missing, unreadable, of another format, or with
weights that do not match its features, the strategy does not start and the error says which.
"""

from __future__ import annotations

import hashlib
from collections import deque
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import msgspec

from rrr.shared.messages import QuoteRow
from rrr.strategy.api import Params, Strategy

MODEL_FORMAT = "rrr.ml_signal.model.v1"


class Model(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``rrr-train`` writes."""

    format: str
    lags: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=100_000)]], msgspec.Meta(min_length=1)]
    horizon: Annotated[int, msgspec.Meta(ge=1)]
    weights: list[str]  # decimal text, one per feature: the lags' returns, then the relative spread
    intercept: str
    metrics: dict[str, float] = {}
    trained_on: list[str] = []


class ModelError(ValueError):
    """The model file cannot be used (a ValueError: it fails the parameters' validation, naming the file)."""


def load_model(path: Path) -> tuple[Model, list[Fraction], Fraction, str]:
    """The model at ``path``, its weights and intercept as exact fractions, and the file's SHA-256.

    Raises:
        ModelError: the file is missing or unreadable, not a model of this format, or inconsistent.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model file {path}: {exc.strerror or exc} (train one with rrr-train)") from None
    try:
        model = msgspec.json.decode(data, type=Model)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelError(f"model file {path}: not a model of {MODEL_FORMAT}: {exc}") from None
    if model.format != MODEL_FORMAT:
        raise ModelError(f"model file {path}: expected format {MODEL_FORMAT}, got {model.format!r}")
    if len(model.weights) != len(model.lags) + 1:
        raise ModelError(
            f"model file {path}: {len(model.weights)} weights for {len(model.lags) + 1} features "
            f"(lags {model.lags} and the spread)"
        )
    try:
        weights = [Fraction(Decimal(w)) for w in model.weights]
        intercept = Fraction(Decimal(model.intercept))
    except (ArithmeticError, ValueError) as exc:
        raise ModelError(f"model file {path}: a weight is not a finite decimal number: {exc}") from None
    return model, weights, intercept, hashlib.sha256(data).hexdigest()


def features(mids: deque[Fraction] | list[Fraction], spread: Fraction, lags: list[int]) -> list[Fraction]:
    """The features at the last of ``mids`` (at least max(lags) + 1 of them), exactly."""
    now = mids[-1]
    out = [(now - mids[-1 - k]) / mids[-1 - k] for k in lags]
    out.append(spread / now)
    return out


class MlSignalParams(Params, frozen=True, kw_only=True):
    """Parameters of ``ml_signal``."""

    model: Annotated[str, msgspec.Meta(min_length=1, description="the model file rrr-train wrote")]
    margin: Decimal = Decimal(0)
    qty: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if not (self.qty.is_finite() and self.qty > 0):
            raise ValueError(f"ml_signal needs qty > 0, got {self.qty}")
        if not (self.margin.is_finite() and self.margin >= 0):
            raise ValueError(f"ml_signal needs margin >= 0, got {self.margin}")


class MlSignalState(msgspec.Struct):
    """Per symbol the last mids (exact, as ``n/d`` text) and the target; and the model file's digest."""

    model_sha256: str = ""
    mids: dict[str, list[str]] = {}
    targets: dict[str, Decimal] = {}


class MlSignal(Strategy[MlSignalParams]):
    """``ml_signal``: trade the sign of a linear model's score (see the module's docstring)."""

    @classmethod
    def check_params(cls, params: MlSignalParams) -> None:
        load_model(Path(params.model))

    def on_start(self) -> None:
        self.model, self.weights, self.intercept, self.digest = load_model(Path(self.params.model))
        self.depth = max(self.model.lags) + 1
        self.mids: dict[str, deque[Fraction]] = {}
        self.targets: dict[str, Decimal] = {}
        self.margin = Fraction(self.params.margin)

    def on_quote(self, quote: QuoteRow) -> None:
        scale = 10**quote.places
        mid = Fraction(quote.bid + quote.ask, 2 * scale)
        mids = self.mids.get(quote.symbol)
        if mids is None:
            mids = self.mids[quote.symbol] = deque(maxlen=self.depth)
        mids.append(mid)
        if len(mids) < self.depth:
            return
        x = features(mids, Fraction(quote.ask - quote.bid, scale), self.model.lags)
        score = self.intercept + sum((w * f for w, f in zip(self.weights, x, strict=True)), Fraction(0))
        held = self.targets.get(quote.symbol, Decimal(0))
        qty = self.params.qty
        wanted = qty if score > self.margin else -qty if score < -self.margin else held
        if wanted == held:
            return
        self.targets[quote.symbol] = wanted
        self.ctx.signal("up" if wanted > held else "down", wanted)
        self.ctx.submit("buy" if wanted > held else "sell", abs(wanted - held))

    def snapshot(self) -> MlSignalState:
        return MlSignalState(
            model_sha256=self.digest,
            mids={symbol: [str(m) for m in mids] for symbol, mids in self.mids.items()},
            targets=dict(self.targets),
        )

    def restore(self, state: MlSignalState) -> None:
        if state.model_sha256 != self.digest:
            raise ValueError(
                f"the model file {self.params.model} changed since the snapshot (sha256 {state.model_sha256[:12]} "
                f"then, {self.digest[:12]} now): its orders would differ from those already sent"
            )
        self.mids = {s: deque((Fraction(m) for m in mids), maxlen=self.depth) for s, mids in state.mids.items()}
        self.targets = dict(state.targets)

    state_type = MlSignalState
