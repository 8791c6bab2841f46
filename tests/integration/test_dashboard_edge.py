"""The dashboard tried as an attacker and a careless user would: foreign hosts and origins, a halt without its
token or confirmation, oversized and malformed requests, more browsers than it takes, a socket that floods,
and servers that are not there. Each try gets a clear refusal, and the page goes on serving the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rrr.deploy.dashboard.board import Board
from rrr.deploy.dashboard.config import UiConfig
from rrr.deploy.dashboard.halt import HaltRequest
from rrr.deploy.dashboard.hub import CLOSE_BUSY, CLOSE_POLICY, Hub
from rrr.deploy.dashboard.server import serve
from rrr.deploy.dashboard.web import HALT_BODY_MAX, TOKEN_HEADER, create_app
from rrr.deploy.nats_server import NatsEndpoint
from rrr.deploy.processes import free_port
from rrr.persistence.schema import migrate
from tests.support.system import assert_no_permission_violations

BIN = Path(sys.executable).parent
_TIMEOUT_S = 10.0


class Dashboard:
    """A dashboard served by this test's event loop, on a free port."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1].strip("/"))
        self.host = f"127.0.0.1:{self.port}"

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request as written here, headers and all; the status, headers and body answered (status
        0: the server reset the connection instead)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            head = {"Host": self.host, "Connection": "close", **(headers or {})}
            if body and "Content-Length" not in head and "Transfer-Encoding" not in head:
                head["Content-Length"] = str(len(body))
            lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            response = await asyncio.wait_for(reader.read(), _TIMEOUT_S)
        except ConnectionResetError:
            return 0, {}, b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        status_line, _, rest = response.partition(b"\r\n")
        header_block, _, content = rest.partition(b"\r\n\r\n")
        answered = {}
        for line in header_block.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                answered[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), answered, content

    async def state(self) -> dict[str, Any]:
        status, _, body = await self.request("GET", "/api/state")
        assert status == 200, body
        decoded: dict[str, Any] = json.loads(body)
        return decoded

    async def token(self) -> str:
        status, _, page = await self.request("GET", "/")
        assert status == 200
        found = re.search(rb'name="rrr-token" content="([^"]+)"', page)
        assert found is not None, page
        return found[1].decode()

    async def halt(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        head = {"Content-Type": "application/json", "Origin": f"http://{self.host}", **headers}
        status, _, content = await self.request("POST", "/api/halt", head, body)
        return status, json.loads(content)

    def socket(self, origin: str | None = None, host: str | None = None) -> Any:
        """A WebSocket to the page's ``/ws``, sent as from ``origin``, asking for ``host`` (connected here)."""
        host = host or self.host
        return connect(
            f"ws://{host}/ws",
            origin=origin or f"http://{host}",  # type: ignore[arg-type]
            proxy=None,
            open_timeout=_TIMEOUT_S,
            # Whatever host the URI names, the connection is to this server.
            host="127.0.0.1",
            port=self.port,
        )


@contextlib.asynccontextmanager
async def serving(
    nats_url: str, database_url: str, *, reachable: bool = True, **settings: Any
) -> AsyncIterator[Dashboard]:
    """The dashboard on a free port; with ``reachable``, once it has read the database and joined NATS."""
    config = UiConfig(nats_url=nats_url, database_url=database_url, port=0, **settings)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, stop, on_ready=ready.set_result))
    try:
        dashboard = Dashboard(await asyncio.wait_for(asyncio.shield(ready), _TIMEOUT_S))
        for _ in range(200):
            state = await dashboard.state()
            if not reachable or ("summary" in state and state["health"]["nats"] == "connected"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the dashboard did not reach its servers: {state}")
        yield dashboard
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def dashboard(nats_server: NatsEndpoint, database_url: str, db: asyncpg.Connection) -> AsyncIterator[Dashboard]:
    await migrate(db)
    async with serving(nats_server.url_for("ui"), database_url, max_clients=3, push_hz=4) as running:
        yield running
    assert_no_permission_violations(nats_server)


async def _first(browser: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(browser.recv(), _TIMEOUT_S)
    decoded: dict[str, Any] = json.loads(message)
    return decoded


async def test_the_page_is_served_with_its_token_and_headers_that_forbid_framing_and_foreign_scripts(
    dashboard: Dashboard,
) -> None:
    status, headers, page = await dashboard.request("GET", "/")

    assert status == 200
    assert b'name="rrr-token" content="' in page
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"  # the page holds the token
    status, headers, _ = await dashboard.request("GET", "/static/dashboard.js")
    assert status == 200
    assert headers["x-content-type-options"] == "nosniff"


async def test_each_page_load_of_one_server_carries_the_same_token_and_another_server_has_another(
    dashboard: Dashboard, nats_server: NatsEndpoint, database_url: str
) -> None:
    token = await dashboard.token()
    assert await dashboard.token() == token
    async with serving(nats_server.url_for("ui"), database_url) as other:
        assert await other.token() != token


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
async def test_a_request_for_another_host_name_is_refused_so_a_rebound_dns_name_reads_nothing(
    dashboard: Dashboard, host: str
) -> None:
    for path in ("/", "/api/state"):
        status, _, body = await dashboard.request("GET", path, {"Host": host})
        assert status == 400, body
        assert b"rrr-token" not in body
        assert b"Host" in body
    with pytest.raises(InvalidStatus) as refused:
        async with dashboard.socket(host=host if ":" in host else f"{host}:{dashboard.port}"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_websocket_from_another_sites_page_is_refused(dashboard: Dashboard) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with dashboard.socket(origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_halt_without_the_page_token_or_with_a_wrong_one_is_refused_and_logged(
    dashboard: Dashboard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rrr.ui")
    status, answer = await dashboard.halt(b'{"confirm": "HALT"}')
    assert (status, answer["ok"]) == (403, False)
    assert "token" in answer["error"]
    status, answer = await dashboard.halt(b'{"confirm": "HALT"}', **{TOKEN_HEADER: "guessed"})
    assert status == 403
    assert caplog.text.count("missing or wrong token") == 2
    assert "HALT requested" not in caplog.text


async def test_a_halt_from_another_sites_page_is_refused_even_with_the_token(dashboard: Dashboard) -> None:
    token = await dashboard.token()
    status, answer = await dashboard.halt(b'{"confirm": "HALT"}', Origin="http://evil.example", **{TOKEN_HEADER: token})
    assert status == 403
    assert "own page" in answer["error"]


async def test_a_halt_body_over_its_limit_is_refused_before_it_is_read(dashboard: Dashboard) -> None:
    headers = {"Content-Type": "application/json", TOKEN_HEADER: await dashboard.token()}
    # Declared larger than the limit: refused at once, with nothing sent.
    status, _, body = await dashboard.request("POST", "/api/halt", {**headers, "Content-Length": "10000000"})
    assert status == 413, body
    # Sent in chunks, with no length declared: refused once past the limit.
    chunk = b"x" * (HALT_BODY_MAX + 1)
    chunked = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    status, _, body = await dashboard.request("POST", "/api/halt", {**headers, "Transfer-Encoding": "chunked"}, chunked)
    assert status == 413, body


@pytest.mark.parametrize(
    ("content_type", "body", "status", "says"),
    [
        ("text/plain", b'{"confirm": "HALT"}', 415, "JSON"),
        ("application/json", b"{not json", 400, "malformed"),
        ("application/json", b"{}", 400, "confirm"),
        ("application/json", b'{"confirm": "yes"}', 400, "confirm"),
        ("application/json", b'{"confirm": "HALT", "scope": "all"}', 400, "unknown field"),
        ("application/json", b'{"confirm": "HALT", "reason": "\\u001b[2J"}', 400, "reason"),
    ],
)
async def test_a_halt_that_is_not_a_plain_json_confirmation_is_refused(
    dashboard: Dashboard, content_type: str, body: bytes, status: int, says: str
) -> None:
    answered, answer = await dashboard.halt(
        body, **{"Content-Type": content_type, TOKEN_HEADER: await dashboard.token()}
    )
    assert answered == status, answer
    assert says in answer["error"]


async def test_a_confirmed_halt_is_logged_answered_honestly_and_not_taken_twice_in_a_row(
    dashboard: Dashboard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rrr.ui")
    token = await dashboard.token()
    status, answer = await dashboard.halt(b'{"confirm": "HALT", "reason": "test"}', **{TOKEN_HEADER: token})
    # The account's trading state is set to halted as `just halt` sets it; no execution runs here, so the
    # answer says that no shard confirmed yet (each obeys when it starts), not that trading stopped.
    assert status == 200, answer
    assert answer["outcome"].startswith("halted account (revision ")
    assert "0/1 shards confirmed; not confirmed by shard 0" in answer["outcome"]
    assert re.search(r"HALT requested by rrr-ui@127\.0\.0\.1:\d+ \(id ui-halt-[0-9a-f]{16}, reason test\)", caplog.text)
    status, answer = await dashboard.halt(b'{"confirm": "HALT"}', **{TOKEN_HEADER: token})
    assert status == 429
    assert caplog.text.count("HALT requested") == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/halt", 405),
        ("PUT", "/", 405),
        ("GET", "/nothing", 404),
        ("GET", "/static/../web.py", 404),
        ("GET", "/static/%2e%2e/web.py", 404),
        ("GET", "/static/..%2fweb.py", 404),
    ],
)
async def test_what_the_dashboard_does_not_serve_is_refused(
    dashboard: Dashboard, method: str, path: str, status: int
) -> None:
    answered, _, body = await dashboard.request(method, path)
    assert answered == status, body
    assert b"import" not in body


async def test_a_request_whose_headers_never_end_within_bounds_is_refused(dashboard: Dashboard) -> None:
    # The request line and headers are buffered up to 16 KiB past one read of the socket, no further.
    status, _, _ = await dashboard.request("GET", "/", {"X-Filler": "x" * 200_000})
    assert status in (0, 400, 431)
    status, _, _ = await dashboard.request("GET", "/healthz")
    assert status == 200


async def test_more_browsers_than_the_limit_are_turned_away_and_those_in_keep_their_updates(
    dashboard: Dashboard,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        browsers = [await stack.enter_async_context(dashboard.socket()) for _ in range(3)]
        for browser in browsers:
            assert "summary" in await _first(browser)  # the whole board first
        for _ in range(2):
            async with dashboard.socket() as extra:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(extra.recv(), _TIMEOUT_S)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == CLOSE_BUSY
        # Those in go on getting updates: the server's own figures, a second apart.
        for browser in browsers:
            assert await _first(browser)
        await browsers[0].close()
        async with dashboard.socket() as late:
            assert "summary" in await _first(late)
    assert (await dashboard.state())["meta"]["refused_clients"] == 2


async def test_a_browser_that_floods_its_socket_is_closed(dashboard: Dashboard) -> None:
    async with dashboard.socket() as browser:
        await _first(browser)
        with contextlib.suppress(ConnectionClosed):  # closed by the server part way through
            for _ in range(200):
                await browser.send("x")
        await asyncio.wait_for(browser.wait_closed(), _TIMEOUT_S)
    assert browser.close_code == CLOSE_POLICY


async def test_a_websocket_frame_over_4_kib_closes_the_socket(dashboard: Dashboard) -> None:
    async with dashboard.socket() as browser:
        await _first(browser)
        await browser.send("x" * 10_000)
        await asyncio.wait_for(browser.wait_closed(), _TIMEOUT_S)
    assert browser.close_code == 1009  # message too big


@contextlib.asynccontextmanager
async def _app_served(app: Any) -> AsyncIterator[int]:
    """An ASGI application served by uvicorn on a free port of this machine."""
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="websockets-sansio"))
    serving_task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving_task, 10)


async def test_a_halt_the_system_carries_out_is_answered_with_what_came_of_it_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rrr.ui")
    asked: list[HaltRequest] = []

    async def halter(request: HaltRequest) -> str:
        asked.append(request)
        return "halted account: 2/2 shards confirmed in 3.1 ms"

    board = Board()
    app = create_app(board, Hub(board, max_clients=1, push_hz=1), token="t0ken", halter=halter, halt_available=True)
    async with _app_served(app) as port:
        dashboard = Dashboard(f"http://127.0.0.1:{port}/")
        status, answer = await dashboard.halt(b'{"confirm": "HALT", "reason": "news"}', **{TOKEN_HEADER: "t0ken"})

    assert status == 200, answer
    assert answer["outcome"] == "halted account: 2/2 shards confirmed in 3.1 ms"
    [request] = asked
    assert answer["id"] == request.id
    assert request.reason == "news"
    assert request.requested_by.startswith("rrr-ui@127.0.0.1:")
    assert f"halt {request.id} published: halted account: 2/2 shards confirmed" in caplog.text
    assert json.loads(board.sections["halt"]) == {"available": True}


async def test_one_browser_gets_at_most_push_hz_messages_a_second_whatever_the_board_does() -> None:
    board = Board()
    hub = Hub(board, max_clients=4, push_hz=5)
    async with _app_served(Starlette(routes=[WebSocketRoute("/ws", hub.serve)])) as port:
        async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None) as browser:
            await _first(browser)
            received: list[dict[str, Any]] = []

            async def _read() -> None:
                while True:
                    received.append(json.loads(await browser.recv()))

            reading = asyncio.create_task(_read())
            loop = asyncio.get_running_loop()
            started = loop.time()
            n = 0
            while loop.time() - started < 2.0:
                n += 1
                board.update("counter", n)
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.5)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        # About 1,000 changes in 2 s came to at most 5 messages a second, the last one with the newest value.
        assert n > 100
        assert 2 <= len(received) <= 2.5 * 5 + 1, len(received)
        assert received[-1]["counter"] == n


