"""The stamps a message of ``bench/hop_floor.py``'s path carries, and the report of its hops: the standard library
only, so that the floor measured through another client (``bench/hop_floor_nats_core.py``, Python 3.13) is the
same measurement."""

from __future__ import annotations

import multiprocessing
import statistics
import struct
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

# Times stamped along the way, ns: sent, strategy took, strategy published, execution took, execution published.
STAMP = struct.Struct("<5q")
PAD = b"q" * (200 - STAMP.size)
SIZE = STAMP.size + len(PAD)
HOPS = (
    "sent -> strategy took it",
    "strategy: took -> published",
    "strategy published -> execution took it",
    "execution: took -> published",
    "execution published -> listener",
    "sent -> listener (the path)",
)

Arrived = tuple[tuple[int, ...], int]


def stamped() -> bytes:
    """A message of the path, sent now."""
    return STAMP.pack(time.time_ns(), 0, 0, 0, 0) + PAD


def passed_on(data: bytes, index: int) -> bytes:
    """``data`` taken by the relay whose stamps start at ``index`` (1: strategy, 3: execution), to publish now."""
    taken = time.time_ns()
    stamps = list(STAMP.unpack_from(data))
    stamps[index] = taken
    stamps[index + 1] = time.time_ns()
    return STAMP.pack(*stamps) + PAD


def arrived(data: bytes) -> Arrived:
    """``data``'s stamps and the time it reached the listener."""
    return STAMP.unpack_from(data), time.time_ns()


def hops_of(messages: list[Arrived]) -> dict[str, list[int]]:
    """Each hop's time of every message that arrived, us."""
    hops: dict[str, list[int]] = {name: [] for name in HOPS}
    for (sent, s_took, s_pub, e_took, e_pub), at in messages:
        for name, value in zip(HOPS, (s_took - sent, s_pub - s_took, e_took - s_pub, e_pub - e_took, at - e_pub,
                                      at - sent), strict=True):  # fmt: skip
            hops[name].append(value // 1000)
    return hops


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0


def print_report(how: str, rate: float, seconds: float, runs: list[dict[str, list[int]]]) -> None:
    """Each hop's p50 / p90 / p99, the median over ``runs``."""
    print(f"hops with no work ({how}), {rate:,.0f} messages/s for {seconds:g} s, median of {len(runs)} runs (us)")
    for name in HOPS:
        cells = [f"{statistics.median(_percentile(run[name], q) for run in runs):,.0f}" for q in (0.5, 0.9, 0.99)]
        counts = min(len(run[name]) for run in runs)
        print(f"  {name:<42} p50 {cells[0]:>6}  p90 {cells[1]:>6}  p99 {cells[2]:>6}   ({counts:,} messages)")


def start_relays(relay: Callable[..., None], url: str, total: int, core: bool) -> list[BaseProcess]:
    """The strategy relay (``md`` -> ``cmd``) and the execution relay (``cmd`` -> ``evt``), each a process running
    ``relay(url, source, target, index, ready, total, core)``, started and ready (subscribed) within a minute."""
    context = multiprocessing.get_context("spawn")
    readies = [context.Event(), context.Event()]
    relays: list[BaseProcess] = [
        context.Process(target=relay, args=(url, "md", "cmd", 1, readies[0], total, core), daemon=True),
        context.Process(target=relay, args=(url, "cmd", "evt", 3, readies[1], total, core), daemon=True),
    ]
    for process in relays:
        process.start()
    deadline = time.monotonic() + 60
    for ready in readies:
        while not ready.wait(0.05):  # a process starting up, waited on until the deadline
            if not all(process.is_alive() for process in relays):
                raise RuntimeError("a relay process ended before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError("a relay was not ready within 60 s")
    return relays
