"""The dashboard in the local system: ``rrr-stack ui``, and its part in ``up``, ``down`` and ``status``.

``up`` starts it (``rrr-ui``, pid file ``.run/pids/ui.pid``, log ``.run/logs/ui.log``) on 127.0.0.1 and the
port of last time, unless another program took it; the supervisor restarts it like any process of the
system; ``down`` stops it. ``rrr-stack ui`` starts it if it does not run and prints its address, or moves it
to another address (``--host``, ``--port``). It runs only where its libraries are installed (``.[ui]``, which
``just`` installs): without them ``up`` says so and runs the system without it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import signal
import urllib.error
import urllib.request

import msgspec

from rrr.deploy.dashboard.config import url_of
from rrr.deploy.identities import Identities
from rrr.deploy.pid_files import read_pid_file, stop_pid_file
from rrr.deploy.processes import free_port, log_tail, poll_until, port_free
from rrr.deploy.run_dir import RunDir, StackError, StackState, read_state, write_state
from rrr.deploy.supervisor import UI_PROGRAM, ui_process

__all__ = [
    "UI_READY_S",
    "check_ui_host",
    "dashboard_installed",
    "start_ui",
    "ui",
    "ui_ready",
    "ui_running",
    "wait_for_ui",
]

UI_READY_S = 20.0
_LOOPBACK_NOTE = (
    "warning: the dashboard at {url} shows the system's positions and its halt button to whoever reaches that "
    "address, and asks for no password"
)


def dashboard_installed() -> bool:
    """Whether the dashboard's libraries are installed (the ``ui`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("starlette", "uvicorn", "websockets"))


def check_ui_host(host: str) -> str:
    """``host`` if it is an IP address or ``localhost``, the addresses the dashboard may listen on.

    Raises:
        StackError: it is anything else.
    """
    if host == "localhost":
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise StackError(
            f"--host: expected an IP address of this machine (127.0.0.1, ::1, 0.0.0.0 ...), got {host!r}"
        ) from None
    return host


def ui_running(run: RunDir) -> int | None:
    """The dashboard's pid while it runs, else None."""
    return read_pid_file(run.ui_pid, UI_PROGRAM)


def start_ui(run: RunDir, state: StackState, identities: Identities) -> StackState:
    """Start the dashboard detached on ``state``'s address (a free port when none, or when taken); return the
    state with the port it got. The caller holds the run directory's lock and records the state."""
    port = state.ui_port if state.ui_port and port_free(state.ui_port) else free_port()
    process = ui_process(run, state.nats_ports, state.pg_port, state.ui_host, port, identities)
    process.start()
    process.release()
    return msgspec.structs.replace(state, ui_port=port)


def wait_for_ui(url: str, timeout_s: float) -> bool:
    """Whether the dashboard at ``url`` answers ``/healthz`` within ``timeout_s``."""

    def _answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=2) as response:  # noqa: S310 - a local http URL
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return poll_until(_answers, timeout_s)


def ui(run: RunDir, *, host: str | None, port: int | None) -> int:
    """``rrr-stack ui``: make sure the dashboard runs (on ``host`` and ``port`` if given) and print its address."""
    state = read_state(run)
    if state is None:
        print("the system is not up: start it with `just up`")
        return 1
    if not dashboard_installed():
        raise StackError("the dashboard's libraries are not installed: pip install -e '.[ui]' (just does it)")
    if host is not None:
        check_ui_host(host)
    wanted = (state.ui_host if host is None else host, state.ui_port if port is None else port)
    with run.lock():
        state = read_state(run) or state
        pid = ui_running(run)
        if pid is not None and wanted != (state.ui_host, state.ui_port):
            print(f"stopping the dashboard at {url_of(state.ui_host, state.ui_port)} to move it ...", flush=True)
            stop_pid_file(run.ui_pid, signal.SIGTERM, 10.0)
            pid = None
        if pid is None:
            if port is not None and port and not port_free(port):
                raise StackError(f"--port: port {port} is taken by another program; leave --port out for a free one")
            moved = msgspec.structs.replace(state, ui_host=wanted[0], ui_port=wanted[1])
            state = start_ui(run, moved, Identities(run))
            write_state(run, state)
    url = url_of(state.ui_host, state.ui_port)
    if not wait_for_ui(_local(url, state), UI_READY_S):
        raise StackError(f"the dashboard did not answer at {url} within {UI_READY_S:g} s; its log ends with:\n"
                         f"{log_tail(run.ui_log, 20)}")  # fmt: skip
    print(f"dashboard: {url}")
    if not _loopback(state.ui_host):
        print(_LOOPBACK_NOTE.format(url=url))
    return 0


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _local(url: str, state: StackState) -> str:
    """Where this machine reaches the dashboard: a wildcard address is reached on loopback."""
    if state.ui_host in ("0.0.0.0", "::"):  # noqa: S104 - reading the address, not binding it
        return url_of("127.0.0.1" if state.ui_host == "0.0.0.0" else "::1", state.ui_port)  # noqa: S104
    return url


def ui_ready(run: RunDir, state: StackState) -> str | None:
    """The dashboard's address once it answers (within ``UI_READY_S``), else None."""
    url = url_of(state.ui_host, state.ui_port)
    return url if wait_for_ui(_local(url, state), UI_READY_S) else None
