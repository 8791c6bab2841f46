"""The metrics' own bookkeeping and their exposition, without a server."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rrr.shared.counters import Counters
from rrr.shared.metrics import (
    ConsumerStats,
    Histogram,
    MetricSource,
    ServiceCollector,
    Traffic,
    gauge,
    service_registry,
)


class _Counted(Counters, kw_only=True):
    orders_filled: int = 0


class _Venues(MetricSource):
    def collect(self):  # type: ignore[no-untyped-def]
        family = gauge("rrr_feed_connected", "Connections up.", ["venue"])
        family.add_metric(["binance"], 2)
        yield family

    def heartbeat(self) -> dict[str, int]:
        return {"live_binance_connected": 2}


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_histogram_counts_each_observation_in_its_bucket_and_reports_them_cumulatively() -> None:
    histogram = Histogram((1.0, 10.0))
    for value in (0.5, 1.0, 3.0, 11.0):
        histogram.observe(value)

    assert histogram.cumulative() == [("1.0", 2.0), ("10.0", 3.0), ("+Inf", 4.0)]
    assert (histogram.count, histogram.sum) == (4, 15.5)


def test_published_messages_are_counted_by_their_subjects_first_two_tokens_never_by_symbol() -> None:
    traffic = Traffic()
    for subject in ("md.quotes.0.sim", "md.quotes.1.sim", "evt.order.0.EURUSD", "evt.order.0.GBPUSD", "ctl"):
        traffic.sent(subject)
    traffic.sent("cmd.order.2.EURUSD", 3)

    assert traffic.published == {"md.quotes": 2, "evt.order": 2, "ctl": 1, "cmd.order": 3}


def test_a_consumers_lag_is_read_from_its_batchs_acknowledgement_subjects() -> None:
    stats = ConsumerStats("persistence-md-0", "md.*.0.*")
    stored_ns = time.time_ns() - 2_000_000_000
    first = f"$JS.ACK.RRR_MD.persistence-md-0.1.10.3.{stored_ns}.7"
    last = f"$JS.ACK.RRR_MD.persistence-md-0.1.12.5.{time.time_ns()}.4"
    stats.position(first, last)

    assert stats.pending == 4
    assert stats.lag_s is not None
    assert 2.0 <= stats.lag_s < 60


def test_a_consumers_lag_is_read_from_the_acknowledgement_subjects_with_a_domain_too() -> None:
    stats = ConsumerStats("c", "md.*.0.*")
    reply = f"$JS.ACK.hub.ACCHASH.RRR_MD.c.1.12.5.{time.time_ns()}.9.token"
    stats.position(reply, reply)

    assert stats.pending == 9


def test_a_core_message_has_no_lag_to_read() -> None:
    stats = ConsumerStats("md.*.0.*", "md.*.0.*")
    stats.position(None, "_INBOX.abc")

    assert (stats.pending, stats.lag_s) == (None, None)


def test_the_exposition_labels_every_sample_with_service_and_shard_and_names_counters_total() -> None:
    traffic = Traffic()
    traffic.consumer("execution-0", "cmd.order.0.*").batch(5, 0.002)
    traffic.sent("evt.order.0.EURUSD", 5)
    counted = _Counted(orders_filled=5)
    collector = ServiceCollector(
        service="execution",
        shard=0,
        info={"name": "execution-0@host", "version": "0.1.0", "pid": "42"},
        bus_counters=lambda: {"handled": 5},
        traffic=traffic,
        counters=counted.values,
        gauges=lambda: {"positions": 1},
        sources=[_Venues()],
    )

    samples = _samples(generate_latest(service_registry(collector)).decode())

    labels = {("service", "execution"), ("shard", "0")}
    assert samples["rrr_execution_orders_filled_total", frozenset(labels)] == 5
    assert samples["rrr_bus_handled_total", frozenset(labels)] == 5
    assert samples["rrr_execution_positions", frozenset(labels)] == 1
    assert samples["rrr_feed_connected", frozenset({*labels, ("venue", "binance")})] == 2
    consumer = frozenset({*labels, ("consumer", "execution-0")})
    assert samples["rrr_messages_received_total", consumer | {("plane", "cmd")}] == 5
    assert samples["rrr_consumer_batch_messages_count", consumer] == 1
    assert samples["rrr_consumer_batch_messages_bucket", consumer | {("le", "4.0")}] == 0
    assert samples["rrr_consumer_batch_messages_bucket", consumer | {("le", "8.0")}] == 1
    assert samples["rrr_consumer_handler_duration_seconds_sum", consumer] == 0.002
    assert samples["rrr_messages_published_total", frozenset({*labels, ("family", "evt.order")})] == 5
    info = frozenset({*labels, ("name", "execution-0@host"), ("version", "0.1.0"), ("pid", "42")})
    assert samples["rrr_service_info", info] == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
