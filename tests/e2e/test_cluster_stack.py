"""`rrr-stack up --cluster 3 --tls`: three nats-server nodes under the supervisor, TLS for clients and routes with
every certificate verified, the services on all of them, and the EUR/USD day stored exactly while a node is SIGKILLed
mid-replay and brought back."""

from __future__ import annotations

import pytest

from tests.chaos.test_self_healing import MidReplay, _report
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def test_up_with_a_cluster_of_three_and_tls_runs_the_services_on_every_node_and_outlives_a_node_killed(
    stack: Stack,
) -> None:
    run = await MidReplay.start(stack, "--cluster", "3", "--sync", "always", "--tls")
    for i in range(3):
        conf = (stack.run.nats_dir / f"node{i}" / "nats.conf").read_text()
        assert "sync_interval: always" in conf
        assert "no_advertise: true" in conf
        assert conf.count("verify: true") == 2  # clients and routes
    # Every service and tool is given all three nodes, over TLS, and the system's authority to verify them by.
    assert all(url.count("tls://") == 3 for key, url in run.urls.items() if key.endswith("NATS_URL"))
    assert run.urls["RRR_NATS_TLS_CA"] == str(stack.run.tls_dir / "ca.pem")
    assert run.urls["RRR_STREAM_REPLICAS"] == "3"
    [killed] = run.kill("nats-server-1")

    def _back() -> bool:
        rows = [line.split() for line in stack.status().splitlines()]
        return any(row[:2] == ["nats-server-1", "running"] and "restarts=1" in row for row in rows)

    await wait_until(_back, 60, "the supervisor to restart nats-server-1", describe=stack.status, interval_s=0.5)
    result, timings = await run.finish()
    status, rows = stack.status_rows()
    print(f"\nnats-server-1 (pid {killed}) SIGKILLed mid-replay {timings}\n{status}")
    assert "cluster=3" in status
    assert "sync=always" in status
    for name in ("market_data-0", "strategy-0", "execution-0", "persistence-0"):
        assert "restarts=0" in rows[name], status
    _report("cluster node kill -9", result)
