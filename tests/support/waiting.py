"""Waiting for a condition with a deadline: the only way tests synchronise with the services they run."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable

from rrr.shared.errors import RRRError


class WaitTimeoutError(RRRError, AssertionError):
    """A condition a test waited for did not come true before the deadline.

    An ``AssertionError`` as well, so that pytest reports it as a failed expectation.
    """

    def __init__(self, what: str, timeout_s: float, seen: object) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.seen = seen
        message = f"timed out after {timeout_s:g} s waiting for {what}"
        if seen is not None:
            message += f"; last seen: {seen!r}"
        super().__init__(message)


class TaskEndedError(RRRError, AssertionError):
    """A task that should have kept running (a service) ended while a test waited on it."""

    def __init__(self, what: str, task: asyncio.Task[object]) -> None:
        self.what = what
        self.task = task
        exc = None if task.cancelled() else task.exception()
        ending = "was cancelled" if task.cancelled() else f"raised {exc!r}" if exc else "returned"
        super().__init__(f"while waiting for {what}: task {task.get_name()!r} {ending}")


async def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    describe: Callable[[], object] | None = None,
    watch: Iterable[asyncio.Task[object]] = (),
    interval_s: float = 0.01,
) -> None:
    """Poll ``predicate`` until it returns a truthy value (or an awaitable that resolves to one).

    Args:
        predicate: The condition; called at once, then every ``interval_s``.
        timeout_s: Deadline, from now.
        what: What is awaited, as a phrase for the failure message ("3 orders in RRR_CMD").
        describe: Called on timeout to say what was seen instead (a count, the counters).
        watch: Tasks that must keep running meanwhile (the services under test); if one ends, waiting
            stops at once with its exception instead of running into the deadline.
        interval_s: Pause between two polls.

    Raises:
        WaitTimeoutError: the deadline passed with the condition still false.
        TaskEndedError: a watched task ended.
    """
    watched = list(watch)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        for task in watched:
            if task.done():
                raise TaskEndedError(what, task)
        result = predicate()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return
        if loop.time() >= deadline:
            raise WaitTimeoutError(what, timeout_s, describe() if describe is not None else value)
        # Polling, bounded by the deadline: the conditions live in other processes (NATS, PostgreSQL).
        await asyncio.sleep(interval_s)
