"""What persistence exports beyond its counters: write time per plane, rows per table."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily, Metric

from rrr.persistence.handlers import Writer
from rrr.shared.metrics import MetricSource, counter

# The tables, as the counters name their rows (``rows_<table>``).
TABLES = ("quotes", "trades", "signals", "orders", "fills", "positions")


class WriterMetrics(MetricSource):
    """The writer's committed transactions and the rows they wrote."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        """``rrr_db_write_duration_seconds{plane}``, ``rrr_db_rows_written_total{table}``."""
        timing = HistogramMetricFamily(
            "rrr_db_write_duration_seconds",
            "Time of one committed write of a batch: a pooled connection, its statements, the commit.",
            labels=["plane"],
        )
        for plane, histogram in self._writer.write_s.items():
            timing.add_metric([plane], histogram.cumulative(), histogram.sum)
        rows = counter("rrr_db_rows_written", "Rows inserted or updated, per table.", ["table"])
        values = self._writer.counters.values()
        for table in TABLES:
            rows.add_metric([table], values[f"rows_{table}"])
        yield timing
        yield rows
