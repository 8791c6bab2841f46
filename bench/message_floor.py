"""What one message costs on this machine before any work is done with it: CPU per message of a bare nats-py
consumer, and of nats-server, at a paced rate.

    python bench/message_floor.py [--rate 3000] [--seconds 8] [--consumers 1 --consumers 4] [--repeats 3]

One nats-server (JetStream, file storage) from the embedded binary on 127.0.0.1, in a temporary directory, and
a file-stored stream capturing one subject. A publisher (this process, a thread of its own) publishes a
300-byte message on core NATS into it ``--rate`` times a second for ``--seconds``, sleeping the thread until
each is due, as the load harness publishes quote batches into RRR_MD. ``--consumers`` processes (uvloop,
nats-py, spawned fresh for each run) each read every message and do nothing with it:

- ``core``: a core subscription, ``await sub.next_msg()`` per message (as market-data's latest-quote cache
  reads quote batches);
- ``ordered push``: an ordered push consumer of the stream with no acknowledgements, ``await
  sub.next_msg()`` per message (as the strategy, persistence and execution's market-data follower read
  RRR_MD, ``rrr.shared.bus.consume``);
- ``bare socket``: no client library: a uvloop protocol that speaks the NATS text protocol itself (CONNECT,
  SUB, PONG to a PING) and only counts the ``MSG`` lines that arrive, so what it costs is the kernel's and the
  event loop's share of a wake-up, the floor under the other two modes.

Each consumer measures its own CPU time (user + system) from its first message to its last; nats-server's is
read from the kernel over the same publishing window. Reported: microseconds of CPU per message, the
consumers' median, and nats-server's, which includes taking the publish, storing it and delivering it to
every consumer; the median of ``--repeats`` runs. At a paced rate below what a consumer can take, each message
is a wake-up of its own: this is the least a process of the system pays per message it reads, here.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import nats
import psutil
import uvloop
from hop_floor import connect_line, paced_publish  # bench/, beside this file
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from rrr.deploy.nats_server import NatsServer

SUBJECT = "floor.quotes"
STREAM = "FLOOR"
MODES = ("core", "ordered push", "bare socket")
_PAYLOAD = b"q" * 300


def _consume(url: str, mode: str, count: int, out: Queue[object]) -> None:
    uvloop.run(_consume_async(url, mode, count, out))


class _Bare(asyncio.Protocol):
    """A NATS subscriber without a client library: it counts the messages that arrive and does nothing else."""

    def __init__(self, count: int, first: asyncio.Future[float], last: asyncio.Future[float]) -> None:
        self.count, self.first, self.last = count, first, last
        self.seen = 0
        self.tail = b""  # the last bytes of the previous read: a MSG line may be split across two
        self.transport: asyncio.Transport | None = None
        # The server's answer to the PING sent after SUB: it holds the subscription by then.
        self.subscribed: asyncio.Future[None] = first.get_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        if b"PING\r\n" in data and self.transport is not None:
            self.transport.write(b"PONG\r\n")
        if b"PONG\r\n" in data and not self.subscribed.done():
            self.subscribed.set_result(None)
        if b"-ERR" in data and not self.subscribed.done():
            self.subscribed.set_exception(RuntimeError(data.decode(errors="replace").strip()))
        arrived = (self.tail + data).count(b"MSG ")
        self.tail = data[-3:]
        if not arrived:
            return
        if self.seen == 0:
            self.first.set_result(time.process_time())
        self.seen += arrived
        if self.seen >= self.count and not self.last.done():
            self.last.set_result(time.process_time())


async def _bare(url: str, count: int, out: Queue[object]) -> None:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    first, last = loop.create_future(), loop.create_future()
    transport, protocol = await loop.create_connection(
        lambda: _Bare(count, first, last), parts.hostname, parts.port or 4222
    )
    transport.write(connect_line(url) + f"SUB {SUBJECT} 1\r\nPING\r\n".encode())
    await asyncio.wait_for(protocol.subscribed, 10)
    out.put("ready")
    started = await asyncio.wait_for(first, 60)
    ended = await asyncio.wait_for(last, 60)
    out.put((ended - started) / (count - 1) * 1e6)
    transport.close()


async def _consume_async(url: str, mode: str, count: int, out: Queue[object]) -> None:
    if mode == "bare socket":
        await _bare(url, count, out)
        return
    nc = await nats.connect(url)
    if mode == "core":
        sub = await nc.subscribe(SUBJECT, pending_msgs_limit=0, pending_bytes_limit=0)
    else:
        sub = await nc.jetstream().subscribe(
            SUBJECT, stream=STREAM, ordered_consumer=True, idle_heartbeat=2.0, pending_msgs_limit=0,
            pending_bytes_limit=0, config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )  # fmt: skip
    await nc.flush()
    out.put("ready")
    await sub.next_msg(timeout=60)
    started = time.process_time()
    for _ in range(count - 1):
        await sub.next_msg(timeout=60)
    out.put((time.process_time() - started) / (count - 1) * 1e6)
    await nc.close()


def _run(server: NatsServer, mode: str, consumers: int, rate: float, count: int) -> tuple[float, float]:
    """One run: the consumers' median and nats-server's CPU per message, in microseconds."""
    context = multiprocessing.get_context("spawn")
    out: Queue[object] = context.Queue()
    processes = [context.Process(target=_consume, args=(server.url, mode, count, out)) for _ in range(consumers)]
    for process in processes:
        process.start()
    for _ in processes:
        if out.get(timeout=60) != "ready":
            raise RuntimeError("a consumer did not start")
    assert server.pid is not None
    nats_server = psutil.Process(server.pid)
    before = sum(nats_server.cpu_times()[:2])
    publisher = threading.Thread(
        target=lambda: asyncio.run(paced_publish(server.url, SUBJECT, rate, count, lambda: _PAYLOAD))
    )
    publisher.start()
    publisher.join()
    server_us = (sum(nats_server.cpu_times()[:2]) - before) / count * 1e6
    per_consumer = [float(out.get(timeout=60)) for _ in processes]  # type: ignore[arg-type]
    for process in processes:
        process.join(10)
    return statistics.median(per_consumer), server_us


def main() -> int:
    """Each mode and number of consumers ``--repeats`` times; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=3000.0, help="messages a second (default 3000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of a run (default 8)")
    parser.add_argument(
        "--consumers", type=int, action="append", help="consumer processes; repeat for several (default 1 and 4)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported (default 3)")
    args = parser.parse_args()
    counts = args.consumers or [1, 4]
    if not 0 < args.rate <= 50_000 or not 0 < args.seconds <= 600 or args.repeats < 1:
        parser.error("--rate must be in (0, 50000], --seconds in (0, 600], --repeats at least 1")
    if any(not 1 <= n <= 16 for n in counts):
        parser.error("--consumers must be 1 to 16")
    count = int(args.rate * args.seconds)
    if count < 2:
        parser.error("--rate times --seconds must be at least 2 messages")
    print(f"{args.rate:,.0f} messages/s of {len(_PAYLOAD)} bytes for {args.seconds:g} s, median of {args.repeats} "
          "runs; us of CPU per message")  # fmt: skip
    print("| consumers | mode | each consumer | nats-server |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="rrr-message-floor-") as tmp:
        server = NatsServer(data_dir=Path(tmp) / "nats")
        server.start()
        try:

            async def _stream() -> None:
                nc = await nats.connect(server.url)
                await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE))
                await nc.close()

            asyncio.run(_stream())
            for consumers in counts:
                for mode in MODES:
                    runs = [_run(server, mode, consumers, args.rate, count) for _ in range(args.repeats)]
                    consumer_us = statistics.median(r[0] for r in runs)
                    server_us = statistics.median(r[1] for r in runs)
                    print(f"| {consumers} | {mode} | {consumer_us:.1f} | {server_us:.1f} |", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
