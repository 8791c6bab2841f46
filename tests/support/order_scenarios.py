"""Limit and stop orders over a recorded day, and what they must come to: for the scenario and fault tests.

The orders are sent, as a strategy would, naming the first quote of the file once the replay stored it
(execution catches them up on whatever it matched meanwhile). What each must come to is computed apart from
the system: the file read here with ``csv`` and the rules applied by ``tests.support.matching_reference``.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import asyncpg
import msgspec

from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import OrderFilled, SubmitOrder, order_event_decoder
from rrr.shared.positions import Position
from tests.support.factories import make_order
from tests.support.matching_reference import RefOrder, RefOutcome, RefQuote, reference
from tests.support.streams import StoredQuote, stored_quotes, stream_messages
from tests.support.waiting import WaitTimeoutError, wait_until

DATA = Path(__file__).parents[1] / "data"
BTCUSDT = DATA / "btcusdt_quotes_2021-01-08.csv"
SYMBOL = "BTCUSDT"
# What execution charges in these scenarios (RRR_EXECUTION_FEE_BPS, RRR_EXECUTION_SLIPPAGE_BPS).
FEE_BPS = Decimal("7.5")
SLIPPAGE_BPS = Decimal(1)
VENUE_ENV = {"RRR_EXECUTION_FEE_BPS": str(FEE_BPS), "RRR_EXECUTION_SLIPPAGE_BPS": str(SLIPPAGE_BPS)}
# 2021-01-08T00:00:30Z, in the middle of the day's 46 seconds.
_HALF_TIME = 1_610_064_030_000_000_000

# The day rises from 39,433 to 39,550 in 33 s, then falls back to 39,453: each order does something.
ORDERS: dict[str, RefOrder] = {
    "buy-limit": RefOrder("buy", Decimal("0.5"), "limit", limit=Decimal("39460")),
    "sell-limit": RefOrder("sell", Decimal("0.25"), "limit", limit=Decimal("39500")),
    "sell-limit-high": RefOrder("sell", Decimal("3"), "limit", limit=Decimal("39540")),
    "buy-limit-low": RefOrder("buy", Decimal("2"), "limit", limit=Decimal("39455")),
    "buy-stop-limit": RefOrder("buy", Decimal("1"), "stop_limit", limit=Decimal("39495"), stop=Decimal("39490")),
    "buy-stop": RefOrder("buy", Decimal("2"), "stop_market", stop=Decimal("39520")),
    "gtd-expires": RefOrder("buy", Decimal("0.1"), "limit", limit=Decimal("39430"), tif="gtd", expire_ts=_HALF_TIME),
    "post-only": RefOrder("sell", Decimal("0.3"), "limit", limit=Decimal("39545"), post_only=True),
}


def split_day(into: Path, first_rows: int) -> tuple[Path, Path]:
    """The day in two files, its first ``first_rows`` quotes and the rest, to replay one after the other."""
    header, *rows = BTCUSDT.read_text().splitlines(keepends=True)
    first, second = into / "day-1.csv", into / "day-2.csv"
    first.write_text("".join([header, *rows[:first_rows]]))
    second.write_text("".join([header, *rows[first_rows:]]))
    return first, second


def _ns(text: str) -> int:
    """An ISO-8601 UTC time with milliseconds as integer nanoseconds, exactly (no float)."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (int(stamp.replace(microsecond=0).timestamp()) * 1_000_000 + stamp.microsecond) * 1000


def file_quotes(path: Path = BTCUSDT) -> list[RefQuote]:
    """The file's quotes, read here without the system's reader."""
    with path.open(newline="") as f:
        return [
            RefQuote(
                ts=_ns(row["ts"]), bid=Decimal(row["bid"]), ask=Decimal(row["ask"]),
                bid_size=Decimal(row["bid_size"]), ask_size=Decimal(row["ask_size"]),
            )
            for row in csv.DictReader(f)
        ]  # fmt: skip


def expected() -> dict[str, RefOutcome]:
    """What each order comes to, placed at the file's first quote."""
    quotes = file_quotes()
    return {name: reference(o, quotes, slippage_bps=SLIPPAGE_BPS, fee_bps=FEE_BPS) for name, o in ORDERS.items()}


async def first_quote(bus: Bus, timeout_s: float = 30.0) -> StoredQuote:
    """Wait until the replay stored the file's first quote; return it with its place in the stream."""
    found: list[StoredQuote] = []

    async def _stored() -> bool:
        found[:] = (await stored_quotes(bus.js, {SYMBOL}))[:1]
        return bool(found)

    await wait_until(_stored, timeout_s, "the file's first quote in RRR_MD")
    return found[0]


def order_id(name: str, tag: str) -> str:
    return f"desk-{tag}-{name}"


