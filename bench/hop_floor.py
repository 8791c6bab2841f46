"""The floor of quote -> order accepted on this machine: the system's hops with no work in them.

    python bench/hop_floor.py [--rate 1000] [--seconds 10] [--repeats 3] [--core] [--direct | --bare]

One nats-server (JetStream, file storage) from the embedded binary on 127.0.0.1, in a temporary directory,
and three Python processes (uvloop, nats-py) laid out as `just up none` and `just load` lay out the quote
path, each doing nothing but pass the message on:

- the *generator* publishes a 200-byte message on core NATS into a file-stored stream (as the load harness
  publishes quote batches into RRR_MD), ``--rate`` a second, each stamped with the time it was sent;
- the *strategy relay* reads that stream with an ordered push consumer and no acknowledgements, taking
  what is queued as the services do (``rrr.shared.bus.consume``), and publishes one message per message into
  a second stream, waiting for JetStream's acknowledgement (as a strategy publishes its orders);
- the *execution relay* does the same from the second stream into a third (as execution publishes events);
- the *listener* (in the generator's process, as in the load harness) receives the third stream's messages
  on a core subscription and records when they arrived.

Each relay stamps when it took the message and when it published; reported per hop, p50 / p90 / p99 in
microseconds, median of ``--repeats`` runs, and the whole path from sent to arrived: the least a design with a
stored hop between the processes pays here through nats-py, before a strategy or a risk check runs. ``--core``
runs the same processes on core NATS subjects without streams: the difference is what storing costs.

``--direct`` uses nats-py as directly as it goes: each relay handles a message in the subscription's callback,
publishes it on without waiting for JetStream's acknowledgement and writes it to the socket at once (the
client's own flusher task would take another turn of the loop), so a message passes each process in one
callback.

``--bare`` runs the same path with no client library in any process: the generator writes ``PUB`` lines on a
blocking socket, and the relays and the listener are uvloop protocols that speak the NATS text protocol
themselves (the relays read push consumers of the streams without acknowledgements, created for them, and
publish each message on as it arrives). What is left is the kernel's, the event loop's and nats-server's: the
least these hops cost on this machine between Python processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import uvloop
from hop_stamps import (  # bench/, beside this file
    SIZE,
    Arrived,
    arrived,
    hops_of,
    passed_on,
    print_report,
    stamped,
    start_relays,
)
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from rrr.deploy.nats_server import NatsServer

STAGES = ("md", "cmd", "evt")


def _relay(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    uvloop.run(_relay_async(url, source, target, index, ready, stop_after, core))


async def _relay_async(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    if core:
        sub = await nc.subscribe(f"floor.{source}", pending_msgs_limit=0, pending_bytes_limit=0)
    else:
        sub = await js.subscribe(
            f"floor.{source}",
            stream=source.upper(),
            ordered_consumer=True,
            idle_heartbeat=2.0,
            pending_msgs_limit=0,
            pending_bytes_limit=0,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
    ready.set()
    handled = 0
    try:
        while handled < stop_after:
            try:
                first = await sub.next_msg(timeout=30)
            except nats.errors.TimeoutError:
                return
            # What is queued meanwhile is taken at once and published together, their acknowledgements in
            # flight at the same time, as the services handle a batch (rrr.shared.bus.consume).
            batch = [first]
            while not sub._pending_queue.empty():
                batch.append(sub._pending_queue.get_nowait())
                sub._pending_queue.task_done()
            publishing = []
            for msg in batch:
                data = passed_on(msg.data, index)
                if core:
                    await nc.publish(f"floor.{target}", data)
                else:
                    publishing.append(js.publish(f"floor.{target}", data))
            await asyncio.gather(*publishing)
            handled += len(batch)
    finally:
        await nc.close()


def _direct_relay(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    uvloop.run(_direct_relay_async(url, source, target, index, ready, stop_after, core))


async def _direct_relay_async(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    nc = await nats.connect(url)
    done = asyncio.get_running_loop().create_future()
    handled = 0

    async def _on(msg: nats.aio.msg.Msg) -> None:
        nonlocal handled
        await nc.publish(f"floor.{target}", passed_on(msg.data, index))
        await nc._flush_pending(force_flush=True)  # written now, not at the flusher task's next turn
        handled += 1
        if handled >= stop_after and not done.done():
            done.set_result(None)

    limits = {"pending_msgs_limit": 0, "pending_bytes_limit": 0}
    if core:
        await nc.subscribe(f"floor.{source}", cb=_on, **limits)
    else:
        await nc.jetstream().subscribe(
            f"floor.{source}", cb=_on, stream=source.upper(), ordered_consumer=True, idle_heartbeat=2.0,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW), **limits,
        )  # fmt: skip
    ready.set()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 30 + stop_after / 100)
    finally:
        await nc.close()


def connect_line(url: str) -> bytes:
    """The ``CONNECT`` line of a client without a library, with the URL's user and password if it has them."""
    parts = urlsplit(url)
    connect: dict[str, object] = {"verbose": False, "pedantic": False, "lang": "bare", "version": "0", "protocol": 1}
    if parts.username:
        connect.update(user=unquote(parts.username), **{"pass": unquote(parts.password or "")})
    return f"CONNECT {json.dumps(connect)}\r\n".encode()


