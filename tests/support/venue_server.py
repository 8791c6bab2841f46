"""A local venue: a picows WebSocket server that speaks one venue's protocol from a script.

It answers subscriptions (and Kraken's pings) as the venue documents, and runs the script's part of each
connection in order: the n-th connection runs ``session`` n (see ``tests/data/venues/make_frames.py`` for
the actions). A connection beyond the script's sessions is answered and held open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

VENUES_DATA = Path(__file__).parents[1] / "data" / "venues"


def _acks(venue: str, request: dict[str, Any]) -> list[bytes]:
    """What the venue answers to a subscribe (or ping) message; [] to anything else."""
    if venue == "binance" and request.get("method") == "SUBSCRIBE":
        return [json.dumps({"result": None, "id": request["id"]}).encode()]
    if venue == "coinbase" and request.get("type") == "subscribe":
        channels = [{"name": c, "product_ids": request["product_ids"]} for c in request["channels"]]
        return [json.dumps({"type": "subscriptions", "channels": channels}).encode()]
    if venue == "kraken" and request.get("method") == "subscribe":
        params = request["params"]
        return [
            json.dumps(
                {
                    "method": "subscribe",
                    "result": {"channel": params["channel"], "symbol": symbol, "snapshot": True},
                    "success": True,
                    "time_in": "2023-11-14T22:13:20.000000Z",
                    "time_out": "2023-11-14T22:13:20.000100Z",
                    "req_id": request["req_id"],
                }
            ).encode()
            for symbol in params["symbol"]
        ]
    if venue == "kraken" and request.get("method") == "ping":
        return [json.dumps({"method": "pong", "req_id": request["req_id"]}).encode()]
    return []


@dataclass(eq=False)
class ServerConnection:
    """One client connection as the server sees it."""

    number: int
    transport: WSTransport
    subscribes: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


class VenueServer:
    """The server; ``url`` once started."""

    def __init__(self, venue: str, script: Path) -> None:
        self.venue = venue
        self.sessions: dict[int, list[dict[str, Any]]] = {}
        current: list[dict[str, Any]] = []
        for line in script.read_text().splitlines():
            action = json.loads(line)
            if "session" in action:
                current = self.sessions.setdefault(action["session"], [])
            else:
                current.append(action)
        self.connections: list[ServerConnection] = []
        self.pongs = 0
        self.changed = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, venue: str, script: Path) -> AsyncIterator[VenueServer]:
        """A started server, stopped on exit."""
        server = cls(venue, script)
        server._server = await ws_create_server(lambda _request: _Listener(server), "127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]
        server.url = f"ws://127.0.0.1:{port}/"
        try:
            yield server
        finally:
            server._server.close()
            for conn in server.connections:
                conn.transport.disconnect(graceful=False)
            for task in list(server._tasks):
                task.cancel()
            await asyncio.gather(*server._tasks, return_exceptions=True)

    def _notify(self, conn: ServerConnection) -> None:
        conn.changed.set()
        self.changed.set()

    async def _run(self, conn: ServerConnection) -> None:
        transport = conn.transport
        for sent, action in enumerate(self.sessions.get(conn.number, [{"hold": 1}])):
            if conn.disconnected.is_set():
                return
            if "send" in action:
                transport.send(WSMsgType.TEXT, action["send"].encode())
                if sent % 100 == 0:
                    await asyncio.sleep(0)  # let the loop write, and read what the client sends
            elif "await_subscribed" in action:
                while conn.subscribes < action["await_subscribed"] and not conn.disconnected.is_set():
                    conn.changed.clear()
                    await _either(conn.changed, conn.disconnected)
            elif "await_next" in action:
                while not self._next_subscribed(conn) and not conn.disconnected.is_set():
                    self.changed.clear()
                    await _either(self.changed, conn.disconnected)
            elif "ping" in action:
                transport.send_ping(b"venue")
            elif "drop" in action:
                transport.disconnect(graceful=False)
                return
            elif "stall" in action or "hold" in action:
                await conn.disconnected.wait()
                return

    def _next_subscribed(self, conn: ServerConnection) -> bool:
        return any(c.number == conn.number + 1 and c.subscribes > 0 for c in self.connections)


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class _Listener(WSListener):
    def __init__(self, server: VenueServer) -> None:
        self.server = server
        self.conn: ServerConnection | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        server = self.server
        self.conn = ServerConnection(len(server.connections) + 1, transport)
        server.connections.append(self.conn)
        task = asyncio.get_running_loop().create_task(server._run(self.conn))
        server._tasks.add(task)
        task.add_done_callback(server._tasks.discard)
        server._notify(self.conn)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        conn = self.conn
        assert conn is not None
        if frame.msg_type == WSMsgType.PONG:
            self.server.pongs += 1
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT:
            request = json.loads(frame.get_payload_as_bytes())
            conn.requests.append(request)
            answers = _acks(self.server.venue, request)
            for answer in answers:
                transport.send(WSMsgType.TEXT, answer)
            if answers and request.get("method") != "ping":
                conn.subscribes += 1
                self.server._notify(conn)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.conn is not None:
            self.conn.disconnected.set()
            self.server._notify(self.conn)
