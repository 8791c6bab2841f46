"""Trace context across services: a quote's sender, the strategy that reads it, the execution of its order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from rrr.execution import app as execution_app
from rrr.execution.config import ExecutionConfig
from rrr.persistence import app as persistence_app
from rrr.persistence.config import PersistenceConfig
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.messages import order_command_decoder
from rrr.strategy import app as strategy_app
from rrr.strategy.config import StrategyConfig
from tests.support.factories import make_quote, unique_symbol
from tests.support.services import Heartbeats, running_service
from tests.support.streams import decode_all, stream_messages


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_tracing_continues_the_quote_senders_trace_through_strategy_and_execution(
    nats_url: str, bus: Bus, heartbeats: Heartbeats, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    symbol = unique_symbol("TRACE")
    # 20 flat quotes fill the slow window with fast == slow; the 21st, higher, crosses up and orders a buy.
    warmup = [make_quote(symbol, bid="100", ask="100", ts_event=i) for i in range(1, 21)]
    trigger = make_quote(symbol, bid="101", ask="101", ts_event=21)
    await bus.publish_persistent_many(bus.prepare(subjects.quote(symbol, 1), q) for q in warmup)
    with provider.get_tracer("test").start_as_current_span("test.send_quote") as sender_span:
        outgoing = bus.prepare(subjects.quote(symbol, 1), trigger)
    assert "traceparent" in outgoing.headers
    await bus.publish_persistent_many([outgoing])
    sender = sender_span.get_span_context()

    strategy_config = StrategyConfig(nats_url=nats_url, heartbeat_ms=100)
    execution_config = ExecutionConfig(nats_url=nats_url, heartbeat_ms=100)
    async with (
        running_service(strategy_app.run, strategy_config, heartbeats, tracer_provider=provider) as strategy,
        running_service(execution_app.run, execution_config, heartbeats, tracer_provider=provider) as execution,
    ):
        await strategy.wait_for_counter("handled", len(warmup) + 1)
        await execution.wait_for_counter("handled", 1)

    orders = decode_all(
        await stream_messages(bus.js, "RRR_CMD", subjects.order_command(symbol, 1)), order_command_decoder
    )
    assert [(o.id, o.side) for o in orders] == [(f"sma_cross-{trigger.id}", "buy")]
    spans = exporter.get_finished_spans()
    on_quote = _named(spans, "strategy.on_quote")
    assert len(on_quote) == len(warmup) + 1
    in_trace = [s for s in on_quote if s.context.trace_id == sender.trace_id]
    assert len(in_trace) == 1
    strategy_span = in_trace[0]
    assert strategy_span.parent is not None
    assert strategy_span.parent.span_id == sender.span_id
    assert strategy_span.kind is SpanKind.CONSUMER
    # The warm-up quotes were sent outside any span: each starts a trace of its own.
    others = [s for s in on_quote if s is not strategy_span]
    assert all(s.parent is None for s in others)
    assert len({s.context.trace_id for s in others}) == len(warmup)

    on_order = _named(spans, "execution.on_submit_order")
    assert len(on_order) == 1
    execution_span = on_order[0]
    assert execution_span.context.trace_id == sender.trace_id
    assert execution_span.parent is not None
    assert execution_span.parent.span_id == strategy_span.context.span_id
    assert execution_span.kind is SpanKind.CONSUMER


async def test_persistence_writes_a_batch_in_one_span_linked_to_each_senders_span(
    nats_url: str,
    database_url: str,
    bus: Bus,
    heartbeats: Heartbeats,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    symbol = unique_symbol("TRACE")
    senders = []
    outgoing = []
    for i in range(3):
        with provider.get_tracer("test").start_as_current_span(f"test.send_{i}") as sender_span:
            outgoing.append(bus.prepare(subjects.quote(symbol, 1), make_quote(symbol, ts_event=i + 1)))
        senders.append(sender_span.get_span_context())
    await bus.publish_persistent_many(outgoing)

    config = PersistenceConfig(nats_url=nats_url, database_url=database_url, heartbeat_ms=100)
    async with running_service(persistence_app.run, config, heartbeats, tracer_provider=provider) as persistence:
        await persistence.wait_for_counter("rows_quotes", 3)

    writes = _named(exporter.get_finished_spans(), "persistence.write_md")
    linked = {link.context.span_id for span in writes for link in span.links}
    assert {s.span_id for s in senders} <= linked
    assert all(span.kind is SpanKind.CONSUMER for span in writes)
