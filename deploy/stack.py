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
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rrr.deploy.collector import collect
from rrr.deploy.identities import HOST, Identities
from rrr.deploy.nats_server import NatsServer
from rrr.deploy.pid_files import read_pid_file, stop_pid_files
from rrr.deploy.postgres_server import PostgresServer
from rrr.deploy.processes import (
    SERVICES,
    ManagedProcess,
    ServerStartError,
    free_port,
    port_free,
    service_command,
    service_program,
)
from rrr.deploy.run_dir import (
    RunDir,
    ServiceSpec,
    StackError,
    StackState,
    instance,
    read_state,
    service_of,
    settings,
    write_atomic,
    write_state,
)
from rrr.deploy.stack_ui import UI_READY_S, dashboard_installed, start_ui, ui, ui_ready, ui_running
from rrr.deploy.stack_view import (
    exec_with_env,
    logs,
    psql,
    servers,
    shown,
    status,
    wait_for_heartbeats,
    without_secrets,
)
from rrr.deploy.supervisor import (
    COLLECTOR,
    COLLECTOR_MARK,
    UI,
    collector_process,
    start_supervisor,
    stop_supervisor,
    supervise,
    supervisor_pid,
)
from rrr.shared.errors import RRRError

FEEDS = ("sim", "none", "live")


def _port(env: str, previous: int | None) -> int | None:
    """A configured port, else the one used last time (stable URLs across down/up), else a free one (None).

    ``0`` asks for a free one as well.
    """
    configured = os.environ.get(env)
    if configured:
        try:
            port = int(configured)
        except ValueError:
            raise StackError(f"{env}: expected a port number, got {configured!r}") from None
        if not 0 <= port <= 65535:
            raise StackError(f"{env}: expected a port number from 0 to 65535, got {port}")
        return port or None
    return previous


def _settled(previous: StackState | None, feed: str | None, shards: int | None) -> tuple[str, int]:
    """The feed and shard count to run with: as asked, else as recorded, else the defaults.

    Raises:
        StackError: the shard count differs from the recorded one (streams and state are split by it).
    """
    if previous is None:
        return feed or "sim", shards or 1
    if shards is not None and shards != previous.shards:
        raise StackError(
            f"this system was set up with --shards {previous.shards}; its streams and state are split that way. "
            f"Start it with --shards {previous.shards} (or without --shards), or `just reset` to start over with "
            f"{shards}"
        )
    return feed or previous.feed, previous.shards


def _refuse_changes_to_a_running_system(
    run: RunDir, previous: StackState, feed: str, ports: dict[str, tuple[int, int | None]]
) -> None:
    """One line naming what would change under running processes, and how to change it cleanly."""
    if feed != previous.feed and any(
        read_pid_file(run.service_pid(name), service_program(service_of(name))) is not None
        for name in run.service_instances()
        if service_of(name) == "market_data"
    ):
        raise StackError(
            f"the system runs with feed {previous.feed}, not {feed}: `just down`, then `just up {feed}` to change it"
        )
    for name, (running, asked) in ports.items():
        if asked is not None and asked != running:
            raise StackError(
                f"{name} runs on port {running}; the port asked for ({asked}) would change it under the running "
                f"system: `just down` first, or leave the port setting out"
            )


