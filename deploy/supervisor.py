"""The supervisor: keeps every process of the local system running, restarting what died with back-off.

``rrr-stack up`` starts it detached (``rrr-stack supervise``, pid file ``.run/pids/supervisor.pid``, log
``.run/logs/supervisor.log``); ``rrr-stack down`` stops it before anything else, so that it does not
restart what ``down`` stops. It polls the pid files of nats-server, PostgreSQL and every service instance
(so it also adopts processes started before it, by ``up`` or by an earlier supervisor) and restarts a dead
one the way it was started: a server on the same port with the same data directory and the same users
and passwords, a service with the command line and settings recorded in ``state.json`` and its own
identity from ``.run/secrets/`` (``rrr.deploy.identities``). Between restarts of the same process it waits 1 s,
then 2, 4 ... up to 30 s; a minute of running resets that. What it did goes to ``supervisor.json``
(restarts, last exit, last restart), which ``rrr-stack status`` shows.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec

from rrr.deploy.collector import DATABASE_URL_ENV
from rrr.deploy.identities import HOST, PG_READER, Identities, NatsPorts
from rrr.deploy.nats_server import NatsServer
from rrr.deploy.pid_files import read_pid_file, stop_pid_file
from rrr.deploy.postgres_server import PostgresServer
from rrr.deploy.processes import SERVICES, ManagedProcess, service_program
from rrr.deploy.run_dir import SETTINGS_PREFIXES, RunDir, ServiceSpec, read_state, service_of, write_atomic
from rrr.deploy.stack_nats import from_state, nats_processes
from rrr.shared.errors import RRRError
from rrr.shared.runner import setup_logging

__all__ = [
    "COLLECTOR",
    "COLLECTOR_MARK",
    "MARK",
    "UI",
    "UI_PROGRAM",
    "ProcessRecord",
    "RestartPolicy",
    "Supervisor",
    "SupervisorState",
    "Target",
    "collector_process",
    "read_supervisor_state",
    "stack_targets",
    "start_supervisor",
    "stop_supervisor",
    "supervise",
    "supervisor_pid",
    "ui_process",
]

_log = logging.getLogger("rrr.supervisor")

# In the supervisor's command line (`rrr-stack --run-dir DIR supervise`): how its pid file is checked.
MARK = "supervise"
# The servers' metrics collector: its name, and what its command line holds (`rrr-stack ... collect`).
COLLECTOR = "collector"
COLLECTOR_MARK = "collect"
# The dashboard: its name, and its program (what its command line holds).
UI = "ui"
UI_PROGRAM = "rrr-ui"
_POLL_S = 0.25
# A server start blocks the supervisor for up to a minute (PostgreSQL's recovery); `down` waits it out.
_STOP_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential back-off between restarts of one process, reset once it ran for ``stable_s``."""

    first_s: float = 1.0
    cap_s: float = 30.0
    stable_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        """How long to wait before the restart that follows ``failures`` recent ones."""
        return min(self.first_s * 2.0 ** min(failures, 32), self.cap_s)


class Child(Protocol):
    """A process the supervisor started: it can tell how that process ended."""

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Target:
    """A process to keep running: where its pid is, what its command line holds, how to start it."""

    name: str
    pid_file: Path
    expect: str
    start: Callable[[], Child]


class ProcessRecord(msgspec.Struct, kw_only=True):
    """What the supervisor knows of one process, for ``rrr-stack status``."""

    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_restart: str | None = None
    restart_at: str | None = None
    last_error: str | None = None

    def history(self) -> str | None:
        """Its restarts in a line, for `rrr-stack status`; None when there is nothing to tell."""
        if not (self.restarts or self.restart_at or self.last_error):
            return None
        parts = [f"restarted {self.restarts} time{'' if self.restarts == 1 else 's'}"]
        parts += [f"last at {self.last_restart}"] if self.last_restart else []
        parts += [f"last exit: {self.last_exit}"] if self.last_exit else []
        parts += [f"next restart at {self.restart_at}"] if self.restart_at else []
        parts += [f"last error: {self.last_error}"] if self.last_error else []
        return ", ".join(parts)


class SupervisorState(msgspec.Struct, kw_only=True):
    """The contents of ``supervisor.json``."""

    pid: int
    started: str
    processes: dict[str, ProcessRecord] = msgspec.field(default_factory=dict)


@dataclass(slots=True)
class _Watch:
    record: ProcessRecord
    since: float = 0.0  # when the running pid was first seen or started (monotonic)
    failures: int = 0  # restarts since it last ran for `stable_s`
    due: float | None = None  # while dead: when to restart it
    child: Child | None = None  # the process this supervisor started last, while it is the current one


