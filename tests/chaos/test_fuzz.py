"""Scenario 7: every decoder and every subscribed subject fed random bytes and well-formed messages of the
wrong type. Nothing crashes; each one is counted (as malformed, or as mismatched with its subject)."""

from __future__ import annotations

import contextlib
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import nats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrr.shared.messages import (
    Heartbeat,
    Message,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionUpdated,
    Quote,
    QuoteBatch,
    QuoteRow,
    Signal,
    SubmitOrder,
    Trade,
    any_decoder,
    encode,
    heartbeat_decoder,
    market_data_decoder,
    order_command_decoder,
    order_event_decoder,
    signal_decoder,
)
from tests.support.checks import wait_for_exact
from tests.support.system import System, finish
from tests.support.waiting import wait_until

USDJPY = Path(__file__).parents[1] / "data" / "usdjpy_quotes_2013-01-01.csv"
DECODERS = [
    market_data_decoder,
    signal_decoder,
    order_command_decoder,
    order_event_decoder,
    heartbeat_decoder,
    any_decoder,
]
TAGS = [
    "quote.v1",
    "trade.v1",
    "signal.v1",
    "submit_order.v1",
    "order_accepted.v1",
    "order_rejected.v1",
    "order_filled.v1",
    "position_updated.v1",
    "heartbeat.v1",
]
KINDS = (Quote, Trade, Signal, SubmitOrder, OrderRejected, OrderFilled, PositionUpdated, Heartbeat)
FIELDS = sorted({f for cls in KINDS for f in cls.__struct_fields__})
values = st.recursive(
    # Integers within what msgpack can carry at all.
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


def _decodes_or_refuses(payload: bytes) -> None:
    for decoder in DECODERS:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decoder.decode(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_every_decoder_refuses_random_bytes_with_a_decode_error_only(payload: bytes) -> None:
    _decodes_or_refuses(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TAGS), st.dictionaries(st.sampled_from(FIELDS), values, max_size=12))
def test_every_decoder_refuses_malformed_messages_of_every_type_with_a_validation_error_only(
    tag: str, fields: dict[str, Any]
) -> None:
    _decodes_or_refuses(msgspec.msgpack.encode({**fields, "type": tag}))


def _one_of_each() -> list[Message]:
    d = Decimal
    common: dict[str, Any] = {"ts_event": 1, "ts_init": 1}
    return [
        Quote(id="f-q", symbol="FUZZ", bid=d(1), ask=d(2), **common),
        Trade(id="f-t", symbol="FUZZ", price=d(1), size=d(1), **common),
        QuoteBatch(id="f-b", source="fuzz", quotes=[QuoteRow("f-b1", "FUZZ", 1, 1, 2, 0)], **common),
        Signal(id="f-s", strategy="x", symbol="FUZZ", quote_id="q", direction="up", fast=d(1), slow=d(1),
               target=d(1), **common),
        SubmitOrder(id="f-o", strategy="x", symbol="FUZZ", side="buy", qty=d(1), quote_ts=1, quote_bid=d(1),
                    quote_ask=d(2), **common),
        OrderAccepted(id="f-a", client_order_id="o", strategy="x", symbol="FUZZ", side="buy", qty=d(1), **common),
        OrderRejected(id="f-r", client_order_id="o", strategy="x", symbol="FUZZ", side="buy", qty=d(1),
                      reason="r", **common),
        OrderFilled(id="f-f", client_order_id="o", symbol="FUZZ", side="buy", qty=d(1), price=d(1), fee=d(0),
                    venue="paper", **common),
        PositionUpdated(id="f-p", symbol="FUZZ", qty=d(1), avg_price=d(1), realized_pnl=d(0), version=1, **common),
        Heartbeat(id="f-h", service="x", instance="x", shard=0, shards=1, status="ok", **common),
    ]  # fmt: skip


async def test_random_and_wrong_type_payloads_on_every_subscribed_subject_are_counted_and_change_nothing(
    system: System,
) -> None:
    await system.start()
    rng = random.Random(20261124)
    garbage = [rng.randbytes(rng.randint(0, 200)) for _ in range(25)]
    messages = _one_of_each()
    # Each subject's own kinds; every other kind is well-formed there but on a subject not its own.
    accepted = {
        "md.quote.0.FUZZ": (Quote,),
        "md.trade.0.FUZZ": (Trade,),
        "md.quotes.0.fuzz": (QuoteBatch,),
        "sig.signal.0.FUZZ": (Signal,),
        "cmd.order.0.FUZZ": (SubmitOrder,),
        "evt.order.0.FUZZ": (OrderAccepted, OrderRejected, OrderFilled),
        "evt.position.0.FUZZ": (PositionUpdated,),
    }
    sent: dict[str, int] = {}
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()
        for subject, kinds in accepted.items():
            wrong = [encode(m) for m in messages if not isinstance(m, kinds)]
            for payload in [*garbage, *wrong]:
                await js.publish(subject, payload)
            sent[subject] = len(garbage) + len(wrong)
    finally:
        await nc.close()

    quotes, trades, batches, sig, cmd, evt, pos = (sent[s] for s in accepted)
    expected = {
        "market_data-0": quotes + trades + batches,  # its core subscription to md.*.0.*
        "strategy-0": quotes + trades + batches,
        "execution-0": cmd,
        "persistence-0": quotes + trades + batches + sig + evt + pos,
    }

    def _refused() -> dict[str, int]:
        return {
            name: system.counters(name).get("malformed", 0) + system.counters(name).get("mismatched", 0)
            for name in expected
        }

    await wait_until(lambda: _refused() == expected, 60, f"refused counts {expected}", describe=_refused)
    print(f"\nsent per subject: {sent}\nmalformed or mismatched, counted per service: {_refused()}")
    assert all(proc.pid is not None for proc in system.procs.values()), "a service stopped"

    # And the system still does its work exactly.
    await finish(system.replay(USDJPY))
    result = await wait_for_exact(system.database_url, USDJPY, timeout_s=120)
    print(result)
    assert result.exact
