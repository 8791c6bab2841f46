"""What a backtest made, per strategy: trades, PnL, drawdown, Sharpe, turnover; as a table and a picture.

Definitions (quote currency throughout; one point per quote of the backtest):

- PnL: realized (average cost, fees charged) plus open positions valued at their symbol's latest mid.
- max drawdown: the largest fall of PnL from its running peak.
- Sharpe: mean / standard deviation (population) of the PnL's change from one quote to the next, per
  quote and not annualised: the quotes of a recorded file are not evenly spaced in time, so no honest
  annualisation factor exists.
- turnover: the notional traded, sum of qty * price of every fill.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from rrr.shared.errors import RRRError
from rrr.shared.positions import Position

if TYPE_CHECKING:
    from rrr.deploy.backtest import EquityCurve, Result


class ReportError(RRRError):
    """The report cannot be written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write the report {path}: {reason}")


@dataclass(frozen=True, slots=True)
class StrategyFigures:
    """One strategy's figures."""

    strategy: str
    orders: int
    fills: int
    rejected: int
    volume: Decimal
    turnover: Decimal
    fees: Decimal
    realized: Fraction
    total: float
    max_drawdown: float
    sharpe_per_quote: float
    stopped: str


def drawdown(pnl: Sequence[float]) -> list[float]:
    """At each point, how far PnL is below its running peak (<= 0)."""
    peak = -math.inf
    out = []
    for value in pnl:
        peak = max(peak, value)
        out.append(value - peak)
    return out


def sharpe(pnl: Sequence[float]) -> float:
    """Mean over standard deviation of the changes of ``pnl`` (0 when it never changes)."""
    steps = [b - a for a, b in itertools.pairwise(pnl)]
    if not steps:
        return 0.0
    mean = sum(steps) / len(steps)
    std = math.sqrt(sum((s - mean) ** 2 for s in steps) / len(steps))
    return mean / std if std else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    """A backtest's figures and curves."""

    result: Result
    figures: list[StrategyFigures]

    def table(self, title: str) -> str:
        """The figures as a text table."""
        r = self.result
        rate = r.quotes / r.seconds if r.seconds else 0.0
        lines = [
            f"backtest of {title}: {r.quotes:,} quotes in {r.seconds:.2f} s ({rate:,.0f} quotes/s), "
            f"{len(r.signals):,} signals, {len(r.orders):,} orders, {len(r.fills):,} fills"
            + (f", {r.refused} quotes refused" if r.refused else ""),
            "",
            f"{'strategy':<20} {'orders':>7} {'fills':>7} {'rejected':>8} {'volume':>10} {'turnover':>16} "
            f"{'fees':>10} {'realized':>12} {'PnL':>12} {'max DD':>12} {'Sharpe/q':>9}",
        ]
        for f in self.figures:
            lines.append(
                f"{f.strategy:<20} {f.orders:>7,} {f.fills:>7,} {f.rejected:>8,} {f.volume:>10} "
                f"{float(f.turnover):>16,.2f} {float(f.fees):>10.4f} {float(f.realized):>12.6f} {f.total:>12.6f} "
                f"{f.max_drawdown:>12.6f} {f.sharpe_per_quote:>9.4f}"
            )
            if f.stopped:
                lines.append(f"  stopped: {f.stopped}")
        for symbol, p in sorted(r.positions.items()):
            lines.append(
                f"position {symbol}: qty {p.qty} avg_price {p.avg_price} realized_pnl {p.realized_pnl} "
                f"({p.version} fills)"
            )
        lines.append("PnL in the quote currency; Sharpe per quote (mean/std of PnL changes), not annualised.")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        """Write the equity curves and drawdowns as a PNG (matplotlib) or an SVG (no dependency).

        Raises:
            ReportError: an unknown suffix, matplotlib missing for a PNG, or the file cannot be written.
        """
        suffix = path.suffix.lower()
        try:
            if suffix == ".png":
                _png(self, path)
            elif suffix == ".svg":
                path.write_text(_svg(self))
            else:
                raise ReportError(path, f"expected a .png or .svg file, got {suffix or 'no suffix'}")
        except OSError as exc:
            raise ReportError(path, exc.strerror or str(exc)) from None


def build_report(result: Result) -> Report:
    """The figures of every strategy of ``result``."""
    figures = []
    for strategy, curve in result.equity.items():
        prefix = f"{strategy}-"
        fills = [f for f in result.fills if f.client_order_id.startswith(prefix)]
        positions: dict[str, Position] = {}
        for fill in fills:
            positions.setdefault(fill.symbol, Position(fill.symbol)).apply_fill(
                fill.side, fill.qty, fill.price, fill.fee
            )
        figures.append(
            StrategyFigures(
                strategy=strategy,
                orders=sum(1 for o in result.orders if o.strategy == strategy),
                fills=len(fills),
                rejected=sum(1 for x in result.rejections if x.strategy == strategy),
                volume=sum((f.qty for f in fills), Decimal(0)),
                turnover=sum((f.qty * f.price for f in fills), Decimal(0)),
                fees=sum((f.fee for f in fills), Decimal(0)),
                realized=sum((p.realized_pnl for p in positions.values()), Fraction(0)),
                total=curve.pnl[-1] if curve.pnl else 0.0,
                max_drawdown=min(drawdown(curve.pnl), default=0.0),
                sharpe_per_quote=sharpe(curve.pnl),
                stopped=result.stopped.get(strategy, ""),
            )
        )
    return Report(result, figures)