class Supervisor:
    """Checks every target once per ``sweep`` and restarts the dead ones whose back-off has passed."""

    def __init__(
        self,
        targets: Callable[[], Sequence[Target]],
        *,
        lock: Callable[[], contextlib.AbstractContextManager[None]],
        state_file: Path | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Describe the supervision; nothing is checked until `sweep`.

        Args:
            targets: The processes to keep running, asked at every sweep (`stack_targets`).
            lock: Held while starting a process, the lock `rrr-stack up` holds while it starts processes.
            state_file: Where to write the records, atomically, whenever they change; the records of an
                earlier supervisor found there are carried on.
            policy: Back-off between restarts.
            clock: Monotonic time, for the back-off.
            wall_clock: Epoch seconds, for the times shown to people.
        """
        self._targets = targets
        self._lock = lock
        self._state_file = state_file
        self._policy = policy or RestartPolicy()
        self._clock = clock
        self._wall_clock = wall_clock
        self._watches: dict[str, _Watch] = {}
        previous = read_supervisor_state(state_file) if state_file is not None else None
        for name, record in (previous.processes if previous is not None else {}).items():
            self._watches[name] = _Watch(msgspec.structs.replace(record, pid=None, restart_at=None))
        self._started = _iso(wall_clock())
        self._changed = True

    @property
    def records(self) -> dict[str, ProcessRecord]:
        """What is known of each process, by name."""
        return {name: watch.record for name, watch in self._watches.items()}

    def sweep(self, stop: threading.Event | None = None) -> None:
        """Check each target; restart those dead for longer than their back-off. Stops early once `stop` is set."""
        for target in self._targets():
            if stop is not None and stop.is_set():
                break
            watch = self._watches.setdefault(target.name, _Watch(ProcessRecord()))
            self._check(target, watch)
        if self._changed and self._state_file is not None:
            state = SupervisorState(pid=os.getpid(), started=self._started, processes=self.records)
            write_atomic(self._state_file, msgspec.json.encode(state))
        self._changed = False

    def _check(self, target: Target, watch: _Watch) -> None:
        now = self._clock()
        record = watch.record
        pid = read_pid_file(target.pid_file, target.expect)
        if pid is None and watch.child is not None:
            pid = watch.child.pid  # its pid file went missing, but our own child still runs
        if pid is not None:
            if pid != record.pid:
                # First seen (adopted), or started by someone else (`rrr-stack up`) while it was dead.
                if watch.child is not None and watch.child.pid != pid:
                    watch.child = None
                record.pid, record.restart_at, watch.since, watch.due = pid, None, now, None
                self._changed = True
            if watch.failures and now - watch.since >= self._policy.stable_s:
                watch.failures = 0
            return
        if watch.due is None:
            record.last_exit = _describe_exit(watch.child)
            delay = self._policy.delay_s(watch.failures)
            gone = f"pid {record.pid} is gone" if record.pid is not None else "is not running"
            _log.warning("%s %s (last exit: %s); restarting it in %g s", target.name, gone, record.last_exit, delay)
            self._wait(watch, now, delay)
        if watch.due is not None and now >= watch.due:
            self._restart(target, watch)

    def _restart(self, target: Target, watch: _Watch) -> None:
        record = watch.record
        with self._lock():
            if read_pid_file(target.pid_file, target.expect) is not None:
                return  # started by someone else meanwhile: the next sweep adopts it
            try:
                child = target.start()
            except Exception as exc:  # whatever one start raised, the supervisor stays and tries again later
                watch.failures += 1
                record.last_error = (str(exc) or type(exc).__name__).splitlines()[0]
                delay = self._policy.delay_s(watch.failures)
                _log.error(
                    "restarting %s failed, trying again in %g s: %s",
                    target.name,
                    delay,
                    exc,
                    exc_info=not isinstance(exc, RRRError),  # a project error says all there is
                )
                self._wait(watch, self._clock(), delay)
                return
        watch.child, watch.failures, watch.since, watch.due = child, watch.failures + 1, self._clock(), None
        record.pid, record.restarts, record.restart_at, record.last_error = child.pid, record.restarts + 1, None, None
        record.last_restart = _iso(self._wall_clock())
        self._changed = True
        _log.info("%s restarted as pid %s (restart %d)", target.name, child.pid, record.restarts)

    def _wait(self, watch: _Watch, now: float, delay: float) -> None:
        watch.due = now + delay
        watch.record.pid = None
        watch.record.restart_at = _iso(self._wall_clock() + delay)
        self._changed = True


def _describe_exit(child: Child | None) -> str:
    code = None if child is None else child.returncode
    if code is None:
        return "unknown, not started by this supervisor"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stack_targets(run: RunDir) -> list[Target]:
    """The processes of the system in ``run``, as its ``state.json`` describes them (none before ``up``)."""
    state = read_state(run)
    if state is None:
        return []
    identities = Identities(run, tls=state.nats_tls)

    def start_postgres() -> Child:
        server = PostgresServer(data_dir=run.pg_dir, port=state.pg_port, password=identities.pg_superuser_password())
        server.start()
        return server

    def nats_starter(index: int) -> Callable[[], Child]:
        def start() -> Child:
            # Built when it starts, as it was configured (users, routes, sync) at `up`.
            server = from_state(run, state, identities).servers[index][1]
            server.start()
            return server

        return start

    targets = [
        Target(PostgresServer.name, run.pg_dir / PostgresServer.pid_name, PostgresServer.name, start_postgres),
        *(
            Target(name, data_dir / NatsServer.pid_name, NatsServer.name, nats_starter(i))
            for i, (name, data_dir) in enumerate(nats_processes(run, state))
        ),
    ]
    if state.collector_port:

        def start_collector() -> Child:
            process = collector_process(run, state.nats_monitor_port, state.pg_port, state.collector_port, identities)
            process.start()
            return process

        targets.append(Target(COLLECTOR, run.collector_pid, COLLECTOR_MARK, start_collector))
    if state.ui_port:

        def start_ui() -> Child:
            process = ui_process(run, state.nats_ports, state.pg_port, state.ui_host, state.ui_port, identities)
            process.start()
            return process

        targets.append(Target(UI, run.ui_pid, UI_PROGRAM, start_ui))
    for service in SERVICES:
        for name, spec in sorted(state.services.items()):
            if service_of(name) == service:
                # Read when it starts, not at every sweep.
                identity = functools.partial(identities.service_env, service, state.nats_ports, state.pg_port)
                start = _service_starter(run, name, spec, identity)
                targets.append(Target(name, run.service_pid(name), service_program(service), start))
    return targets


def _service_starter(
    run: RunDir, name: str, spec: ServiceSpec, identity: Callable[[], dict[str, str]]
) -> Callable[[], Child]:
    def start() -> Child:
        # The recorded settings over this process's own environment (that of the `up` that started it), and
        # the service's own identity, as `up` gave it (never recorded: state.json holds no secret).
        base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
        env = {**base, **spec.env, **identity()}
        process = ManagedProcess(
            name, spec.argv, log_file=run.service_log(name), pid_file=run.service_pid(name), env=env
        )
        process.start()
        return process

    return start


def read_supervisor_state(state_file: Path) -> SupervisorState | None:
    """The records in ``supervisor.json``, or None when there is none (or it cannot be read)."""
    try:
        return msgspec.json.decode(state_file.read_bytes(), type=SupervisorState)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def supervisor_pid(run: RunDir) -> int | None:
    """Pid of the supervisor of ``run`` while it runs, else None."""
    return read_pid_file(run.supervisor_pid, MARK)


def collector_process(
    run: RunDir, nats_monitor_port: int, pg_port: int, port: int, identities: Identities
) -> ManagedProcess:
    """The servers' metrics collector (``rrr-stack collect``), detached, reading PostgreSQL as ``rrr_reader``."""
    env = {**os.environ, DATABASE_URL_ENV: identities.pg_url(PG_READER, pg_port)}
    argv = [
        *_stack_command(), "--run-dir", str(run.root), COLLECTOR_MARK,
        "--nats-monitor-url", f"http://{HOST}:{nats_monitor_port}", "--metrics-port", str(port),
    ]  # fmt: skip
    return ManagedProcess(COLLECTOR, argv, log_file=run.collector_log, pid_file=run.collector_pid, env=env)


def ui_process(
    run: RunDir, nats_port: NatsPorts, pg_port: int, host: str, port: int, identities: Identities
) -> ManagedProcess:
    """The dashboard (``rrr-ui``), detached, as the ``ui`` NATS user and ``rrr_reader``, given by its environment."""
    exe = Path(sys.executable).parent / UI_PROGRAM
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "rrr.deploy.dashboard"]
    env = {**os.environ, **identities.ui_env(nats_port, pg_port)}
    argv = [*command, "--host", host, "--port", str(port)]
    return ManagedProcess(UI, argv, log_file=run.ui_log, pid_file=run.ui_pid, env=env)


