"""Event-time watermarks: a message at or before the newest applied one of its key is never applied again."""

from __future__ import annotations

import msgspec

from rrr.shared.watermark import MAX_IDS_AT_ONE_TIME, Watermark


def test_watermark_sees_nothing_before_the_first_message() -> None:
    assert not Watermark().seen(0, "a")


def test_watermark_sees_an_applied_message_and_everything_older_but_not_something_newer() -> None:
    mark = Watermark()
    mark.advance(100, "q1")
    assert mark.seen(100, "q1")
    assert mark.seen(99, "q0")
    assert not mark.seen(101, "q2")


def test_watermark_tells_messages_of_the_same_nanosecond_apart_by_id() -> None:
    mark = Watermark()
    mark.advance(100, "q1")
    assert not mark.seen(100, "q2")
    mark.advance(100, "q2")
    assert mark.seen(100, "q1")
    assert mark.seen(100, "q2")


def test_watermark_forgets_the_ids_of_an_older_time_when_it_moves_on() -> None:
    mark = Watermark()
    mark.advance(100, "q1")
    mark.advance(200, "q2")
    assert mark.ids == ["q2"]
    assert mark.seen(100, "anything")


def test_watermark_keeps_a_bounded_number_of_ids_at_one_time() -> None:
    mark = Watermark()
    for i in range(MAX_IDS_AT_ONE_TIME + 50):
        mark.advance(100, f"q{i}")
    assert len(mark.ids) == MAX_IDS_AT_ONE_TIME


def test_watermark_survives_a_snapshot_round_trip() -> None:
    mark = Watermark()
    mark.advance(5, "a")
    mark.advance(5, "b")
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(mark), type=Watermark)
    assert (back.ts, back.ids) == (5, ["a", "b"])
