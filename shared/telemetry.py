"""Tracing: one TracerProvider per process, W3C trace context carried in NATS headers."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from rrr.shared.config import ExporterName
from rrr.shared.errors import ConfigError

_log = logging.getLogger(__name__)


def setup_tracing(service: str, exporter: ExporterName, extra: SpanProcessor | None = None) -> TracerProvider:
    """Build the process's TracerProvider with the chosen exporter.

    The provider is handed to the bus rather than installed globally, so that several services can run in
    one process (as the integration tests do) each with its own.

    With ``none``, a message that arrives inside a sampled trace still gets its span, so the trace goes
    on through this service to the next one; a message that starts no trace gets a non-recording span,
    the cheap kind (it is exported nowhere anyway). With an exporter, every span is recorded.
    """
    sampler = ParentBased(root=ALWAYS_OFF if exporter == "none" else ALWAYS_ON)
    provider = TracerProvider(resource=Resource.create({"service.name": f"rrr-{service}"}), sampler=sampler)
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "--otel-exporter", "the 'otlp' extra installed (pip install 'rrralgorithms[otlp]')", exporter
            ) from None
        span_exporter = OTLPSpanExporter()
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    if extra is not None:
        provider.add_span_processor(extra)
    return provider


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's W3C ``traceparent`` (and ``tracestate``) to ``headers``."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a sender put in ``headers``, or an empty one."""
    return propagate.extract(headers or {})