def _stack_command() -> list[str]:
    exe = Path(sys.executable).parent / "rrr-stack"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rrr.deploy.stack"]


def start_supervisor(run: RunDir) -> int:
    """Start the supervisor of ``run`` detached, with this process's environment; return its pid."""
    process = ManagedProcess(
        "supervisor",
        [*_stack_command(), "--run-dir", str(run.root), MARK],
        log_file=run.supervisor_log,
        pid_file=run.supervisor_pid,
    )
    pid = process.start()
    process.release()
    return pid


def stop_supervisor(run: RunDir) -> bool:
    """Stop the supervisor of ``run``; return whether one was running."""
    if supervisor_pid(run) is None:
        run.supervisor_pid.unlink(missing_ok=True)  # stale: the pid may be someone else's by now
        return False
    return stop_pid_file(run.supervisor_pid, signal.SIGTERM, _STOP_TIMEOUT_S)


def supervise(run: RunDir) -> int:
    """Supervise the system in ``run`` until SIGTERM or SIGINT (``rrr-stack supervise``)."""
    setup_logging("INFO")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        _log.info("%s: stopping; processes keep running", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    supervisor = Supervisor(lambda: stack_targets(run), lock=run.lock, state_file=run.supervisor_state_file)
    _log.info("supervising the system in %s as pid %d", run.root, os.getpid())
    while not stop.is_set():
        if not run.root.exists():
            _log.info("%s was deleted: nothing left to supervise", run.root)
            break
        try:
            supervisor.sweep(stop)
        except RRRError as exc:
            _log.error("%s", exc)  # a state file being rewritten, say: the next sweep reads it again
        # Polling: nothing notifies the death of a process that is not our child.
        stop.wait(_POLL_S)
    return 0