def up(run: RunDir, *, feed: str | None, shards: int | None, timeout_s: float, supervised: bool = True) -> int:
    """Start whatever is not running (servers on their ports of last time), then the supervisor; return
    once every service is healthy.

    A setting that would change what already runs (feed, ports) is refused with what to do instead; the
    state records only what is true, and what this call started is stopped again if it fails.
    """
    run.root.mkdir(parents=True, exist_ok=True)
    run.logs.mkdir(exist_ok=True)
    run.pids.mkdir(exist_ok=True)
    previous = read_state(run)
    feed, shards = _settled(previous, feed, shards)
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

        metrics_ports = dict(previous.metrics_ports) if previous is not None else {}
        collector_port = previous.collector_port if previous is not None else 0
        ui_at = (previous.ui_host, previous.ui_port) if previous is not None else ("127.0.0.1", 0)

        def record() -> StackState:
            state = StackState(
                nats_port=nats.port,
                nats_monitor_port=nats.monitor_port,
                pg_port=pg.port,
                shards=shards,
                supervise=supervised,
                services=specs,
                feed=feed,
                metrics_ports=metrics_ports,
                collector_port=collector_port,
                ui_host=ui_at[0],
                ui_port=ui_at[1],
            )
            write_state(run, state)
            return state

        if previous is not None:
            running = {
                server.name: (port, _port(env, None))
                for server, port, env in (
                    (nats, previous.nats_port, "RRR_NATS_PORT"),
                    (pg, previous.pg_port, "RRR_PG_PORT"),
                )
                if read_pid_file(server.pid_file, server.name) is not None
            }
            _refuse_changes_to_a_running_system(run, previous, feed, running)
        started: list[NatsServer | PostgresServer] = []
        try:
            for server, port_env in ((nats, "RRR_NATS_PORT"), (pg, "RRR_PG_PORT")):
                if read_pid_file(server.pid_file, server.name) is None:
                    # Someone else may have taken the port of last time since: fall back to a free one.
                    if not _port(port_env, None) and not port_free(server.port):
                        server.port = free_port()
                    print(f"starting {server.name} on port {server.port} ...", flush=True)
                    _start(server, port_env)
                    started.append(server)
        except BaseException:
            # Nothing half-up stays behind, and the state keeps the ports of what still runs.
            for server in reversed(started):
                server.stop()
            raise
        record()
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
            **without_secrets(os.environ),
            "RRR_SHARDS": str(shards),
            "RRR_MARKET_DATA_FEED": feed,
        }
        procs: dict[str, int] = {}
        for service in SERVICES:
            for shard in range(shards):
                name = instance(service, shard)
                pid = read_pid_file(run.service_pid(name), service_program(service))
                if pid is None:
                    metrics_ports[name] = _metrics_port(metrics_ports.get(name))
                    argv = [
                        *service_command(service),
                        "--shard",
                        str(shard),
                        "--metrics-port",
                        str(metrics_ports[name]),
                    ]
                    spec = ServiceSpec(argv=argv, env=settings(env))
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
        if read_pid_file(run.collector_pid, COLLECTOR_MARK) is None:
            collector_port = _metrics_port(collector_port or None)
            collector = collector_process(run, nats.monitor_port, pg.port, collector_port, identities)
            collector.start()
            collector.release()
        state = record()
        if dashboard_installed() and ui_running(run) is None:
            state = start_ui(run, state, identities)
            ui_at = (state.ui_host, state.ui_port)
            state = record()
        write_prometheus_targets(
            run, [*(metrics_ports[name] for name in procs if name in metrics_ports), collector_port]
        )
    if not supervised:
        if stop_supervisor(run):
            print("stopped the supervisor (--no-supervise)")
    elif supervisor_pid(run) is None:
        print(f"starting the supervisor (log {run.supervisor_log}) ...", flush=True)
        start_supervisor(run)
    print(f"waiting for {len(procs)} services to report healthy ...", flush=True)
    asyncio.run(wait_for_heartbeats(identities.status_url(nats.port), set(procs), timeout_s, procs, run.service_log))
    print("system is up")
    for name in procs:
        if name in metrics_ports:
            print(f"metrics of {name}: {metrics_url(metrics_ports[name])}")
    print(f"metrics of nats-server and postgres: {metrics_url(collector_port)}")
    if not dashboard_installed():
        print("dashboard: not installed (pip install -e '.[ui]', which just does)")
    elif (url := ui_ready(run, state)) is not None:
        print(f"dashboard: {url}")
    else:
        print(f"dashboard: did not answer within {UI_READY_S:g} s; see {run.ui_log}", file=sys.stderr)
    for key, value in tools.items():
        print(f"{key}={shown(key, value)}")
    print(f"(written to {run.env_file}, readable by you only; the passwords are in {run.root / 'secrets'})")
    return 0


