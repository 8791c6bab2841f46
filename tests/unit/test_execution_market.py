"""Execution's copy of its shard's market data: the newest messages, bounded in count and bytes."""

from __future__ import annotations

from rrr.execution.market import MarketCopy


def test_the_market_copy_keeps_the_newest_messages_within_its_bounds() -> None:
    copy = MarketCopy(maxlen=3, max_bytes=10)
    for seq in range(1, 5):
        copy.add(seq, f"md.quotes.0.s{seq}", b"xx")
    assert (len(copy), copy.get(1), copy.get(4)) == (3, None, ("md.quotes.0.s4", b"xx"))
    copy.add(5, "md.quotes.0.big", b"y" * 9)  # 9 + 2 + 2 bytes > 10: the older ones go
    assert (len(copy), copy.get(3), copy.get(5)) == (1, None, ("md.quotes.0.big", b"y" * 9))
    copy.add(5, "md.quotes.0.big", b"z")  # the same sequence again replaces it
    assert (len(copy), copy.get(5)) == (1, ("md.quotes.0.big", b"z"))
