"""`just up live` on a machine that cannot reach the venue: one clear error naming the host, nothing left running."""

from __future__ import annotations

import socket

import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (f"ws://127.0.0.1:{_closed_port()}/stream", "127.0.0.1"),
        # A name that cannot resolve, as the real venue's cannot on a machine without internet.
        ("wss://stream.binance.invalid:9443/stream", "stream.binance.invalid"),
    ],
)
def test_up_live_against_a_venue_it_cannot_reach_fails_naming_the_host(stack: Stack, url: str, host: str) -> None:
    stack.env["RRR_MARKET_DATA_VENUE_URLS"] = f"binance={url}"
    done = stack.cli("up", "live", "--venue", "binance", "--symbols", "BTCUSDT,ETHUSDT", "--no-supervise")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"binance: cannot reach {host}" in done.stderr, done.stderr
