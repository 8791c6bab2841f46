"""The subject tap decodes live messages, as a separate process against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path

import nats

from rrr.shared import subjects
from rrr.shared.bus import MSG_ID, Outgoing, pack
from rrr.shared.messages import Quote, StrategyAt, encode
from tests.support.factories import make_order, make_order_rejected

TAP = Path(sys.executable).parent / "rrr-tap"


async def _start_tap(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        str(TAP), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    # The tap says so on stderr once it is subscribed; only then is a publish sure to reach it.
    try:
        ready = await asyncio.wait_for(proc.stderr.readline(), timeout=20)
        assert ready.startswith(b"# tapping"), ready
    except BaseException:
        # A tap that did not start as expected is not left behind, waiting for messages that never come.
        proc.kill()
        await proc.wait()
        raise
    return proc


async def test_tap_prints_each_live_message_decoded_and_flags_undecodable_ones(nats_url: str) -> None:
    proc = await _start_tap("md.>", "--json", "--count", "2", "--nats-url", nats_url)
    quote = Quote(id="q-1", ts_event=1, ts_init=2, symbol="EURUSD", bid=Decimal("1.121200"), ask=Decimal("1.121720"))
    nc = await nats.connect(nats_url)
    try:
        await nc.publish(subjects.quote("EURUSD", 1), encode(quote))
        await nc.publish("md.quote.0.EURUSD", b"\x00garbage")
        await nc.flush()
    finally:
        await nc.close()
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err
    first, second = (json.loads(line) for line in out.decode().splitlines())
    assert first == {
        "type": "quote.v1",
        "subject": "md.quote.0.EURUSD",
        "id": "q-1",
        "ts_event": 1,
        "ts_init": 2,
        "symbol": "EURUSD",
        "bid": "1.121200",
        "ask": "1.121720",
    }
    assert second["type"] == "undecodable"
    assert second["bytes"] == len(b"\x00garbage")


async def test_tap_prints_one_readable_line_per_message(nats_url: str) -> None:
    proc = await _start_tap("md.quote.*.*", "--count", "1", "--nats-url", nats_url)
    quote = Quote(id="q-2", ts_event=5, ts_init=6, symbol="BTCUSDT", bid=Decimal("39432.99"), ask=Decimal("39433.62"))
    nc = await nats.connect(nats_url)
    try:
        await nc.publish(subjects.quote("BTCUSDT", 1), encode(quote))
        await nc.flush()
    finally:
        await nc.close()
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert out.decode().strip() == (
        "quote.v1 md.quote.0.BTCUSDT id=q-2 ts_event=5 ts_init=6 symbol=BTCUSDT bid=39432.99 ask=39433.62"
    )


async def test_tap_with_an_invalid_subject_names_it_and_exits_2(nats_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(TAP), "md..>", "--nats-url", nats_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 2
    assert b"'md..>' is not a valid subject" in err


async def test_tap_prints_control_characters_of_a_message_escaped_in_both_formats(nats_url: str) -> None:
    order = make_order("EURUSD")
    rejected = make_order_rejected(order, reason="\x1b[2J\x1b]0;owned\x07\u202e" + "x" * 3000)
    for args, escaped in ((("--count", "1"), b"\\x1b[2J\\x1b]0;owned\\x07\\u202e"), (("--json", "--count", "1"), None)):
        proc = await _start_tap("evt.order.>", *args, "--nats-url", nats_url)
        nc = await nats.connect(nats_url)
        try:
            await nc.publish(subjects.order_event("EURUSD", 1), encode(rejected))
            await nc.flush()
        finally:
            await nc.close()
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err
        assert out.isascii()
        assert all(byte >= 0x20 and byte != 0x7F for byte in out.rstrip(b"\n")), out
        if escaped is not None:
            assert escaped in out
            assert len(out) < 1000
        else:
            assert json.loads(out)["reason"].startswith("\x1b[2J\x1b]0;owned\x07\u202e")


async def test_tap_shows_lockstep_markers_and_progress_on_their_shards_step_subject_alone_or_in_an_envelope(
    nats_url: str,
) -> None:
    proc = await _start_tap("cmd.order.>", "--json", "--count", "3", "--nats-url", nats_url)
    marker = StrategyAt(id="rests@7.0-", ts_event=1, ts_init=2, shard=0, strategies=["rests"], quote_seq=7)
    order = make_order("EURUSD")
    envelope = pack([Outgoing(subjects.order_command("EURUSD", 1), encode(order), {MSG_ID: order.id}),
                     Outgoing(subjects.step(subjects.ORDER_COMMAND, 0), encode(marker), {MSG_ID: marker.id})],
                    64 * 1024)  # fmt: skip
    nc = await nats.connect(nats_url)
    try:
        await nc.publish(subjects.step(subjects.ORDER_COMMAND, 0), encode(marker))
        (together,) = envelope
        await nc.publish(together.subject, together.data)
        await nc.flush()
    finally:
        await nc.close()
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err
    alone, first, second = (json.loads(line) for line in out.decode().splitlines())
    assert (alone["type"], alone["subject"], alone["strategies"]) == ("strategy_at.v1", "cmd.order.0._step", ["rests"])
    assert (first["type"], first["subject"]) == ("submit_order.v1", "cmd.order.0.EURUSD")
    assert (second["type"], second["subject"], second["quote_seq"]) == ("strategy_at.v1", "cmd.order.0._step", 7)
