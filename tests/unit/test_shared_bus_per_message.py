"""The hot path's per-message bookkeeping: trace context carried and continued inside traces, skipped outside
them; the stream sequence read from the acknowledgement subject."""

from __future__ import annotations

import nats.aio.client
import pytest
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from rrr.shared.bus import Bus, stream_seq


def _bus(*, roots: bool) -> tuple[Bus, TracerProvider]:
    provider = TracerProvider(sampler=ParentBased(root=ALWAYS_ON if roots else ALWAYS_OFF))
    nc = nats.aio.client.Client()  # never connected: nothing here publishes
    return Bus(nc, service="test", tracer=provider.get_tracer("test"), trace_roots=roots), provider


def _msg(nc: nats.aio.client.Client, headers: dict[str, str] | None) -> Msg:
    return Msg(nc, subject="md.quotes.0.sim", data=b"", headers=headers)


def test_a_message_outside_any_trace_gets_no_span_when_nothing_starts_traces() -> None:
    bus, _ = _bus(roots=False)
    assert bus.span("handle", _msg(bus.nc, None)) is trace.INVALID_SPAN
    assert bus.span("handle", _msg(bus.nc, {"Nats-Msg-Id": "b1"})) is trace.INVALID_SPAN
    assert bus.links([_msg(bus.nc, None), _msg(bus.nc, {"Nats-Msg-Id": "b1"})]) == []


def test_a_message_inside_a_sampled_trace_continues_it_even_when_nothing_starts_traces() -> None:
    sender, provider = _bus(roots=True)
    receiver, _ = _bus(roots=False)
    with provider.get_tracer("sender").start_as_current_span("send") as sent:
        headers = sender._headers("b1")
    assert "traceparent" in headers
    assert headers["Nats-Msg-Id"] == "b1"
    span = receiver.span("handle", _msg(receiver.nc, headers))
    assert span.get_span_context().trace_id == sent.get_span_context().trace_id
    assert span.is_recording()
    [link] = receiver.links([_msg(receiver.nc, headers)])
    assert link.context.span_id == sent.get_span_context().span_id


def test_a_publish_outside_any_trace_carries_only_its_message_id() -> None:
    bus, _ = _bus(roots=False)
    assert bus._headers("q1") == {"Nats-Msg-Id": "q1"}


def test_with_an_exporter_a_message_outside_any_trace_starts_one() -> None:
    bus, _ = _bus(roots=True)
    span = bus.span("handle", _msg(bus.nc, None))
    assert span.is_recording()
    assert span.get_span_context().is_valid


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.RRR_MD.strategy-0.1.4711.12.1764460000000000000.3",
        "$JS.ACK.hub.ACCOUNTHASH.RRR_MD.strategy-0.2.4711.12.1764460000000000000.3.rnd",
        "$JS.ACK.hub.ACCOUNTHASH.RRR_MD.strategy-0.2.4711.12.1764460000000000000.3",
    ],
)
def test_the_stream_sequence_read_from_the_ack_subject_is_the_one_the_library_parses(reply: str) -> None:
    msg = Msg(nats.aio.client.Client(), subject="md.quotes.0.sim", reply=reply, data=b"")
    assert stream_seq(msg) == msg.metadata.sequence.stream == 4711
