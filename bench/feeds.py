"""WebSocket clients for the live feeds: ``websockets`` against ``picows`` on frames a local server blasts.

    python bench/feeds.py [--frames 200000] [--repeats 5] [--decode]

What ran: a server process (picows, so that the sender is never the bottleneck) that sends ``--frames``
Binance ``bookTicker`` frames (about 100 bytes of JSON each, text frames, no compression), laid out once
and written in one call, as fast as its socket takes them to the one client that connects; a client
process on uvloop that receives them all, with ``websockets`` 17 (``websockets.asyncio.client``,
``async for`` over the connection, the library's default ``max_queue``) or with ``picows`` 2 (a
``WSListener`` whose ``on_ws_frame`` takes each payload as bytes). With ``--decode`` each client also
decodes every frame with msgspec into the bookTicker fields,
the least work a feed does per frame. Each client connects to a fresh server; timed from the first frame
to the last, and the client's CPU (user + system of its own process, ``time.process_time``) over the same
span, divided by the frames: CPU per frame. Each measurement runs ``--repeats`` times, alternating the
clients; reported is the median. Both processes share the machine's cores (2 on the project's machine).

Last, for scale, the feed's own normaliser alone (``rrr.market_data.venues.binance``: decode, check every
value, build the ``Quote``) on the same frames in one process, without a socket: CPU per frame, median of
the repeats; and the normaliser with the service's sink behind it (``BusTickSink``: quotes in natural
batches on core NATS to a real nats-server, from the embedded binary, whose stream stores them), in bursts
of 100 frames, until the sink has published every quote: frames/s and CPU per frame of that process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from rrr.deploy.nats_server import NatsServer


class _BookTicker(msgspec.Struct):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


_decoder = msgspec.json.Decoder(_BookTicker)


def _frames(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "u": 400900217 + i,
                "s": "BTCUSDT",
                "b": f"{60000 + i % 97}.01000000",
                "B": "0.31210000",
                "a": f"{60001 + i % 97}.02000000",
                "A": "1.40660000",
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


async def _serve(n: int) -> None:
    from picows import WSListener, WSTransport, ws_create_server

    blob = b"".join(bytes([0x81, len(frame)]) + frame for frame in _frames(n))  # every frame < 126 bytes
    done = asyncio.Event()

    class _Blaster(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: WSTransport) -> None:
            # The frames are laid out once, unmasked as a server sends them, and written in one call: the
            # sender costs next to nothing, so the client under test is what bounds the rate.
            transport.underlying_transport.write(blob)
            transport.send_close()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            done.set()

    server = await ws_create_server(lambda _request: _Blaster(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await done.wait()
    server.close()


async def _client_websockets(url: str, n: int, decode: bool) -> tuple[float, float]:
    from websockets.asyncio.client import connect

    seen = 0
    async with connect(url, max_size=1 << 20, compression=None) as ws:
        started = cpu = 0.0
        async for message in ws:
            if seen == 0:
                started, cpu = time.perf_counter(), time.process_time()
            if decode:
                _decoder.decode(message)
            seen += 1
            if seen == n:
                break
        return time.perf_counter() - started, time.process_time() - cpu


async def _client_picows(url: str, n: int, decode: bool) -> tuple[float, float]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    finished = asyncio.get_running_loop().create_future()
    marks: dict[str, float] = {}

    class _Counter(WSListener):  # type: ignore[misc]
        seen = 0

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            if self.seen == 0:
                marks["started"], marks["cpu"] = time.perf_counter(), time.process_time()
            payload = frame.get_payload_as_bytes()
            if decode:
                _decoder.decode(payload)
            self.seen += 1
            if self.seen == n and not finished.done():
                finished.set_result((time.perf_counter() - marks["started"], time.process_time() - marks["cpu"]))

    transport, _ = await ws_connect(_Counter, url)
    result: tuple[float, float] = await finished
    transport.disconnect()
    return result


def _measure(client: str, n: int, decode: bool) -> tuple[float, float]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(n)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        run = _client_websockets if client == "websockets" else _client_picows
        seconds, cpu = uvloop.run(run(f"ws://127.0.0.1:{port}", n, decode))
    finally:
        server.wait(timeout=60)
    return n / seconds, cpu / n * 1e6


def main() -> None:
    """Run the comparison and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode", action="store_true", help="also decode each frame with msgspec")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve))
        return
    runs: dict[str, list[tuple[float, float]]] = {"websockets": [], "picows": []}
    for _ in range(args.repeats):
        for client in runs:
            runs[client].append(_measure(client, args.frames, args.decode))
    what = "receive + msgspec decode" if args.decode else "receive only"
    print(f"{args.frames:,} bookTicker frames, {what}, median of {args.repeats}:")
    for client, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        spread: Any = ", ".join(f"{r[0]:,.0f}" for r in results)
        print(f"  {client:<10} {rate:>12,.0f} frames/s  {cpu:6.2f} us CPU/frame  (runs: {spread})")
    normaliser_us = _normaliser_us(args.frames, args.repeats)
    print(f"  normaliser alone (binance bookTicker -> Quote): {normaliser_us:.2f} us CPU/frame")
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(data_dir=Path(tmp) / "nats")
        server.start()
        try:
            published = [uvloop.run(_publish_path(server.url, args.frames)) for _ in range(args.repeats)]
        finally:
            server.stop()
    rate = statistics.median(r[0] for r in published)
    cpu = statistics.median(r[1] for r in published)
    print(
        f"  normalise and publish (the service's sink: quote batches on core NATS, the stream storing them): "
        f"{rate:,.0f} frames/s, {cpu:.2f} us CPU/frame"
    )