class _BareReader(asyncio.Protocol):
    """A NATS subscriber without a client library: each ``MSG`` payload is handed to ``on_payload`` as it is
    parsed, and what that returns (``PUB`` lines, or nothing) is written at the end of the read."""

    def __init__(self, on_payload: Callable[[bytes], bytes | None]) -> None:
        self.on_payload = on_payload
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line = bytes(self.buffer[:end])
            if line.startswith(b"MSG "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(self.buffer) < end + size + 4:
                    break  # the payload is still on its way
                reply = self.on_payload(bytes(self.buffer[end + 2 : end + 2 + size]))
                del self.buffer[: end + size + 4]
                if reply:
                    out.append(reply)
                continue
            del self.buffer[: end + 2]
            if line == b"PING":
                out.append(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(None)  # the answer to the PING after SUB: the server holds the subscription
            elif line.startswith(b"-ERR") and not self.ready.done():
                self.ready.set_exception(RuntimeError(line.decode(errors="replace")))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def _bare_subscribe(url: str, subject: str, on_payload: Callable[[bytes], bytes | None]) -> asyncio.Transport:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: _BareReader(on_payload), parts.hostname, parts.port or 4222
    )
    transport.write(connect_line(url) + f"SUB {subject} 1\r\nPING\r\n".encode())
    await asyncio.wait_for(protocol.ready, 10)
    return cast(asyncio.Transport, transport)


def _bare_relay(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    uvloop.run(_bare_relay_async(url, source, target, index, ready, stop_after, core))


async def _bare_relay_async(
    url: str, source: str, target: str, index: int, ready: multiprocessing.Event, stop_after: int, core: bool
) -> None:
    done = asyncio.get_running_loop().create_future()
    handled = 0
    head = f"PUB floor.{target} {SIZE}\r\n".encode()

    def _on(payload: bytes) -> bytes:
        nonlocal handled
        handled += 1
        if handled >= stop_after and not done.done():
            done.set_result(None)
        return head + passed_on(payload, index) + b"\r\n"

    # Stored hops: the push consumer made for this relay delivers on floor.deliver.<source>.
    transport = await _bare_subscribe(url, f"floor.{source}" if core else f"floor.deliver.{source}", _on)
    ready.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, 30 + stop_after / 100)
    transport.close()


def _bare_publish(url: str, subject: str, rate: float, total: int, payload: Callable[[], bytes]) -> None:
    """``paced_publish`` without a client library: ``PUB`` lines written on a blocking socket."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_line(url))
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            data = payload()
            sock.sendall(f"PUB {subject} {len(data)}\r\n".encode() + data + b"\r\n")
        sock.sendall(b"PING\r\n")
        sock.settimeout(10)
        seen = b""
        while b"PONG" not in seen:  # everything written was read by the server
            chunk = sock.recv(4096)
            if not chunk:
                break
            seen = seen[-8:] + chunk


async def _run(url: str, rate: float, seconds: float, core: bool, mode: str = "") -> dict[str, list[int]]:
    bare = mode == "bare"
    nc = await nats.connect(url)
    js = nc.jetstream()
    for stage in STAGES:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stage.upper())
        if not core:
            await js.add_stream(StreamConfig(name=stage.upper(), subjects=[f"floor.{stage}"], storage=StorageType.FILE))
    total = int(rate * seconds)
    relays = start_relays({"bare": _bare_relay, "direct": _direct_relay}.get(mode, _relay), url, total, core)
    if bare and not core:
        for stage in STAGES[:2]:
            await js.add_consumer(stage.upper(), config=ConsumerConfig(
                deliver_subject=f"floor.deliver.{stage}", ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.NEW,
            ))  # fmt: skip
    came: list[Arrived] = []
    done = asyncio.Event()

    def _arrived(data: bytes) -> None:
        came.append(arrived(data))
        if len(came) == total:
            done.set()

    async def _on(msg: nats.aio.msg.Msg) -> None:
        _arrived(msg.data)

    if bare:
        listener = await _bare_subscribe(url, "floor.evt", _arrived)
        await asyncio.to_thread(_bare_publish, url, "floor.md", rate, total, stamped)
    else:
        await nc.subscribe("floor.evt", cb=_on)
        await nc.flush()
        await asyncio.to_thread(uvloop.run, paced_publish(url, "floor.md", rate, total, stamped))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 30)
    if bare:
        listener.close()
    await nc.close()
    for relay in relays:
        relay.join(10)
    return hops_of(came)


async def paced_publish(url: str, subject: str, rate: float, total: int, payload: Callable[[], bytes]) -> None:
    """Publish ``total`` messages made by ``payload`` (when each is sent) on core NATS, ``rate`` a second.

    For a thread and an event loop of its own: paced by sleeping the thread to the moment each message is due,
    since an event loop's timers wake up to a millisecond late, and another loop (a listener's) is never
    blocked by it.
    """
    nc = await nats.connect(url)
    try:
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # noqa: ASYNC251
            await nc.publish(subject, payload())
            await nc.flush()
    finally:
        await nc.close()


def main() -> int:
    """Run the relays ``--repeats`` times; print each hop's median p50 / p90 / p99 over the runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported (default 3)")
    parser.add_argument(
        "--core", action="store_true", help="the same path on core NATS, no streams: what the stored hops add"
    )
    client = parser.add_mutually_exclusive_group()
    client.add_argument(
        "--direct", action="store_true", help="nats-py as directly as it goes: callbacks, no waiting, written at once"
    )
    client.add_argument(
        "--bare", action="store_true", help="no client library in any process: the NATS protocol spoken directly"
    )
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--rate and --seconds must be positive, --repeats at least 1")
    mode = "bare" if args.bare else "direct" if args.direct else ""
    with tempfile.TemporaryDirectory(prefix="rrr-hop-floor-") as tmp:
        server = NatsServer(data_dir=Path(tmp) / "nats")
        server.start()
        try:
            runs = [uvloop.run(_run(server.url, args.rate, args.seconds, args.core, mode)) for _ in range(args.repeats)]
        finally:
            server.stop()
    how = ("core NATS, no streams" if args.core else "stored hops") + {
        "bare": ", no client library",
        "direct": ", nats-py callbacks written at once",
    }.get(mode, "")
    print_report(how, args.rate, args.seconds, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
