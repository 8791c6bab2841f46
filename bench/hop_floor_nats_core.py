"""The floor of the hops (``bench/hop_floor.py``) through the NATS maintainers' next Python client, nats-core.

    python3.13 -m venv /tmp/nats-core-venv
    /tmp/nats-core-venv/bin/pip install nats-core==0.2.0 nats-jetstream==0.3.0 nkeys uvloop
    /tmp/nats-core-venv/bin/python bench/hop_floor_nats_core.py --server .venv/bin/nats-server \\
        [--rate 1000] [--seconds 8] [--repeats 3] [--core]

nats-core (``nats.client``) and nats-jetstream (``nats.jetstream``) are the rewrite of nats.py by its
maintainers; they need Python 3.13, which the project does not run on, so this runs in a virtual environment of
its own, against a nats-server (JetStream, file storage) it starts in a temporary directory from ``--server``.

The same path as ``bench/hop_floor.py --direct``, the same stamps: a generator publishes a 200-byte message
``--rate`` a second into a file stream (a publish and a flush each); two relays read the stream before them with
the client's ordered consumer (``messages()``) and publish each message on into the next stream, written to the
socket at once (the client's own writer coalesces writes for up to 5 ms); a listener reads the last one on a
core subscription. ``--core``: core NATS subjects, no streams. Per hop p50 / p90 / p99 in microseconds, median
of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import nats.jetstream as jetstream  # nats-jetstream
import uvloop
from hop_stamps import (  # bench/, beside this file
    Arrived,
    arrived,
    hops_of,
    passed_on,
    print_report,
    stamped,
    start_relays,
)
from nats.client import connect  # nats-core (Python 3.13)


def _relay(url: str, source: str, target: str, index: int, ready: Any, total: int, core: bool) -> None:
    uvloop.run(_relay_async(url, source, target, index, ready, total, core))


async def _relay_async(url: str, source: str, target: str, index: int, ready: Any, total: int, core: bool) -> None:
    nc = await connect(url)
    subject = f"floor.{target}".encode()
    handled = 0

    async def _on(data: bytes) -> None:
        await nc.publish(subject, passed_on(data, index))
        await nc._force_flush()  # written now, not at the client's next coalesced write

    try:
        if core:
            sub = await nc.subscribe(f"floor.{source}")
            await nc.flush()
            ready.set()
            while handled < total:
                await _on((await sub.next(timeout=30)).data)
                handled += 1
        else:
            consumer = await jetstream.new(nc).ordered_consumer(source.upper(), deliver_policy="new")
            messages = await consumer.messages()
            ready.set()
            async for msg in messages:
                await _on(msg.data)
                handled += 1
                if handled >= total:
                    break
    finally:
        await nc.close()


def _generate(url: str, rate: float, total: int) -> None:
    async def _run() -> None:
        nc = await connect(url)
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # noqa: ASYNC251  (a thread of its own: exact pacing)
            await nc.publish(b"floor.md", stamped())
            await nc.flush()
        await nc.close()

    uvloop.run(_run())


async def _run(url: str, rate: float, seconds: float, core: bool) -> dict[str, list[int]]:
    nc = await connect(url)
    js = jetstream.new(nc)
    for stage in ("md", "cmd", "evt"):
        with contextlib.suppress(Exception):
            await js.delete_stream(stage.upper())
        if not core:
            await js.create_stream(name=stage.upper(), subjects=[f"floor.{stage}"], storage="file")
    total = int(rate * seconds)
    relays = start_relays(_relay, url, total, core)
    sub = await nc.subscribe("floor.evt")
    await nc.flush()
    generator = threading.Thread(target=_generate, args=(url, rate, total))
    generator.start()
    came: list[Arrived] = []
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        while len(came) < total:
            came.append(arrived((await sub.next(timeout=30)).data))
    generator.join()
    await nc.close()
    for relay in relays:
        relay.join(10)
    return hops_of(came)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    """Start nats-server, run the path ``--repeats`` times, print each hop's median p50 / p90 / p99."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="nats-server", help="the nats-server binary (default: on PATH)")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a run (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported (default 3)")
    parser.add_argument("--core", action="store_true", help="core NATS subjects, no streams")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--rate and --seconds must be positive, --repeats at least 1")
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="rrr-hop-floor-nats-core-") as tmp:
        server = subprocess.Popen(
            [args.server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while True:  # the server listening: connected to, with a deadline
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"nats-server did not start on port {port}")
                time.sleep(0.05)
            runs = [uvloop.run(_run(url, args.rate, args.seconds, args.core)) for _ in range(args.repeats)]
        finally:
            server.terminate()
            server.wait(10)
    how = ("core NATS, no streams" if args.core else "stored hops") + ", nats-core 0.2.0 written at once"
    print_report(how, args.rate, args.seconds, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
