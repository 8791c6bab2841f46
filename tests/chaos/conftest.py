"""Fixtures of the fault suite: the four services as processes, a real quote file, exact checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rrr.deploy.nats_server import NatsEndpoint
from tests.support.system import FAST_HEARTBEATS, System, assert_no_permission_violations


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.timeout(240))


@pytest.fixture
def system_env() -> dict[str, str]:
    """The services' environment on top of the system's defaults; a test module may override it."""
    return FAST_HEARTBEATS


@pytest.fixture
async def system(
    nats_server: NatsEndpoint, database_url: str, tmp_path: Path, system_env: dict[str, str]
) -> AsyncIterator[System]:
    if nats_server.server is None:
        pytest.skip("the fault suite needs a nats-server of its own (RRR_NATS_URL is set)")
    async with System(
        nats_url=nats_server.url,
        database_url=database_url,
        workdir=tmp_path / "services",
        env=system_env,
        role_urls=nats_server.urls,
    ) as running:
        yield running
    assert_no_permission_violations(nats_server)
