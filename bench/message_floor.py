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
  RRR_MD, ``rrr.shared.bus.consume``).

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

import nats
import psutil
import uvloop
from hop_floor import paced_publish  # bench/, beside this file
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from rrr.deploy.nats_server import NatsServer

SUBJECT = "floor.quotes"
STREAM = "FLOOR"
MODES = ("core", "ordered push")
_PAYLOAD = b"q" * 300


def _consume(url: str, mode: str, count: int, out: Queue[object]) -> None:
    uvloop.run(_consume_async(url, mode, count, out))


async def _consume_async(url: str, mode: str, count: int, out: Queue[object]) -> None:
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
