"""``rrr-stack``: the whole system on one machine, from the embedded servers up.

``up`` starts nats-server (JetStream, file storage) and PostgreSQL from the binaries in the virtual
environment, then every service as a detached process, then the supervisor, which restarts whatever dies
(``rrr.deploy.supervisor``), and returns once each service sent a heartbeat. Run again, it starts only what
is not running, servers on the ports of last time. Everything it runs keeps its data, logs and pid files
under ``.run/``; ``.run/env`` (mode 0600) holds the URLs other tools need (``RRR_NATS_URL``,
``RRR_DATABASE_URL`` ...), each with the least identity the tool needs.

Security is on: nats-server has one user per service and tool, PostgreSQL asks for passwords, and every
process gets its own identity from ``.run/secrets/`` (``rrr.deploy.identities``). Nothing here prints a
password.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nats.aio.msg import Msg

from rrr.deploy.identities import Identities
from rrr.deploy.nats_server import NatsServer
from rrr.deploy.pid_files import pid_alive, read_pid_file, stop_pid_files
from rrr.deploy.postgres_server import PostgresServer
from rrr.deploy.processes import (
    SERVICES,
    ManagedProcess,
    free_port,
    log_tail,
    port_free,
    service_command,
    service_program,
)
from rrr.deploy.run_dir import (
    RunDir,
    ServiceSpec,
    StackState,
    instance,
    read_state,
    service_of,
    settings,
    write_state,
)
from rrr.deploy.supervisor import (
    ProcessRecord,
    read_supervisor_state,
    start_supervisor,
    stop_supervisor,
    supervise,
    supervisor_pid,
)
from rrr.deploy.terminal import printable
from rrr.shared import subjects
from rrr.shared.bus import Bus, Subscription
from rrr.shared.config import redact
from rrr.shared.errors import RRRError
from rrr.shared.messages import Heartbeat, heartbeat_decoder
from rrr.shared.service import heartbeat_pid

FEEDS = ("sim", "none")


class StackError(RRRError):
    """The local system could not be brought up, or is not up."""


def _servers(run: RunDir) -> tuple[tuple[type[NatsServer | PostgresServer], Path], ...]:
    return ((NatsServer, run.nats_dir), (PostgresServer, run.pg_dir))


def _port(env: str, previous: int | None) -> int | None:
    """A configured port, else the one used last time (stable URLs across down/up), else a free one."""
    configured = os.environ.get(env)
    if configured:
        try:
            return int(configured)
        except ValueError:
            raise StackError(f"{env}: expected a port number, got {configured!r}") from None
    return previous


async def wait_for_heartbeats(
    url: str, expected: set[str], timeout_s: float, procs: Mapping[str, int], log_of: Callable[[str], Path]
) -> dict[str, Heartbeat]:
    """Wait until every ``<service>-<shard>`` in ``expected`` sent an ``ok`` heartbeat from its own process.

    A heartbeat counts only when the pid in its id is the one ``procs`` holds for its instance: anyone who
    can publish can send a heartbeat, but not from the process this command started.

    Args:
        url: NATS URL.
        expected: Instance names.
        timeout_s: Deadline.
        procs: Pid of each instance, watched for an early exit.
        log_of: Log file of an instance, whose tail explains an early exit.

    Raises:
        StackError: a service process exited, or the deadline passed.
    """
    bus = await Bus.connect(url, service="stack", name="rrr-stack", timeout_s=10)
    seen: dict[str, Heartbeat] = {}
    done = asyncio.Event()

    async def _on_beat(msg: Msg, beat: Heartbeat) -> None:
        name = instance(beat.service, beat.shard)
        if beat.status == "ok" and name in procs and heartbeat_pid(beat) == procs[name]:
            seen[name] = beat
            if expected <= seen.keys():
                done.set()

    try:
        await bus.subscribe(Subscription(subjects.HEARTBEAT_ALL, heartbeat_decoder, _on_beat, shards=None))
        deadline = time.monotonic() + timeout_s
        while not done.is_set():
            for name, pid in procs.items():
                if name not in seen and not pid_alive(pid):
                    raise StackError(f"{name} exited during start-up; its log ends with:\n{log_tail(log_of(name), 30)}")
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(expected - seen.keys()))
                raise StackError(f"no heartbeat within {timeout_s:g} s from: {missing}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=0.2)
    finally:
        await bus.close()
    return seen


def up(run: RunDir, *, feed: str, shards: int, timeout_s: float, supervised: bool = True) -> int:
    """Start whatever is not running (servers on their ports of last time), then the supervisor; return
    once every service is healthy."""
    run.root.mkdir(parents=True, exist_ok=True)
    run.logs.mkdir(exist_ok=True)
    run.pids.mkdir(exist_ok=True)
    previous = read_state(run)
    if previous is not None and previous.shards != shards:
        raise StackError(
            f"this system was set up with --shards {previous.shards}; its streams and state are split that way. "
            f"Start it with --shards {previous.shards}, or `just reset` to start over with {shards}"
        )
    specs = dict(previous.services) if previous is not None else {}
    identities = Identities(run)
    # Held while starting anything, so that the supervisor never starts the same process at the same time.
    with run.lock():
        nats = NatsServer(
            data_dir=run.nats_dir,
            port=_port("RRR_NATS_PORT", previous.nats_port if previous else None),
            monitor_port=_port("RRR_NATS_MONITOR_PORT", previous.nats_monitor_port if previous else None),
            users=identities.nats_users(),
        )
        pg = PostgresServer(
            data_dir=run.pg_dir,
            port=_port("RRR_PG_PORT", previous.pg_port if previous else None),
            password=identities.pg_superuser_password(),
        )

        def record() -> None:
            state = StackState(
                nats_port=nats.port,
                nats_monitor_port=nats.monitor_port,
                pg_port=pg.port,
                shards=shards,
                supervise=supervised,
                services=specs,
            )
            write_state(run, state)

        try:
            for server, port_env in ((nats, "RRR_NATS_PORT"), (pg, "RRR_PG_PORT")):
                if read_pid_file(server.pid_file, server.name) is None:
                    # Someone else may have taken the port of last time since: fall back to a free one.
                    if not os.environ.get(port_env) and not port_free(server.port):
                        server.port = free_port()
                    print(f"starting {server.name} on port {server.port} ...", flush=True)
                    server.start()
        finally:
            record()  # a server that started keeps its port, even if the other one failed
        # Started by an earlier version and still running: open to anyone until it starts again.
        for name, open_to_all in (("nats-server", not nats.runs_with_users()), ("postgres", pg.trusts_connections())):
            if open_to_all:
                print(
                    f"warning: {name} runs as an earlier version started it, without passwords; "
                    "`just down && just up` restarts it with them",
                    file=sys.stderr,
                    flush=True,
                )
        # As the superuser, the only time it is used: roles, migrations and grants, before persistence starts.
        applied = asyncio.run(identities.provision_database(pg))
        if applied:
            print(f"applied migrations {applied}", flush=True)
        tools = identities.write_tools_env(nats.port, pg.port, shards)

        # No identity in here: what is recorded for the supervisor (state.json) holds no secret. Each process
        # gets its own identity at start, from .run/secrets/.
        env = {
            **_without_secrets(os.environ),
            "RRR_SHARDS": str(shards),
            "RRR_MARKET_DATA_FEED": feed,
        }
        procs: dict[str, int] = {}
        for service in SERVICES:
            for shard in range(shards):
                name = instance(service, shard)
                pid = read_pid_file(run.service_pid(name), service_program(service))
                if pid is None:
                    spec = ServiceSpec(argv=[*service_command(service), "--shard", str(shard)], env=settings(env))
                    # Detached: it outlives this command and a Ctrl-C in its terminal; `down` stops it.
                    process = ManagedProcess(
                        name,
                        spec.argv,
                        log_file=run.service_log(name),
                        pid_file=run.service_pid(name),
                        env={**env, **identities.service_env(service, nats.port, pg.port)},
                    )
                    pid = process.start()
                    process.release()
                    specs[name] = spec  # how the supervisor starts it again
                procs[name] = pid
        record()
    if not supervised:
        if stop_supervisor(run):
            print("stopped the supervisor (--no-supervise)")
    elif supervisor_pid(run) is None:
        print(f"starting the supervisor (log {run.supervisor_log}) ...", flush=True)
        start_supervisor(run)
    print(f"waiting for {len(procs)} services to report healthy ...", flush=True)
    asyncio.run(wait_for_heartbeats(identities.status_url(nats.port), set(procs), timeout_s, procs, run.service_log))
    print("system is up")
    for key, value in tools.items():
        print(f"{key}={_shown(key, value)}")
    print(f"(written to {run.env_file}, readable by you only; the passwords are in {run.root / 'secrets'})")
    return 0


# Settings that carry a secret: never recorded in state.json, never printed.
_SECRET_SETTINGS = ("RRR_DLQ_KEY",)


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less what carries a secret (a URL with a password, a key): such a setting is an identity,
    which every process gets its own of, not one inherited from whoever ran `up`."""
    return {k: v for k, v in env.items() if k not in _SECRET_SETTINGS and redact(v) == v}


