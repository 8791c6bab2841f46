"""What PostgreSQL holds after a replay, against what the file implies: exact counts, for the fault suite."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import asyncpg

from rrr.market_data.replay import source_id
from tests.support.reference import Expected, sma_cross_expectations


@dataclass(frozen=True, slots=True)
class TableCount:
    """Rows of one table against the ids the file implies."""

    stored: int
    expected: int
    duplicated: int  # rows beyond one per id
    missing: int  # expected ids with no row
    unexpected: int  # rows whose id the file does not imply

    @property
    def exact(self) -> bool:
        """Every expected row once, nothing else."""
        return self.stored == self.expected and not (self.duplicated or self.missing or self.unexpected)


@dataclass(slots=True)
class Comparison:
    """Every table of one replay, and the final position."""

    tables: dict[str, TableCount] = field(default_factory=dict)
    position: tuple[Fraction, Fraction, Fraction, int] | None = None
    expected_position: tuple[Fraction, Fraction, Fraction, int] | None = None

    @property
    def exact(self) -> bool:
        """All tables exact and the position equal to the reference's."""
        return all(t.exact for t in self.tables.values()) and self.position == self.expected_position

    def __str__(self) -> str:
        lines = [
            f"{name:<8} stored={t.stored} expected={t.expected} duplicated={t.duplicated} "
            f"missing={t.missing} unexpected={t.unexpected}"
            for name, t in self.tables.items()
        ]
        lines.append(
            f"position (qty, avg, realized, fills) stored={_show(self.position)} "
            f"expected={_show(self.expected_position)}"
        )
        return "\n".join(lines)


def _show(position: tuple[Fraction, Fraction, Fraction, int] | None) -> str:
    if position is None:
        return "none"
    qty, avg, pnl, fills = position
    return f"({qty}, {avg}, {pnl}, {fills})"


def _count(stored: int, ids: set[str], expected: set[str]) -> TableCount:
    return TableCount(
        stored=stored,
        expected=len(expected),
        duplicated=stored - len(ids),
        missing=len(expected - ids),
        unexpected=len(ids - expected),
    )


async def compare(dsn: str, path: Path, expected: Expected | None = None, *, strategy: str = "sma_cross") -> Comparison:
    """Compare what ``dsn`` holds with what replaying the one-symbol file ``path`` implies."""
    expected = expected or sma_cross_expectations(path)
    source = source_id(path)
    orders = {f"{strategy}-{source}:{o.line}" for o in expected.orders}
    want = {
        "quotes": {f"{source}:{line}" for line in expected.quote_lines},
        "signals": {f"{strategy}:{source}:{line}" for line in expected.cross_lines},
        "orders": orders,
        "fills": {f"{strategy}-{source}:{o.line}:1" for o in expected.orders if not o.rejected},
    }
    quote_ids, order_ids = f"{source}:%", f"{strategy}-{source}:%"
    queries = {
        "quotes": ("SELECT id FROM quotes WHERE id LIKE $1", quote_ids),
        "signals": ("SELECT id FROM signals WHERE quote_id LIKE $1", quote_ids),
        "orders": ("SELECT client_order_id FROM orders WHERE client_order_id LIKE $1", order_ids),
        "fills": ("SELECT fill_id FROM fills WHERE client_order_id LIKE $1", order_ids),
    }
    result = Comparison()
    conn = await asyncpg.connect(dsn)
    try:
        for table, (sql, pattern) in queries.items():
            rows = await conn.fetch(sql, pattern)
            ids = {r[0] for r in rows}
            result.tables[table] = _count(len(rows), ids, want[table])
        symbol = await conn.fetchval("SELECT symbol FROM quotes WHERE id LIKE $1 LIMIT 1", f"{source}:%")
        row = await conn.fetchrow(
            "SELECT qty, avg_price, realized_pnl, version FROM positions WHERE symbol = $1", symbol
        )
        if row is not None:
            result.position = (Fraction(row[0]), Fraction(row[1]), Fraction(row[2]), int(row[3]))
    finally:
        await conn.close()
    ref = expected.position
    result.expected_position = (ref.qty, ref.avg_price, ref.realized_pnl, ref.fills)
    return result


async def wait_for_exact(
    dsn: str, path: Path, *, timeout_s: float, strategy: str = "sma_cross", expected: Expected | None = None
) -> Comparison:
    """Poll until the database holds exactly what ``path`` implies (``expected``, by default sma_cross's), or the
    deadline passes; return the last comparison either way (the caller asserts ``.exact`` and prints it)."""
    expected = expected or sma_cross_expectations(path)
    deadline = time.monotonic() + timeout_s
    while True:
        result = await compare(dsn, path, expected, strategy=strategy)
        if result.exact or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)  # polling a condition in another process, bounded by the deadline