async def test_started_before_the_servers_it_serves_the_page_and_says_what_it_cannot_reach(tmp_path: Path) -> None:
    nowhere_nats = f"nats://ui:secret@127.0.0.1:{free_port()}"
    nowhere_pg = f"postgresql://rrr_reader:secret@127.0.0.1:{free_port()}/rrr"
    async with serving(nowhere_nats, nowhere_pg, reachable=False) as dashboard:
        for _ in range(100):
            state = await dashboard.state()
            if "database" in state:
                break
            await asyncio.sleep(0.1)
        assert state["database"]["ok"] is False
        assert "secret" not in json.dumps(state)
        assert state["health"]["nats"] == "connecting"
        status, _, page = await dashboard.request("GET", "/")
        assert status == 200
        assert b"rrr-token" in page


def _tool(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_rrr_ui_with_no_database_says_so_in_one_line(tmp_path: Path) -> None:
    done = _tool([str(BIN / "rrr-ui")], tmp_path)
    assert done.returncode == 2
    assert "--database-url: expected the DSN of a role that may read the database" in done.stderr


def test_rrr_ui_on_an_address_it_cannot_listen_on_says_so_in_one_line(tmp_path: Path) -> None:
    done = _tool(
        [str(BIN / "rrr-ui"), "--database-url", "postgresql://x@127.0.0.1:1/x", "--host", "192.0.2.1"], tmp_path
    )
    assert done.returncode == 1
    assert "rrr-ui: error: cannot serve the dashboard on 192.0.2.1:0" in done.stderr
    assert "Traceback" not in done.stderr


def test_just_ui_with_the_system_down_or_a_host_name_is_refused_in_one_line(tmp_path: Path) -> None:
    done = _tool([str(BIN / "rrr-stack"), "--run-dir", str(tmp_path / "run"), "ui"], tmp_path)
    assert done.returncode == 1
    assert "the system is not up: start it with `just up`" in done.stdout
    done = _tool([str(BIN / "rrr-stack"), "--run-dir", str(tmp_path / "run"), "ui", "--port", "70000"], tmp_path)
    assert done.returncode == 2
    assert "--port: expected 0 to 65535" in done.stderr