def _shown(key: str, value: str) -> str:
    """A setting as it may be printed: passwords and keys hidden."""
    return "***" if key in _SECRET_SETTINGS else str(redact(value))


def down(run: RunDir) -> int:
    """Stop the supervisor first (so it restarts nothing), then the services (they drain and flush), then
    NATS, then PostgreSQL. Keeps all data."""
    stopped = ["supervisor"] if stop_supervisor(run) else []
    run.supervisor_state_file.unlink(missing_ok=True)
    pid_files = []
    for name in run.service_instances():
        pid_file = run.service_pid(name)
        if read_pid_file(pid_file, service_program(service_of(name))) is None:
            pid_file.unlink()  # stale: that process is gone, and the pid may be someone else's now
        else:
            pid_files.append(pid_file)
    # All services at once; the timeout is generous because each drains in-flight batches before exiting.
    results = stop_pid_files(pid_files, signal.SIGTERM, timeout_s=30.0)
    stopped += [p.stem for p, was_running in zip(pid_files, results, strict=True) if was_running]
    for server, data_dir in _servers(run):
        if read_pid_file(data_dir / server.pid_name, server.name) is None:
            (data_dir / server.pid_name).unlink(missing_ok=True)
        elif server.stop_detached(data_dir):
            stopped.append(server.name)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def reset(run: RunDir) -> int:
    """Stop everything and delete ``.run/`` with all data."""
    down(run)
    if run.root.exists():
        shutil.rmtree(run.root)
        print(f"deleted {run.root}")
    return 0


