"""How persistence cuts a batch of messages into transactions: bounded in rows, never splitting a message."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from rrr.persistence.handlers import _chunks
from rrr.persistence.store import rows_of
from rrr.shared.bus import Delivery
from rrr.shared.messages import QUOTE_BATCH_MAX, Message, QuoteBatch, QuoteRow
from tests.support.factories import make_quote


def _batch(rows: int) -> QuoteBatch:
    quotes = [QuoteRow(id=f"q{i}", symbol="EURUSD", ts_event=i, bid=1, ask=2, places=0) for i in range(rows)]
    return QuoteBatch(id=f"b{rows}", ts_event=0, ts_init=0, source="test", quotes=quotes)


def _deliveries(messages: list[Message], seqs: list[int] | None = None) -> list[Delivery[Any]]:
    seqs = seqs or list(range(1, len(messages) + 1))
    return [
        Delivery(Msg(None, subject="md.quotes.0.test", reply=f"$JS.ACK.RRR_MD.c.1.{seq}.{seq}.0.0"), m)  # type: ignore[arg-type]
        for m, seq in zip(messages, seqs, strict=True)
    ]


def _sizes(messages: list[Message], max_rows: int, seqs: list[int] | None = None) -> list[list[int]]:
    return [[rows_of(d.message) for d in chunk] for chunk in _chunks(_deliveries(messages, seqs), max_rows)]


def test_the_messages_of_one_envelope_are_never_parted_whatever_the_bound() -> None:
    # Six signals, the middle four from one envelope (one stream sequence): a position covers all or none.
    messages: list[Message] = [make_quote() for _ in range(6)]
    assert _sizes(messages, 1, seqs=[1, 2, 2, 2, 2, 3]) == [[1], [1, 1, 1, 1], [1]]
    assert _sizes(messages, 2, seqs=[1, 2, 2, 2, 2, 3]) == [[1, 1, 1, 1, 1], [1]]


def test_full_quote_batches_go_one_per_transaction_when_two_exceed_the_bound() -> None:
    full = _batch(QUOTE_BATCH_MAX)
    assert _sizes([full, full, full], 6000) == [[4096], [4096], [4096]]


def test_small_messages_are_gathered_up_to_the_bound_in_stream_order_and_a_larger_one_goes_alone() -> None:
    messages: list[Message] = [_batch(1500), make_quote(), make_quote(), _batch(498), _batch(3000), make_quote()]
    assert _sizes(messages, 2000) == [[1500, 1, 1, 498], [3000], [1]]


def test_an_orders_furthest_status_in_a_batch_is_the_highest_rank_then_the_most_filled() -> None:
    from decimal import Decimal

    from rrr.persistence.store import _furthest

    def row(event: str, order: str, status: str | None, filled: str | None, ts: int) -> tuple[object, ...]:
        return (event, order, "X", "k", status, None, None if filled is None else Decimal(filled), None, None, None, ts)

    journal = [
        row("a:acc", "a", "accepted", "0", 1),
        row("a:1", "a", "partially_filled", "1", 2),
        row("a:2", "a", "partially_filled", "3", 3),
        row("a:trig", "a", None, None, 4),
        row("b:acc", "b", "accepted", "0", 5),
        row("c:acc", "c", "accepted", "0", 6),
        row("c:1", "c", "filled", "2", 7),
        row("c:late", "c", "partially_filled", "1", 8),
    ]
    # Only moves past acceptance are updates; the most filled of equals; a later, lesser event changes nothing.
    assert _furthest(journal) == [("a", "partially_filled", Decimal(3), 3), ("c", "filled", Decimal(2), 7)]
