"""A real Prometheus, with the shipped scrape configuration, against `rrr-stack up` while the EUR/USD day is
replayed: every target is up and the key series hold what the file implies."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rrr.deploy.processes import ManagedProcess, free_port, poll_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

DEPLOY = Path(__file__).parents[2] / "deploy"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "rrralgorithms.json"
# The shipped configuration's targets file, relative to its folder: replaced by the test's own run directory.
TARGETS = "../../.run/prometheus/targets.json"
# What the EUR/USD day gives (README): 9,500 quotes stored, 757 orders, each filled.
QUOTES, ORDERS = 9500, 757


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} binary on PATH: `apt-get install prometheus` (.ci/run installs it when it can)")
    return found


class _Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local http URL built here
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now (fails on a query Prometheus refuses)."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The single value of ``expr``, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False


def _wait_for(prometheus: _Prometheus, expr: str, expected: float, timeout_s: float) -> None:
    seen: list[float | None] = []

    def _holds() -> bool:
        seen.append(prometheus.scalar(expr))
        return seen[-1] == expected

    assert poll_until(_holds, timeout_s), f"{expr}: expected {expected} within {timeout_s} s, last seen {seen[-1:]}"


def test_the_shipped_scrape_configuration_is_valid() -> None:
    promtool = _binary("promtool")
    done = subprocess.run([promtool, "check", "config", str(CONFIG)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_every_service_and_both_servers_while_a_day_is_replayed(
    stack: Stack, tmp_path: Path
) -> None:
    binary = _binary("prometheus")
    up = stack.up()
    assert "metrics of persistence-0: http://127.0.0.1:" in up.stdout
    shown = stack.status()
    # `rrr-stack status` finds the four instances through NATS service discovery, each with its metrics URL.
    assert "discovered on NATS ($SRV.PING): 4 instances" in shown, shown
    assert shown.count("metrics=http://127.0.0.1:") == 4, shown
    targets = json.loads(stack.run.prometheus_targets.read_text())
    assert len(targets[0]["targets"]) == 5  # four services and the servers' collector
    config = tmp_path / "prometheus.yml"
    shipped = CONFIG.read_text()
    assert TARGETS in shipped
    config.write_text(
        shipped.replace(TARGETS, str(stack.run.prometheus_targets)).replace(
            "scrape_interval: 5s", "scrape_interval: 1s"
        )
    )
    port = free_port()
    prometheus = _Prometheus(port)
    process = ManagedProcess(
        "prometheus",
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        log_file=tmp_path / "prometheus.log",
        detached=False,
    )  # fmt: skip
    process.start()
    try:
        process.wait_ready(prometheus.ready, "/-/ready to answer 200", deadline=_deadline(60))
        _wait_for(prometheus, 'count(up{job="rrr"} == 1)', 5, timeout_s=60)
        replay = stack.replay()
        out, err = replay.communicate(timeout=300)
        assert replay.returncode == 0, out + err

        _wait_for(prometheus, 'sum(rrr_db_rows_written_total{table="quotes"})', QUOTES, timeout_s=120)
        _wait_for(prometheus, 'sum(rrr_orders_total{state="filled"})', ORDERS, timeout_s=120)
        _wait_for(prometheus, 'sum(rrr_db_rows_written_total{table="fills"})', ORDERS, timeout_s=120)
        _wait_for(prometheus, 'max(rrr_consumer_pending_messages{service="persistence"})', 0, timeout_s=60)

        assert prometheus.scalar('sum(rrr_orders_total{state="rejected"})') == 0
        assert prometheus.scalar('sum(rrr_messages_received_total{service="strategy", plane="md"})') is not None
        # Each service is scraped on its own schedule: the strategy's count is waited for like the others.
        _wait_for(prometheus, 'sum(rrr_messages_published_total{family="cmd.order"})', ORDERS, timeout_s=30)
        assert prometheus.scalar("rrr_nats_up") == 1
        assert prometheus.scalar("rrr_postgres_up") == 1
        # The collector reads nats-server at each scrape: RRR_CMD holds the orders, alone or several in an envelope.
        stored = 'rrr_nats_stream_messages{stream="RRR_CMD"}'
        assert poll_until(lambda: 0 < (prometheus.scalar(stored) or 0) <= ORDERS, 30), prometheus.query(stored)
        assert (prometheus.scalar('rrr_postgres_table_bytes{table="quotes"}') or 0) > 0
        assert prometheus.scalar('count(rrr_strategy_running{strategy="sma_cross"} == 1)') == 1
        # Final position of EURUSD: -1 at 1.12134, realized -0.04529 (README); fees none.
        realized = prometheus.scalar("sum(rrr_realized_pnl)")
        assert realized == pytest.approx(-0.04529, abs=1e-9)
        # Handler times: a quantile of the last minutes, between nothing and the histogram's last bound.
        buckets = 'rrr_consumer_handler_duration_seconds_bucket{service="persistence"}'
        p99 = f"histogram_quantile(0.99, sum by (le) (rate({buckets}[5m])))"
        assert poll_until(lambda: (prometheus.scalar(p99) or 0) > 0, 30), prometheus.query(p99)
        assert (prometheus.scalar(p99) or 0) < 10
        # Every panel of the shipped dashboard is a query Prometheus accepts, and the flow panels show data.
        exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
        answered = {expr: prometheus.query(expr) for expr in exprs}
        empty = sorted(expr for expr, result in answered.items() if not result)
        # Only what this run has none of: no live venue feed, no rejection.
        assert all("rrr_feed_" in expr or "rrr_orders_rejected" in expr for expr in empty), empty
    finally:
        process.stop(timeout_s=20)


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds
