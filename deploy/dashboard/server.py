"""The dashboard's process: the web server, the database reader and the NATS watcher, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator

import msgspec
import nats.errors
import uvicorn

from rrr.deploy import control
from rrr.deploy.dashboard.board import Board
from rrr.deploy.dashboard.config import UiConfig, url_of
from rrr.deploy.dashboard.database import DatabaseReader
from rrr.deploy.dashboard.halt import HALT_AVAILABLE, HaltRequest, publish_halt
from rrr.deploy.dashboard.health import HealthWatch
from rrr.deploy.dashboard.hub import Hub
from rrr.deploy.dashboard.web import create_app
from rrr.shared.errors import RRRError

__all__ = ["DashboardAddressError", "serve"]

_log = logging.getLogger("rrr.ui")

_STOP_TIMEOUT_S = 10.0
# Connections beyond the browsers' WebSockets: page loads, static files, a halt request, a few at a time.
_SPARE_CONNECTIONS = 32
# Trading states shown at most (one per strategy, symbol or the account that is not active).
_TRADING_STATES_MAX = 50


class DashboardAddressError(RRRError):
    """The dashboard's address cannot be listened on."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"cannot serve the dashboard on {host}:{port}: expected a free port on an address of this machine, "
            f"but {reason} (--host, --port)"
        )


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """The server itself: when it started, its browsers and their limits."""

    started_ms: int
    clients: int
    max_clients: int
    refused_clients: int
    push_hz: float


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=64)
    except OSError as exc:
        raise DashboardAddressError(host, port, exc.strerror or str(exc)) from None


class _Server(uvicorn.Server):
    """uvicorn's server, leaving the signals to the caller (one stop event stops everything)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    config: UiConfig,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[str], None] | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Serve the dashboard until ``stop`` is set; ``on_ready(url)`` once it listens.

    Raises:
        DashboardAddressError: the address cannot be listened on.
    """
    board = Board()
    hub = Hub(board, max_clients=config.max_clients, push_hz=config.push_hz)
    reader = DatabaseReader(config.database_url, board, refresh_s=config.refresh_ms / 1000, rows=config.rows)
    watch = HealthWatch(config.nats_url, board)

    async def halter(request: HaltRequest) -> str:
        return await publish_halt(watch.bus, request)

    app = create_app(
        board,
        hub,
        token=secrets.token_urlsafe(32),
        halter=halter,
        halt_available=HALT_AVAILABLE,
        allowed_hosts=config.allowed_hosts,
    )
    listening = _listen(config.host, config.port)
    port = listening.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            lifespan="off",
            http="h11",
            ws="websockets-sansio",
            # Past this many connections at once, uvicorn answers 503.
            limit_concurrency=config.max_clients + _SPARE_CONNECTIONS,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            # A browser sends nothing on its WebSocket but pings: small frames only.
            ws_max_size=4096,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            # Request line and headers together.
            h11_max_incomplete_event_size=16 * 1024,
        )
    )
    started_ms = int(wall_clock() * 1000)

    async def _meta() -> None:
        while not stop.is_set():
            board.update(
                "meta",
                Meta(
                    started_ms=started_ms,
                    clients=hub.clients,
                    max_clients=hub.max_clients,
                    refused_clients=hub.refused,
                    push_hz=config.push_hz,
                ),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _trading() -> None:
        # The trading states that are not active (halted, reducing: which scope, why, set by whom), each second.
        while not stop.is_set():
            bus = watch.bus
            if bus is not None:
                try:
                    states = (await control.status(bus))["trading"]
                except (nats.errors.Error, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    _log.warning("could not read the trading states: %s", exc)
                else:
                    board.update("trading", {"states": dict(list(states.items())[:_TRADING_STATES_MAX])})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _stop_server() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(reader.run(stop))
        tasks.create_task(watch.run(stop))
        tasks.create_task(_meta())
        tasks.create_task(_trading())
        tasks.create_task(_stop_server())
        serving = tasks.create_task(server.serve(sockets=[listening]))
        url = url_of(config.host, port)
        _log.info("serving the dashboard at %s with %r", url, config)
        if on_ready is not None:
            on_ready(url)
        try:
            await serving
        finally:
            # However the server ended, the readers end with it.
            stop.set()
