"""Process lifecycle shared by the services and tools: logging, signals, a bounded drain, exit codes."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from rrr.shared.config import ServiceConfig, parse_config
from rrr.shared.errors import RRRError
from rrr.shared.service import Hooks, Service

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=ServiceConfig)

# Container objects allocated between two collections of the youngest generation (CPython: 700). A service
# allocates a batch's messages, rows and futures at once and frees them by reference counting moments later;
# at 700 they outlive a collection or two, are promoted, and make full collections of the whole heap due
# (55-72 ms each in persistence and execution over the million-quote replay; with the younger ones, a sixth
# to a quarter of their CPU).
GC_YOUNG_THRESHOLD = 50_000


def setup_logging(level: str) -> None:
    """Log lines as ``time level logger: message`` to stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(service: Service[C], argv: Sequence[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """A service's command line: parse its config from ``argv`` and the environment, serve until a signal.

    Returns the process exit code (see ``run``).
    """
    config, _ = parse_config(service.config_type, service.name, argv, description=service.description)
    return run(lambda stop: service.run(config, stop, hooks=hooks), config)


def run(main: Callable[[asyncio.Event], Awaitable[None]], config: ServiceConfig) -> int:
    """Run a service's ``main(stop)`` until it returns; SIGTERM and SIGINT set ``stop``.

    The drain that follows is bounded: after ``config.drain_timeout_s``, or at a second signal, the
    service is cancelled (nothing unacknowledged is lost: it is redelivered to the next run).

    Returns the process exit code: 0 after a clean stop, 1 after a project error (logged without a
    traceback, since it already says what went wrong) or a drain cut short.
    """
    setup_logging(config.log_level)
    tune_gc()
    drain_timeout_s = config.drain_timeout_s

    async def _entry() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main(stop))

        def _on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                _log.warning("%s again: cancelling without waiting for the drain", sig.name)
                task.cancel()
                return
            _log.info("%s: stopping, draining in-flight work (at most %g s)", sig.name, drain_timeout_s)
            stop.set()
            loop.call_later(drain_timeout_s, task.cancel)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig)
        try:
            await task
        except asyncio.CancelledError:
            raise DrainTimeoutError(drain_timeout_s) from None
        _log.info("stopped")

    try:
        with asyncio.Runner(loop_factory=_loop_factory(config.event_loop)) as runner:
            runner.run(_entry())
    except (RRRError, BaseExceptionGroup) as exc:
        # A task group wraps what its tasks raised; a project error says all there is, so no traceback.
        errors = _leaves(exc)
        if not all(isinstance(e, RRRError) for e in errors):
            raise
        for error in errors:
            _log.error("%s", error)
        return 1
    return 0


def tune_gc() -> None:
    """Collect cycles for a process that handles batches: what start-up made (modules, classes, config) is
    left out of every collection from now on, and the youngest generation is collected every
    ``GC_YOUNG_THRESHOLD`` allocations, so that a batch is freed by reference counting before it is promoted."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class DrainTimeoutError(RRRError):
    """The graceful stop did not finish in time, or a second signal cut it short."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"stopped without finishing the drain (bound {timeout_s:g} s, or a second signal); "
            "unacknowledged messages are redelivered to the next run"
        )


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            _log.warning("uvloop is not installed; running on asyncio's own event loop")
            return None
        return uvloop.new_event_loop
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