async def send_orders(bus: Bus, at: StoredQuote, tag: str, shards: int = 1) -> dict[str, SubmitOrder]:
    """Send every order of ``ORDERS`` naming the quote ``at``, as strategy ``desk``; return them by name."""
    sent = {}
    for name, ref in ORDERS.items():
        order = make_order(
            SYMBOL, id=order_id(name, tag), strategy="desk", side="buy" if ref.side == "buy" else "sell", qty=ref.qty,
            quote_bid=at.quote.bid, quote_ask=at.quote.ask, order_type=ref.kind,  # type: ignore[arg-type]
            limit_price=ref.limit, stop_price=ref.stop, tif=ref.tif,  # type: ignore[arg-type]
            expire_ts=ref.expire_ts, post_only=ref.post_only,
        )  # fmt: skip
        # Sent at the quote: its event time is the quote's (a fill where it is placed carries it).
        order = msgspec.structs.replace(
            order, quote_seq=at.seq, quote_index=at.index, quote_ts=at.quote.ts_event, ts_event=at.quote.ts_event
        )
        await bus.publish_persistent(subjects.order_command(SYMBOL, shards), order)
        sent[name] = order
    return sent


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds of one order."""

    status: str | None
    fills: list[tuple[Fraction, Fraction, Fraction, int]]  # qty, price, fee, ts_event, in fill order


async def stored(dsn: str, tag: str) -> dict[str, Stored]:
    """Each order's row and fills, by name."""
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for name in ORDERS:
            oid = order_id(name, tag)
            status = await conn.fetchval("SELECT status FROM orders WHERE client_order_id = $1", oid)
            rows = await conn.fetch(
                "SELECT qty, price, fee, ts_event FROM fills WHERE client_order_id = $1 "
                "ORDER BY split_part(fill_id, ':', array_length(string_to_array(fill_id, ':'), 1))::int",
                oid,
            )
            out[name] = Stored(status, [(Fraction(r[0]), Fraction(r[1]), Fraction(r[2]), int(r[3])) for r in rows])
        return out
    finally:
        await conn.close()


def wanted(outcome: RefOutcome, quotes: list[RefQuote]) -> Stored:
    """What the database must hold of an order whose independent outcome is ``outcome``."""
    end = {"filled": "filled", "canceled": "canceled", "expired": "expired", "rejected": "rejected"}.get(outcome.end)
    status = end or ("partially_filled" if outcome.fills else "accepted")
    return Stored(status, [(f.qty, f.price, f.fee, quotes[f.quote].ts) for f in outcome.fills])


async def wait_for_outcomes(dsn: str, tag: str, timeout_s: float) -> tuple[dict[str, Stored], dict[str, Stored]]:
    """Poll until the database holds what every order must come to, or the deadline passes; return both (the
    caller asserts they are equal, and prints ``report``)."""
    quotes = file_quotes()
    want = {name: wanted(outcome, quotes) for name, outcome in expected().items()}
    got: dict[str, Stored] = {}

    async def _there() -> bool:
        got.update(await stored(dsn, tag))
        return got == want

    with contextlib.suppress(WaitTimeoutError):
        await wait_until(_there, timeout_s, "the stored orders and fills", interval_s=0.2)
    return got, want


def report(got: dict[str, Stored], want: dict[str, Stored]) -> str:
    """One line per order: its status and fills, stored and expected."""
    lines = []
    for name in ORDERS:
        g, w = got.get(name), want[name]
        filled = sum((f[0] for f in w.fills), Fraction(0))
        mark = "ok" if g == w else "DIFFERS"
        stored_fills = "none" if g is None else f"{g.status} {len(g.fills)} fills"
        lines.append(
            f"{name:<16} expected {w.status} {len(w.fills)} fills of {float(filled):g} | stored {stored_fills} {mark}"
        )
        if g is not None and g != w:
            at = next((i for i, (a, b) in enumerate(zip(g.fills, w.fills, strict=False)) if a != b), None)
            if at is not None:
                lines.append(f"  fill {at + 1}: stored {g.fills[at]}, expected {w.fills[at]}")
    return "\n".join(lines)


async def fill_events(bus: Bus, tag: str, shards: int = 1) -> list[OrderFilled]:
    """Every fill event of the scenario's orders on the event stream, copies included, in stream order."""
    msgs = await stream_messages(bus.js, "RRR_EVT", subjects.order_event(SYMBOL, shards))
    events = [order_event_decoder.decode(m.data) for m in msgs]
    prefix = f"desk-{tag}-"
    return [e for e in events if isinstance(e, OrderFilled) and e.client_order_id.startswith(prefix)]


def position_of(fills: list[OrderFilled]) -> tuple[Fraction, Fraction, Fraction, int]:
    """The position ``fills`` make, applied in their order: qty, average price, realized PnL, fills."""
    position = Position(SYMBOL)
    for fill in fills:
        position.apply_fill(fill.side, fill.qty, fill.price, fill.fee)
    return position.qty, position.avg_price, position.realized_pnl, position.fills
