"""The dashboard's web edge: the page, its static files, its WebSocket, and the halt request.

What reaches the server is checked here, before anything acts on it:

- the ``Host`` header must be an IP address, ``localhost`` or a name of ``--allowed-hosts``, so that a page of
  another site cannot reach this one through a name of its own that resolves here (DNS rebinding);
- a WebSocket or a POST from a browser must come from this page's own origin (``Origin``), so that another
  site open in the same browser can neither read the positions nor press the halt;
- the halt is a POST of at most ``HALT_BODY_MAX`` bytes of JSON carrying the page's token in a header
  (``X-RRR-Token``, which a page of another origin cannot send without this server allowing it, and it
  allows none) and the confirmation ``{"confirm": "HALT"}``; at most one is taken every
  ``HALT_MIN_INTERVAL_S``, and every halt request is logged with who asked, whether refused or carried out;
- every answer forbids framing (so no other page can lay the halt button under a decoy) and runs no script
  but the page's own files (Content-Security-Policy).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from rrr.deploy.dashboard.board import Board
from rrr.deploy.dashboard.halt import HaltRequest, HaltUnavailableError
from rrr.deploy.dashboard.hub import CLOSE_POLICY, Hub
from rrr.deploy.terminal import printable

__all__ = ["HALT_BODY_MAX", "HALT_MIN_INTERVAL_S", "STATIC", "TOKEN_HEADER", "create_app"]

_log = logging.getLogger("rrr.ui.web")

STATIC = Path(__file__).parent / "static"
TOKEN_HEADER = "x-rrr-token"  # noqa: S105 - the header's name, not a secret
HALT_BODY_MAX = 1024
HALT_MIN_INTERVAL_S = 2.0
_TOKEN_PLACEHOLDER = "__RRR_TOKEN__"  # noqa: S105 - where the page's token goes in index.html
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class HaltForm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of a halt request."""

    confirm: Literal["HALT"]
    reason: Annotated[str, msgspec.Meta(max_length=200, pattern=r"\A[^\x00-\x1f\x7f]*\Z")] = ""


_halt_form = msgspec.json.Decoder(HaltForm)


class _TooLargeError(Exception):
    """A request body over its limit."""