def _times(curve: EquityCurve) -> list[datetime]:
    return [datetime.fromtimestamp(ts / 1e9, tz=UTC) for ts in curve.ts]


def _png(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError(
            path, "a PNG needs matplotlib (pip install 'rrralgorithms[report]'); an .svg needs nothing"
        ) from None
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}, constrained_layout=True
    )
    for f in report.figures:
        curve = report.result.equity[f.strategy]
        times = _times(curve)
        top.plot(times, curve.pnl, linewidth=1.2, label=f"{f.strategy}: PnL {f.total:+.5f}, {f.fills} fills")
        dd = drawdown(curve.pnl)
        bottom.fill_between(times, dd, 0, step="post", alpha=0.35, label=f"{f.strategy}: max {f.max_drawdown:.5f}")
        bottom.plot(times, dd, linewidth=0.8)
    top.axhline(0, color="grey", linewidth=0.6)
    top.set_ylabel("PnL (quote currency)")
    top.set_title(
        f"Backtest: {report.result.quotes:,} quotes, {len(report.result.fills):,} fills "
        "(PnL = realized incl. fees + open position at mid)",
        fontsize=11,
    )
    top.legend(loc="upper right", fontsize=9, framealpha=0.9)
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown")
    bottom.legend(loc="lower left", fontsize=9, framealpha=0.9)
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    bottom.set_xlabel("event time (UTC)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _svg(report: Report, width: int = 900, height: int = 560) -> str:
    """Equity curves (top) and drawdowns (bottom) as a self-contained SVG, drawn by hand."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]
    pad, split = 60, int(height * 0.62)
    top = 40 + 16 * len(report.figures)  # below the title and one line per strategy
    curves = [report.result.equity[f.strategy] for f in report.figures]
    times = [t for c in curves for t in c.ts] or [0, 1]
    t0, t1 = min(times), max(times) or 1
    values = [v for c in curves for v in c.pnl] or [0.0]
    drops = [v for c in curves for v in drawdown(c.pnl)] or [0.0]

    def x(ts: int) -> float:
        return pad + (ts - t0) / ((t1 - t0) or 1) * (width - 2 * pad)

    def path(ts: Sequence[int], ys: Sequence[float], lo: float, hi: float, top: int, bottom: int) -> str:
        span = (hi - lo) or 1.0
        step = max(1, len(ts) // 2000)  # at most about 2,000 points a line
        points = " ".join(
            f"{x(t):.1f},{bottom - (y - lo) / span * (bottom - top):.1f}"
            for t, y in zip(ts[::step], ys[::step], strict=False)
        )
        return points

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{pad}" y="24" font-size="15">Backtest: {report.result.quotes:,} quotes, '
        f"{len(report.result.fills):,} fills; PnL (top) and drawdown (bottom), quote currency</text>",
    ]
    lo, hi = min([*values, 0.0]), max([*values, 0.0])
    dlo = min(drops)
    # The two panels' frames, and PnL's zero.
    zero = (split - 20) - (0.0 - lo) / ((hi - lo) or 1.0) * (split - 20 - top)
    parts.append(
        f'<rect x="{pad}" y="{top}" width="{width - 2 * pad}" height="{split - 20 - top}" fill="none" stroke="#ccc"/>'
    )
    parts.append(
        f'<rect x="{pad}" y="{split + 10}" width="{width - 2 * pad}" height="{height - split - 50}" '
        'fill="none" stroke="#ccc"/>'
    )
    parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#999"/>')
    for i, (f, c) in enumerate(zip(report.figures, curves, strict=True)):
        colour = colours[i % len(colours)]
        pnl_points = path(c.ts, c.pnl, lo, hi, top, split - 20)
        drawdown_points = path(c.ts, drawdown(c.pnl), dlo, 0.0, split + 10, height - 40)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{pnl_points}"/>')
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1" points="{drawdown_points}"/>')
        parts.append(
            f'<text x="{pad}" y="{46 + 16 * i}" fill="{colour}">'
            f"{f.strategy}: PnL {f.total:+.6f}, "
            f"max drawdown {f.max_drawdown:.6f}, {f.fills} fills</text>"
        )
    for label, y in ((f"{hi:.5f}", top + 4), (f"{lo:.5f}", split - 20), ("0", split + 14), (f"{dlo:.5f}", height - 40)):
        parts.append(f'<text x="4" y="{y}" font-size="10">{label}</text>')
    start = datetime.fromtimestamp(t0 / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(t1 / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")
    parts.append(f'<text x="{pad}" y="{height - 12}">{start} UTC</text>')
    parts.append(f'<text x="{width - pad}" y="{height - 12}" text-anchor="end">{end} UTC</text>')
    parts.append("</svg>")
    return "\n".join(parts)