def status(run: RunDir, *, listen_s: float) -> int:
    """Print each process's state, restarts and latest heartbeat, and the supervisor's; exit 1 if anything
    is down."""
    state = read_state(run)
    if state is None:
        print("not started: run `just up`")
        return 1
    supervision = read_supervisor_state(run.supervisor_state_file)
    records = supervision.processes if supervision is not None else {}
    rows = []
    healthy = True
    supervisor = supervisor_pid(run)
    if state.supervise:
        healthy &= supervisor is not None
        rows.append(("supervisor", "running" if supervisor else "stopped", str(supervisor or "-"), "", ""))
    else:
        rows.append(("supervisor", "off (--no-supervise)", "-", "", ""))
    servers = {s.name: read_pid_file(d / s.pid_name, s.name) for s, d in _servers(run)}
    for name, pid in servers.items():
        healthy &= pid is not None
        rows.append((name, "running" if pid else "stopped", str(pid or "-"), _restarts(records.get(name)), ""))
    env = _read_env(run)
    beats: dict[str, Heartbeat] = {}
    services = run.service_instances()
    alive = {
        name: pid
        for name in services
        if (pid := read_pid_file(run.service_pid(name), service_program(service_of(name)))) is not None
    }
    identities = Identities(run)
    # The status user only listens to heartbeats; a run directory from before the users has none.
    url = identities.status_url(state.nats_port) if identities.has_nats_users() else env["RRR_NATS_URL"]
    if alive and servers[NatsServer.name] is not None:
        with contextlib.suppress(StackError):
            beats = asyncio.run(wait_for_heartbeats(url, set(alive), listen_s, alive, run.service_log))
    for name in services:
        pid = alive.get(name)
        beat = beats.get(name)
        healthy &= beat is not None
        counters = " ".join(f"{k}={v}" for k, v in sorted(beat.counters.items())) if beat else ""
        state_text = "healthy" if beat else ("running, no heartbeat" if pid else "stopped")
        rows.append((name, state_text, str(pid or "-"), _restarts(records.get(name)), counters))
    # Names come from file names, counters from the bus: printed escaped and bounded (rrr.deploy.terminal).
    rows = [
        (printable(name, 64), state_text, printable(pid_text, 16), restarts, printable(counters, 2000))
        for name, state_text, pid_text, restarts, counters in rows
    ]
    width = max(len(r[0]) for r in rows)
    for name, state_text, pid_text, restarts, counters in rows:
        print(f"{name:<{width}}  {state_text:<22} pid {pid_text:<8} {restarts:<11} {counters}".rstrip())
    for name, record in sorted(records.items()):
        if (history := record.history()) is not None:
            print(f"{name}: {history}")
    for key, value in env.items():
        print(f"{printable(key, 64)}={printable(_shown(key, value))}")
    return 0 if healthy else 1


