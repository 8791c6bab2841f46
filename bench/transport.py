"""The bare transport: what nats-py and nats-server alone move on this machine, to read every other figure by.

    python bench/transport.py [--messages 200000] [--size 300] [--repeats 3] [--cluster 3] [--sync always]

One nats-server (JetStream, file storage) from the embedded binary on 127.0.0.1, in a temporary directory,
and one Python process (uvloop) doing both ends, so that the figures are a ceiling for one core of Python.
With ``--cluster N``, N nodes routed on loopback (``rrr.deploy.nats_cluster``), the stream replicated on
``min(N, 3)`` of them and the client given every node's URL; ``--sync always`` flushes every node's store
after each write, as ``just up --sync always`` does.
Each measurement runs ``--repeats`` times on a fresh stream; reported is the median in messages per second.

1. core publish -> subscribe: ``--messages`` messages of ``--size`` bytes published on core NATS and
   received by a subscription of the same process (timed until the last one arrived);
2. JetStream publish: the same messages into a file-stored stream, 1,024 acknowledgements in flight at once;
3. JetStream pull consume, one ack per message: a durable pull consumer fetching 512 at a time and
   acknowledging each message (the way the services consume today);
4. JetStream ordered push consume, no acks: an ordered consumer reading the whole stream (flow control and
   idle heartbeats on, as nats-py sets them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import uvloop
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from rrr.deploy.nats_cluster import NatsCluster
from rrr.deploy.nats_server import NatsServer

STREAM = "BENCH"
SUBJECT = "bench.transport"
WINDOW = 1024


def _countdown(n: int) -> tuple[asyncio.Event, Callable[[object], Awaitable[None]]]:
    """A message callback, and the event it sets once it has seen ``n`` messages."""
    done = asyncio.Event()
    seen = 0

    async def _on(_msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    return done, _on


async def _core(nc: Client, payload: bytes, n: int) -> float:
    done, _on = _countdown(n)
    sub = await nc.subscribe("bench.core", cb=_on)
    await nc.flush()
    started = time.perf_counter()
    for _ in range(n):
        await nc.publish("bench.core", payload)
    await done.wait()
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    return n / seconds


async def _fresh_stream(nc: Client, replicas: int) -> None:
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE, num_replicas=replicas))
    # A replicated stream answers once it has elected its leader.
    while True:
        with contextlib.suppress(nats.errors.TimeoutError, nats.js.errors.NotFoundError):
            info = await js.stream_info(STREAM)
            if info.cluster is None or info.cluster.leader:
                return


async def _publish(nc: Client, payload: bytes, n: int, replicas: int) -> float:
    await _fresh_stream(nc, replicas)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    started = time.perf_counter()
    for _ in range(n):
        await js.publish_async(SUBJECT, payload)
    await js.publish_async_completed()
    return n / (time.perf_counter() - started)


async def _pull(nc: Client, n: int) -> float:
    js = nc.jetstream()
    psub = await js.pull_subscribe(
        SUBJECT,
        durable=f"pull{time.monotonic_ns()}",
        stream=STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for msg in await psub.fetch(512, timeout=5):
            await msg.ack()
            seen += 1
    seconds = time.perf_counter() - started
    await psub.unsubscribe()
    return n / seconds


async def _ordered(nc: Client, n: int) -> float:
    js = nc.jetstream()
    done, _on = _countdown(n)
    started = time.perf_counter()
    sub = await js.subscribe(SUBJECT, stream=STREAM, cb=_on, ordered_consumer=True)
    await done.wait()
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    return n / seconds


async def _measure(url: str, n: int, size: int, repeats: int, replicas: int) -> dict[str, list[float]]:
    payload = b"q" * size
    nc = await nats.connect(url.split(","), pending_size=256 * 1024 * 1024)
    results: dict[str, list[float]] = {"core": [], "publish": [], "pull": [], "ordered": []}
    try:
        for _ in range(repeats):
            results["core"].append(await _core(nc, payload, n))
            results["publish"].append(await _publish(nc, payload, n, replicas))
            results["pull"].append(await _pull(nc, n))
            results["ordered"].append(await _ordered(nc, n))
    finally:
        await nc.close()
    return results


def main() -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=300, help="bytes per message (a quote is about 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cluster", type=int, default=1, help="nats-server nodes; the stream on min(N, 3) [1]")
    parser.add_argument("--sync", choices=("default", "always"), default="default", help="JetStream store sync")
    args = parser.parse_args()
    replicas = min(args.cluster, 3)
    sync_always = args.sync == "always"
    with tempfile.TemporaryDirectory() as tmp:
        servers: NatsServer | NatsCluster
        if args.cluster > 1:
            servers = NatsCluster(data_dir=Path(tmp) / "nats", size=args.cluster, sync_always=sync_always)
        else:
            servers = NatsServer(data_dir=Path(tmp) / "nats", sync_always=sync_always)
        servers.start()
        try:
            results = uvloop.run(_measure(servers.url, args.messages, args.size, args.repeats, replicas))
        finally:
            servers.stop()
    labels = {
        "core": "core publish -> subscribe",
        "publish": f"JetStream publish, {WINDOW} acks in flight",
        "pull": "JetStream pull, fetch 512, ack each",
        "ordered": "JetStream ordered push, no acks",
    }
    where = f"{args.cluster} nodes, R{replicas}" if args.cluster > 1 else "1 node"
    print(
        f"bare nats-py transport ({where}, sync {args.sync}), {args.messages:,} messages of {args.size} bytes, "
        f"median of {args.repeats}:"
    )
    for key, label in labels.items():
        values = results[key]
        print(f"  {label:<42} {statistics.median(values):>12,.0f} msgs/s  [{min(values):,.0f}-{max(values):,.0f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