def _metrics_port(previous: int | None) -> int:
    """The metrics port of last time (stable scrape targets), unless another program took it: then a free one."""
    return previous if previous is not None and port_free(previous) else free_port()


def metrics_url(port: int) -> str:
    """Where a process of the local system serves its metrics."""
    return f"http://{HOST}:{port}/metrics"


def write_prometheus_targets(run: RunDir, ports: Sequence[int]) -> None:
    """Write the system's scrape targets where deploy/prometheus/prometheus.yml finds them (file discovery)."""
    run.prometheus_targets.parent.mkdir(parents=True, exist_ok=True)
    targets = [{"targets": [f"{HOST}:{port}" for port in ports], "labels": {"system": str(run.root)}}]
    write_atomic(run.prometheus_targets, json.dumps(targets, indent=2).encode())


def _start(server: NatsServer | PostgresServer, port_env: str) -> None:
    try:
        server.start()
    except ServerStartError as exc:
        if "address already in use" in exc.log_tail.lower():
            raise StackError(
                f"{server.name} could not listen on port {server.port}: another program uses it. Set {port_env} "
                f"to another port (0 picks a free one); its log is {server.log_file}"
            ) from None
        raise


def down(run: RunDir) -> int:
    """Stop the supervisor first (so it restarts nothing), then the services (they drain and flush), then
    NATS, then PostgreSQL. Keeps all data."""
    stopped = ["supervisor"] if stop_supervisor(run) else []
    run.supervisor_state_file.unlink(missing_ok=True)
    if read_pid_file(run.collector_pid, COLLECTOR_MARK) is None:
        run.collector_pid.unlink(missing_ok=True)
    elif stop_pid_files([run.collector_pid], signal.SIGTERM, timeout_s=10.0)[0]:
        stopped.append(COLLECTOR)
    if ui_running(run) is None:
        run.ui_pid.unlink(missing_ok=True)
    elif stop_pid_files([run.ui_pid], signal.SIGTERM, timeout_s=10.0)[0]:
        stopped.append(UI)
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
    for server, data_dir in servers(run):
        if read_pid_file(data_dir / server.pid_name, server.name) is None:
            (data_dir / server.pid_name).unlink(missing_ok=True)
        elif server.stop_detached(data_dir):
            stopped.append(server.name)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def reset(run: RunDir, *, yes: bool = False) -> int:
    """Stop everything and delete ``.run/`` with all data; in a terminal, only once the user confirms."""
    if not yes and run.root.exists() and sys.stdin.isatty():
        answer = input(f"delete {run.root} with all its data (quotes, orders, fills, streams)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    down(run)
    if run.root.exists():
        shutil.rmtree(run.root)
        print(f"deleted {run.root}")
    return 0


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
    p_up.add_argument(
        "feed", nargs="?", default=None, help="market-data feed: sim, none or live [default: as last time, else sim]"
    )
    # The live feed's venues and symbols reach market-data as its settings (RRR_MARKET_DATA_VENUES/_SYMBOLS).
    p_up.add_argument("--venue", default=None, help="live: venues, comma-separated (binance, coinbase, kraken)")
    p_up.add_argument("--symbols", default=None, help="live: venue symbols, comma-separated (venue:SYMBOL for several)")
    p_up.add_argument(
        "--shards",
        type=int,
        default=None,
        help="instances of each service, one per shard [default: as recorded, else 1]",
    )
    p_up.add_argument("--timeout-s", type=float, default=90.0, help="how long to wait for health [default 90]")
    p_up.add_argument(
        "--no-supervise", action="store_true", help="run no supervisor: nothing restarts what dies [default: one runs]"
    )
    p_ui = commands.add_parser("ui", help="start the live dashboard if it does not run, and print its address")
    p_ui.add_argument("--host", default=None, help="address to serve it on [default: as last time, else 127.0.0.1]")
    p_ui.add_argument(
        "--port", type=int, default=None, help="port to serve it on; 0: a free one [default: as last time]"
    )
    commands.add_parser("down", help="stop everything, keep data")
    p_reset = commands.add_parser("reset", help="stop everything and delete .run/ (asks first in a terminal)")
    p_reset.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    p_status = commands.add_parser("status", help="processes and heartbeats")
    p_status.add_argument("--listen-s", type=float, default=3.0, help="how long to wait for heartbeats [default 3]")
    p_logs = commands.add_parser("logs", help="tail logs")
    p_logs.add_argument(
        "service", nargs="?", default=None, help="one service (market_data, strategy, ...), nats or postgres"
    )
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    commands.add_parser("exec", help="run a command with .run/env in its environment: exec COMMAND [ARGS...]")
    commands.add_parser("psql", help="psql on the system's database, read-only: psql [PSQL ARGS...]")
    commands.add_parser("supervise", help="restart whatever dies, until stopped (`up` starts it in the background)")
    p_collect = commands.add_parser(
        COLLECTOR_MARK, help="serve nats-server's and PostgreSQL's health as metrics (`up` starts it in the background)"
    )
    p_collect.add_argument("--nats-monitor-url", required=True, help="nats-server's monitoring endpoint")
    p_collect.add_argument("--metrics-port", type=int, required=True, help="port to serve /metrics on")
    p_collect.add_argument("--metrics-host", default=HOST, help=f"address to serve /metrics on [default {HOST}]")
    # What follows `exec` or `psql` belongs to the command run, options included (`psql -c ...`), which
    # argparse's REMAINDER does not pass on when it starts with a dash.
    words = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    for at, word in enumerate(words):
        if word in ("exec", "psql"):
            words, passthrough = words[: at + 1], words[at + 1 :]
            break
    args = parser.parse_args(words)
    run = RunDir(args.run_dir.resolve())
    try:
        if args.command == "up":
            if args.feed is not None and args.feed not in FEEDS:
                parser.error(f"up: feed must be one of {', '.join(FEEDS)}, got {args.feed!r}")
            if args.shards is not None and not 1 <= args.shards <= 64:
                parser.error(f"--shards: expected 1 to 64, got {args.shards}")
            if (args.venue or args.symbols) and args.feed != "live":
                parser.error("up: --venue and --symbols go with the live feed: up live --venue V --symbols S,...")
            for value, setting in ((args.venue, "RRR_MARKET_DATA_VENUES"), (args.symbols, "RRR_MARKET_DATA_SYMBOLS")):
                if value:
                    os.environ[setting] = value
            return up(
                run, feed=args.feed, shards=args.shards, timeout_s=args.timeout_s, supervised=not args.no_supervise
            )
        if args.command == "ui":
            if args.port is not None and not 0 <= args.port <= 65535:
                parser.error(f"--port: expected 0 to 65535, got {args.port}")
            return ui(run, host=args.host, port=args.port)
        if args.command == "down":
            return down(run)
        if args.command == "reset":
            return reset(run, yes=args.yes)
        if args.command == "status":
            return status(run, listen_s=args.listen_s)
        if args.command == "logs":
            return logs(run, args.service, args.lines)
        if args.command == "supervise":
            return supervise(run)
        if args.command == COLLECTOR_MARK:
            return collect(args.nats_monitor_url, args.metrics_host, args.metrics_port)
        rest = passthrough[1:] if passthrough[:1] == ["--"] else passthrough
        if args.command == "psql":
            return psql(run, rest)
        return exec_with_env(run, rest)
    except RRRError as exc:
        print(f"rrr-stack {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
