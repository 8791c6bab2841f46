"""Dead letters: signed by the services that write them, republished by `rrr-dlq` only when the signature,
the service and the target subject hold, without the headers JetStream acts on."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from rrr.execution import app
from rrr.execution.config import ExecutionConfig
from rrr.shared import subjects
from rrr.shared.bus import (
    DLQ_DELIVERIES,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SERVICE,
    DLQ_SIGNATURE,
    DLQ_SUBJECT,
    MSG_ID,
    Bus,
    dead_letter_signature,
    signature_valid,
)
from rrr.shared.messages import encode
from tests.support.factories import make_order, unique_symbol
from tests.support.orders import publish_quote_of
from tests.support.services import Heartbeats, running_service
from tests.support.streams import stream_messages

DLQ = Path(sys.executable).parent / "rrr-dlq"
KEY = "the-system-dead-letter-key"


async def _dlq(nats_url: str, *args: str, key: str | None = KEY) -> tuple[int, str, str]:
    """Run `rrr-dlq ARGS`; return its exit status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")}
    if key is not None:
        env["RRR_DLQ_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        str(DLQ), "--nats-url", nats_url, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _letter(
    bus: Bus, subject: str, data: bytes, *, service: str = "execution", key: str | None = KEY, **extra: str
) -> int:
    """Publish a dead letter straight to the stream, signed with ``key`` (None: unsigned); return its seq."""
    headers = {DLQ_SUBJECT: subject, DLQ_SERVICE: service, DLQ_REASON: "refused", DLQ_DELIVERIES: "5", **extra}
    if key is not None:
        headers[DLQ_SIGNATURE] = dead_letter_signature(key.encode(), headers, data)
    ack = await bus.js.publish("dlq.cmd.order.0.FORGED", data, headers=headers)
    return ack.seq


async def _dead_letter_seqs(bus: Bus) -> list[int]:
    return [m.seq for m in await stream_messages(bus.js, "RRR_DLQ")]


async def test_a_service_signs_its_dead_letters_and_rrr_dlq_hands_them_back_without_nats_headers(
    nats_url: str, bus: Bus, heartbeats: Heartbeats
) -> None:
    symbol = unique_symbol("SIG")
    subject = subjects.order_command(symbol, 1)
    garbage = b"\xc1 not an order"
    # Headers JetStream acts on, copied into a dead letter, would have its publish refused for ever.
    await bus.js.publish(subject, garbage, headers={MSG_ID: "garbage-1", "Nats-Expected-Stream": "RRR_CMD"})
    # Named after its quote in the market-data stream, where execution reads its price.
    order = await publish_quote_of(bus, make_order(symbol))
    await bus.publish_persistent(subject, order)
    config = ExecutionConfig(nats_url=nats_url, heartbeat_ms=100, dlq_key=KEY)
    async with running_service(app.run, config, heartbeats) as execution:
        counters = await execution.wait_for_counter("handled", 1)
    assert (counters["malformed"], counters["dead_lettered"], counters["orders_filled"]) == (1, 1, 1)

    (letter,) = await stream_messages(bus.js, "RRR_DLQ")
    assert signature_valid(KEY.encode(), letter.headers, letter.data)
    assert letter.headers[DLQ_MSG_ID] == "garbage-1"
    assert not any(k.lower().startswith("nats-") for k in letter.headers)

    code, out, err = await _dlq(nats_url, "list")
    assert code == 0, err
    assert f"seq={letter.seq} subject={subject} service=execution deliveries=1 signature=valid " in out
    code, out, err = await _dlq(nats_url, "republish", str(letter.seq))
    assert (code, out.strip()) == (0, "republished 1 dead letters"), err
    assert await _dead_letter_seqs(bus) == []
    (retry,) = await stream_messages(bus.js, "RRR_RETRY")
    assert (retry.subject, retry.data) == (subjects.retry("execution", subject), garbage)
    assert {k: v for k, v in retry.headers.items() if k != "traceparent"} == {MSG_ID: "garbage-1"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "got no signature"),
        ("another-system-key-entirely", "got a signature that does not match its content"),
    ],
)
async def test_republish_refuses_a_letter_the_system_did_not_sign_and_keeps_it(
    nats_url: str, bus: Bus, key: str | None, expected: str
) -> None:
    # An order published straight to the dead-letter stream with forged headers: never handed to execution.
    order = make_order(unique_symbol("FORGE"))
    seq = await _letter(bus, subjects.order_command(order.symbol, 1), encode(order), key=key)

    code, out, err = await _dlq(nats_url, "republish", str(seq))

    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith(f"rrr-dlq: error: dead letter {seq} refused: expected a dead letter signed by this system")
    assert expected in err
    assert await _dead_letter_seqs(bus) == [seq]
    assert await stream_messages(bus.js, "RRR_RETRY") == []


async def test_republish_without_a_key_refuses_every_letter_naming_the_variable(nats_url: str, bus: Bus) -> None:
    order = make_order(unique_symbol("NOKEY"))
    seq = await _letter(bus, subjects.order_command(order.symbol, 1), encode(order))

    code, _, err = await _dlq(nats_url, "republish", "--all", key=None)

    assert code == 1
    assert err.startswith("rrr-dlq: error: RRR_DLQ_KEY is not set")
    assert await _dead_letter_seqs(bus) == [seq]


@pytest.mark.parametrize(
    ("subject", "service", "expected"),
    [
        ("x.>", "execution", "invalid subject 'x.>'"),
        ("cmd.order.0.*", "execution", "invalid symbol '*'"),
        ("evt.order.1.EURUSD", "execution", "got 'evt.order.1.EURUSD'"),
        ("cmd.order.0.EURUSD", "execution", "cmd.order.1.EURUSD, the shard that owns EURUSD"),  # of 2 shards
        ("md.quote.1.EURUSD", "strategy", "which does not take messages back"),
        ("md.quote.1.EURUSD", "x.>", "which does not take messages back"),
    ],
)
async def test_republish_refuses_a_signed_letter_whose_target_is_not_valid_and_keeps_it(
    nats_url: str, bus: Bus, subject: str, service: str, expected: str
) -> None:
    await bus.check_shards(2)
    seq = await _letter(bus, subject, encode(make_order()), service=service)

    code, _, err = await _dlq(nats_url, "republish", str(seq))

    assert code == 1
    assert err.count("\n") == 1, err
    assert expected in err
    assert await _dead_letter_seqs(bus) == [seq]
    assert await stream_messages(bus.js, "RRR_RETRY") == []


async def test_republish_drops_every_nats_header_a_letter_carries(nats_url: str, bus: Bus) -> None:
    order = make_order(unique_symbol("HDR"))
    subject = subjects.order_command(order.symbol, 1)
    # Stored on the dead-letter stream as they are; carried over, they would make the retry stream refuse it.
    copied = {"Nats-Expected-Stream": "RRR_DLQ", "Nats-Msg-Id": "forged", "nats-expected-last-sequence": "1"}
    seq = await _letter(bus, subject, encode(order), **copied, **{DLQ_MSG_ID: order.id, "Rrr-Other": "x"})

    code, _, err = await _dlq(nats_url, "republish", str(seq))

    assert code == 0, err
    (retry,) = await stream_messages(bus.js, "RRR_RETRY")
    assert (retry.subject, retry.headers) == (subjects.retry("execution", subject), {MSG_ID: order.id})
    assert await _dead_letter_seqs(bus) == []