def _normaliser_us(n: int, repeats: int) -> float:
    from rrr.market_data.venues import binance

    frames = [b'{"stream":"btcusdt@bookTicker","data":' + frame + b"}" for frame in _frames(n)]
    results = []
    for _ in range(repeats):
        normaliser = binance.Normaliser({"BTCUSDT": "BTCUSDT"})
        started = time.process_time()
        for frame in frames:
            normaliser.decode(frame, 1_700_000_000_000_000_000)
        results.append((time.process_time() - started) / n * 1e6)
    return statistics.median(results)


async def _publish_path(url: str, n: int) -> tuple[float, float]:
    """Frames through the Binance normaliser into the market-data service's sink (``BusTickSink``: natural
    batches on ``md.quotes.<shard>.binance``) on a real nats-server, in bursts of 100 frames (what one read
    of a busy connection hands over), until the sink has handed every quote to the server (a flush):
    frames/s and this process's CPU per frame."""
    from rrr.market_data.handlers import MarketDataCounters
    from rrr.market_data.live import BusTickSink
    from rrr.market_data.venues import binance
    from rrr.shared.bus import Bus

    frames = [b'{"stream":"btcusdt@bookTicker","data":' + frame + b"}" for frame in _frames(n)]
    bus = await Bus.connect(url, service="bench", name="bench-feeds")
    try:
        await bus.ensure_streams(max_age_s=3600)
        with contextlib.suppress(Exception):
            await bus.js.purge_stream("RRR_MD")
        sink = BusTickSink(bus, 1, MarketDataCounters())
        normaliser = binance.Normaliser({"BTCUSDT": "BTCUSDT"})
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, 100):
            ticks = []
            for frame in frames[first : first + 100]:
                ticks.extend(normaliser.decode(frame, time.time_ns()).ticks)
            await sink.put(ticks)
        await bus.nc.flush()
        if sink.counters.live_published != n:
            raise RuntimeError(f"published {sink.counters.live_published} of {n} quotes")
        return n / (time.perf_counter() - started), (time.process_time() - cpu) / n * 1e6
    finally:
        await bus.close()


if __name__ == "__main__":
    main()