def _host_allowed(host_header: str | None, names: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this server: an IP address, localhost, or a name it was told of."""
    if not host_header:
        return False
    if host_header.startswith("["):  # [IPv6] or [IPv6]:port
        host = host_header[1 : host_header.find("]")] if "]" in host_header else ""
    else:
        host = host_header.split(":")[0] if host_header.count(":") == 1 else host_header
    host = host.lower()
    if host == "localhost" or host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_origin(headers: Headers) -> bool:
    """Whether a browser's request comes from this page: its ``Origin``, if it sent one, is this host."""
    origin = headers.get("origin")
    if origin is None:
        return True  # not sent by a browser page (a script on this machine): the token still decides
    return origin in (f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}")


class _Guard:
    """Refuses a request for another host, and adds the security headers to every HTTP answer."""

    def __init__(self, app: ASGIApp, names: Iterable[str]) -> None:
        self.app = app
        self.names = frozenset(name.lower() for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _host_allowed(headers.get("host"), self.names):
            _log.info("refused a request for host %s", printable(headers.get("host", ""), 100))
            if scope["type"] == "http":
                await _error(400, "unexpected Host header")(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": CLOSE_POLICY})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for key, value in _SECURITY_HEADERS.items():
                    response_headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, _send)


def _error(status: int, error: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error}, status_code=status)


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused beyond ``limit`` bytes (whatever Content-Length claims)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLargeError
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLargeError
    return bytes(body)


def create_app(
    board: Board,
    hub: Hub,
    *,
    token: str,
    halter: Callable[[HaltRequest], Awaitable[str]],
    halt_available: bool,
    allowed_hosts: Iterable[str] = (),
    wall_clock_ns: Callable[[], int] = time.time_ns,
    clock: Callable[[], float] = time.monotonic,
) -> ASGIApp:
    """The dashboard as an ASGI application.

    Args:
        board: The sections the page shows.
        hub: Sends them to the browsers.
        token: The page's secret for the halt request: in the page, required in the request's header.
        halter: Publishes a confirmed halt and says what came of it (``rrr.deploy.dashboard.halt.publish_halt``).
        halt_available: Whether the system has a halt control; the page says so beside the button.
        allowed_hosts: Names the page may be asked for besides IP addresses and localhost.
        wall_clock_ns: The time of a halt request.
        clock: Monotonic time, for the halts' rate limit.
    """
    page = (STATIC / "index.html").read_text().replace(_TOKEN_PLACEHOLDER, token)
    if _TOKEN_PLACEHOLDER in page or token not in page:
        raise RuntimeError("index.html: expected one token placeholder")
    last_halt = [-HALT_MIN_INTERVAL_S]

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    async def state(request: Request) -> Response:
        return Response(board.snapshot(), media_type="application/json", headers={"cache-control": "no-store"})

    async def halt(request: Request) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        if not _same_origin(request.headers):
            _log.warning("halt refused from %s: Origin %s is not this page", client,
                         printable(request.headers.get("origin", ""), 100))  # fmt: skip
            return _error(403, "a halt is asked from the dashboard's own page only")
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), token.encode()):
            _log.warning("halt refused from %s: missing or wrong token", client)
            return _error(403, "missing or wrong page token: reload the dashboard and try again")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "expected a JSON body (Content-Type: application/json)")
        try:
            body = await _body(request, HALT_BODY_MAX)
        except _TooLargeError:
            _log.warning("halt refused from %s: body over %d bytes", client, HALT_BODY_MAX)
            return _error(413, f"expected a body of at most {HALT_BODY_MAX} bytes")
        try:
            form = _halt_form.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("halt refused from %s: %s", client, printable(str(exc), 200))
            return _error(400, f'expected {{"confirm": "HALT", "reason": "..."}}: {exc}')
        now = clock()
        if now - last_halt[0] < HALT_MIN_INTERVAL_S:
            _log.warning("halt refused from %s: another came less than %g s ago", client, HALT_MIN_INTERVAL_S)
            return _error(429, f"one halt request every {HALT_MIN_INTERVAL_S:g} s at most")
        last_halt[0] = now
        asked = HaltRequest(
            id=f"ui-halt-{secrets.token_hex(8)}",
            ts_ns=wall_clock_ns(),
            reason=form.reason,
            requested_by=f"rrr-ui@{client}",
        )
        _log.warning("HALT requested by %s (id %s, reason %s)", asked.requested_by, asked.id,
                     printable(asked.reason, 200) or "-")  # fmt: skip
        try:
            outcome = await halter(asked)
        except HaltUnavailableError as exc:
            last_halt[0] = clock()
            _log.warning("halt %s not sent: %s", asked.id, exc)
            return _error(503, str(exc))
        except Exception as exc:  # NATS down or refusing: said to the operator, who must stop trading otherwise
            last_halt[0] = clock()
            _log.error("halt %s failed: %s", asked.id, exc)
            return _error(503, f"the halt could not be sent ({type(exc).__name__}: {exc}); stop trading otherwise")
        # The interval counts from the end of a halt too: waiting for the shards' confirmations takes a while.
        last_halt[0] = clock()
        _log.warning("halt %s published: %s", asked.id, printable(outcome, 500))
        return JSONResponse({"ok": True, "id": asked.id, "outcome": outcome})

    async def websocket(socket: WebSocket) -> None:
        if not _same_origin(socket.headers):
            _log.info("refused a WebSocket from origin %s", printable(socket.headers.get("origin", ""), 100))
            await socket.close(CLOSE_POLICY)
            return
        await hub.serve(socket)

    board.update("halt", {"available": halt_available})
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/api/state", state, methods=["GET"]),
            Route("/api/halt", halt, methods=["POST"]),
            WebSocketRoute("/ws", websocket),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return _Guard(app, allowed_hosts)