def _restarts(record: ProcessRecord | None) -> str:
    return f"restarts={record.restarts if record is not None else 0}"


def logs(run: RunDir, service: str | None, lines: int) -> int:
    """Print the last ``lines`` lines of one service's log, or of every log."""
    files = sorted(run.logs.glob("*.log")) if run.logs.exists() else []
    files += [p for p in (run.nats_dir / "nats.log", run.pg_dir / "postgres.log") if p.exists()]
    if service:
        wanted = service.replace("-", "_")
        files = [f for f in files if f.stem == wanted or f.stem.startswith(f"{wanted}-") or f.stem == service]
        if not files:
            known = ", ".join(sorted({f.stem.rsplit("-", 1)[0] for f in run.logs.glob("*.log")} | {"nats", "postgres"}))
            print(f"no log for {service!r}; known: {known}", file=sys.stderr)
            return 2
    for path in files:
        print(f"==> {path} <==")
        print(log_tail(path, lines))
    return 0


def _read_env(run: RunDir) -> dict[str, str]:
    pairs = (line.partition("=") for line in run.env_file.read_text().splitlines())
    return {key: value for key, sep, value in pairs if sep}


def exec_with_env(run: RunDir, argv: Sequence[str]) -> int:
    """Run a command with ``.run/env`` in its environment (for replay and tap against the running system)."""
    if not run.env_file.exists():
        print("the system is not up: start it with `just up`", file=sys.stderr)
        return 1
    if not argv:
        print("exec: name a command to run", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.update(_read_env(run))
    os.execvpe(argv[0], list(argv), env)  # noqa: S606 - replaces this process by the user's own command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-stack``."""
    parser = argparse.ArgumentParser(
        prog="rrr-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".run"), help="where data, logs and pids live [default .run]"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_up = commands.add_parser("up", help="start servers and services, wait until healthy")
    p_up.add_argument("feed", nargs="?", default="sim", help="market-data feed: sim (default) or none")
    p_up.add_argument("--shards", type=int, default=1, help="instances of each service, one per shard [default 1]")
    p_up.add_argument("--timeout-s", type=float, default=90.0, help="how long to wait for health [default 90]")
    p_up.add_argument(
        "--no-supervise", action="store_true", help="run no supervisor: nothing restarts what dies [default: one runs]"
    )
    commands.add_parser("down", help="stop everything, keep data")
    commands.add_parser("reset", help="stop everything and delete .run/")
    p_status = commands.add_parser("status", help="processes and heartbeats")
    p_status.add_argument("--listen-s", type=float, default=3.0, help="how long to wait for heartbeats [default 3]")
    p_logs = commands.add_parser("logs", help="tail logs")
    p_logs.add_argument(
        "service", nargs="?", default=None, help="one service (market_data, strategy, ...), nats or postgres"
    )
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    p_exec = commands.add_parser("exec", help="run a command with .run/env in its environment")
    p_exec.add_argument("argv", nargs=argparse.REMAINDER)
    commands.add_parser("supervise", help="restart whatever dies, until stopped (`up` starts it in the background)")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir.resolve())
    try:
        if args.command == "up":
            if args.feed not in FEEDS:
                parser.error(f"up: feed must be one of {', '.join(FEEDS)}, got {args.feed!r}")
            if not 1 <= args.shards <= 64:
                parser.error(f"--shards: expected 1 to 64, got {args.shards}")
            return up(
                run, feed=args.feed, shards=args.shards, timeout_s=args.timeout_s, supervised=not args.no_supervise
            )
        if args.command == "down":
            return down(run)
        if args.command == "reset":
            return reset(run)
        if args.command == "status":
            return status(run, listen_s=args.listen_s)
        if args.command == "logs":
            return logs(run, args.service, args.lines)
        if args.command == "supervise":
            return supervise(run)
        return exec_with_env(run, [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv)
    except RRRError as exc:
        print(f"rrr-stack {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
