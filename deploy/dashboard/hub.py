"""The browsers' WebSockets: at most ``max_clients`` at once, each sent at most ``push_hz`` messages a second.

Every browser first gets the whole board, then the sections that changed since its last message. What waits
for a browser is one value per section, the newest (a slow browser skips the values in between, never
piles them up), so a browser costs at most one board of memory however slow it reads. A browser that takes
longer than ``send_timeout_s`` to take one message, or that sends anything but small keep-alives, is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from rrr.deploy.dashboard.board import Board, message

__all__ = ["CLOSE_BUSY", "CLOSE_POLICY", "Hub"]

_log = logging.getLogger("rrr.ui.hub")

# WebSocket close codes (RFC 6455): "try again later", and "policy violation".
CLOSE_BUSY = 1013
CLOSE_POLICY = 1008
# A browser sends nothing but may ping; anything beyond this many messages in a second closes it.
_RECEIVED_PER_S = 20


@dataclass(slots=True, eq=False)
class _Client:
    pending: dict[str, bytes] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """Sends the board to every connected browser."""

    def __init__(
        self,
        board: Board,
        *,
        max_clients: int,
        push_hz: float,
        send_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._board = board
        self.max_clients = max_clients
        self._interval_s = 1.0 / push_hz
        self._send_timeout_s = send_timeout_s
        self._clock = clock
        self._clients: set[_Client] = set()
        self.refused = 0
        board.listen(self._changed)

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return len(self._clients)

    def _changed(self, name: str, encoded: bytes) -> None:
        for client in self._clients:
            client.pending[name] = encoded
            client.wake.set()

    async def serve(self, websocket: WebSocket) -> None:
        """Send the board to ``websocket`` until it closes, or refuse it when ``max_clients`` are connected."""
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            await websocket.accept()
            await websocket.close(CLOSE_BUSY, f"at most {self.max_clients} browsers at once")
            return
        client = _Client()
        self._clients.add(client)
        await websocket.accept()
        try:
            receiving = asyncio.ensure_future(self._receive(websocket))
            sending = asyncio.ensure_future(self._send(websocket, client))
            try:
                # Whichever ends first (the browser closed, or a send failed) ends both.
                await asyncio.wait((receiving, sending), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (receiving, sending):
                    task.cancel()
                for task in (receiving, sending):
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError):
                        await task
        finally:
            self._clients.discard(client)

    async def _send(self, websocket: WebSocket, client: _Client) -> None:
        client.pending.clear()
        await self._send_now(websocket, self._board.snapshot())
        while True:
            sent = self._clock()
            await client.wake.wait()
            # At most push_hz messages a second: what changes meanwhile waits, the newest value of each section.
            rest = self._interval_s - (self._clock() - sent)
            if rest > 0:
                await asyncio.sleep(rest)
            client.wake.clear()
            sections, client.pending = client.pending, {}
            await self._send_now(websocket, message(sections))

    async def _send_now(self, websocket: WebSocket, data: bytes) -> None:
        try:
            await asyncio.wait_for(websocket.send_text(data.decode()), self._send_timeout_s)
        except TimeoutError:
            _log.info("closing a browser that took over %g s to take one update", self._send_timeout_s)
            with contextlib.suppress(Exception):  # the socket is stuck: whatever closing it raises, it goes
                await asyncio.wait_for(websocket.close(CLOSE_POLICY, "too slow"), 1.0)
            raise

    async def _receive(self, websocket: WebSocket) -> None:
        """Read what the browser sends (nothing is expected) until it closes; close one that floods."""
        window_start, received = self._clock(), 0
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                return
            received += 1
            now = self._clock()
            if now - window_start >= 1.0:
                window_start, received = now, 1
            if received > _RECEIVED_PER_S:
                await websocket.close(CLOSE_POLICY, "this socket only sends")
                return
