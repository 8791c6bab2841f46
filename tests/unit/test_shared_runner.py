"""The process lifecycle every service shares (rrr.shared.runner): collection settings, exit codes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from rrr.shared import runner
from rrr.shared.config import ServiceConfig
from rrr.shared.errors import RRRError


@pytest.fixture
def gc_state() -> Iterator[None]:
    """The interpreter's collection settings as they were before the test, put back after it."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_service_leaves_its_start_up_objects_out_of_collections_and_collects_the_young_less_often(
    gc_state: None,
) -> None:
    seen: dict[str, object] = {}

    async def main(stop: asyncio.Event) -> None:
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()

    assert runner.run(main, ServiceConfig(event_loop="asyncio")) == 0
    threshold = seen["threshold"]
    assert isinstance(threshold, tuple)
    assert threshold[0] == runner.GC_YOUNG_THRESHOLD > 700
    # The older generations keep the interpreter's own settings.
    assert threshold[1:] == gc.get_threshold()[1:]
    frozen = seen["frozen"]
    assert isinstance(frozen, int)
    assert frozen > 1000  # at least the modules, classes and functions loaded by then


def test_a_project_error_ends_the_process_with_exit_code_1_and_anything_else_propagates(gc_state: None) -> None:
    async def refused(stop: asyncio.Event) -> None:
        raise RRRError("the broker refused the credentials")

    async def broken(stop: asyncio.Event) -> None:
        raise KeyError("a bug")

    config = ServiceConfig(event_loop="asyncio")
    assert runner.run(refused, config) == 1
    with pytest.raises(KeyError):
        runner.run(broken, config)
