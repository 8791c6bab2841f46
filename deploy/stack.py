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

from rrr.deploy.certificates import ensure_certificates
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
from rrr.deploy.stack_nats import local_nats, stream_replicas
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


def _settled(
    previous: StackState | None, feed: str | None, shards: int | None, nodes: int | None
) -> tuple[str, int, int]:
    """The feed, shard count and NATS nodes to run with: as asked, else as recorded, else the defaults.

    Raises:
        StackError: the shard count or the number of NATS nodes differs from the recorded one (streams and
            state are split by the one and stored on the other).
    """
    if previous is None:
        return feed or "sim", shards or 1, nodes or 1
    if shards is not None and shards != previous.shards:
        raise StackError(
            f"this system was set up with --shards {previous.shards}; its streams and state are split that way. "
            f"Start it with --shards {previous.shards} (or without --shards), or `just reset` to start over with "
            f"{shards}"
        )
    recorded = max(len(previous.nats_nodes), 1)
    if nodes is not None and nodes != recorded:
        raise StackError(
            f"this system was set up with --cluster {recorded}; its streams are stored on that many NATS nodes. "
            f"Start it with --cluster {recorded} (or without --cluster), or `just reset` to start over with {nodes}"
        )
    return feed or previous.feed, previous.shards, recorded


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


def up(
    run: RunDir,
    *,
    feed: str | None,
    shards: int | None,
    timeout_s: float,
    supervised: bool = True,
    nodes: int | None = None,
    sync_always: bool | None = None,
    tls: bool | None = None,
    standby: bool | None = None,
) -> int:
    """Start whatever is not running (servers on their ports of last time), then the supervisor; return
    once every service is healthy.

    ``nodes`` NATS servers (a cluster when more than one, streams with three replicas), each flushing its
    store after every write with ``sync_always``, taking TLS only with ``tls`` (certificates made into
    ``.run/tls/`` the first time), and with ``standby`` a second instance of every service for every shard,
    which takes over when the first one's lease lapses. A setting that would change what already runs (feed,
    ports, the store's sync) is refused with what to do instead; the state records only what is true, and
    what this call started is stopped again if it fails.
    """
    run.root.mkdir(parents=True, exist_ok=True)
    run.logs.mkdir(exist_ok=True)
    run.pids.mkdir(exist_ok=True)
    previous = read_state(run)
    feed, shards, nodes = _settled(previous, feed, shards, nodes)
    if sync_always is None:
        sync_always = previous.nats_sync_always if previous is not None else False
    if tls is None:
        tls = previous.nats_tls if previous is not None else False
    if standby is None:
        standby = previous.standby if previous is not None else False
    specs = dict(previous.services) if previous is not None else {}
    identities = Identities(run, tls=tls)
    certificates = ensure_certificates(run.tls_dir) if tls else None
    # Held while starting anything, so that the supervisor never starts the same process at the same time.
    with run.lock():
        local = local_nats(
            run,
            identities,
            nodes=nodes,
            port=_port("RRR_NATS_PORT", previous.nats_port if previous else None),
            monitor_port=_port("RRR_NATS_MONITOR_PORT", previous.nats_monitor_port if previous else None),
            cluster_ports=previous.nats_nodes if previous else (),
            sync_always=sync_always,
            tls=certificates.server() if certificates is not None else None,
        )
        nats = local.first
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
                nats_nodes=local.node_ports(),
                nats_sync_always=sync_always,
                nats_tls=tls,
                standby=standby,
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
            if sync_always != previous.nats_sync_always and running.get(nats.name) is not None:
                raise StackError(
                    f"NATS runs with --sync {'always' if previous.nats_sync_always else 'default'}: `just down`, "
                    f"then `just up --sync {'always' if sync_always else 'default'}` to change it"
                )
            if tls != previous.nats_tls and running.get(nats.name) is not None:
                raise StackError(
                    f"NATS runs {'with' if previous.nats_tls else 'without'} TLS: `just down`, then "
                    f"`just up {'--tls' if tls else '--no-tls'}` to change it"
                )
        started: list[NatsServer | PostgresServer] = []
        to_start: list[tuple[str, NatsServer | PostgresServer, str | None]] = [
            (name, node, "RRR_NATS_PORT" if i == 0 else None) for i, (name, node) in enumerate(local.servers)
        ]
        to_start.append((pg.name, pg, "RRR_PG_PORT"))
        try:
            for name, server, port_env in to_start:
                if read_pid_file(server.pid_file, server.name) is None:
                    # Someone else may have taken the port of last time since: fall back to a free one.
                    if not (port_env and _port(port_env, None)) and not port_free(server.port):
                        server.port = free_port()
                    print(f"starting {name} on port {server.port} ...", flush=True)
                    _start(server, port_env or "RRR_NATS_PORT")
                    started.append(server)
            if local.cluster is not None:
                # Streams are created only once the nodes agree on a JetStream meta leader.
                local.cluster.wait_formed(60.0)
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
        deployment = {"RRR_STREAM_REPLICAS": str(stream_replicas(nodes))}
        if standby:
            # Every instance takes part in fail-over: each acts only while it holds its shard's lease.
            deployment["RRR_LEASE_TTL_MS"] = os.environ.get("RRR_LEASE_TTL_MS") or str(DEFAULT_LEASE_TTL_MS)
        if certificates is not None:
            deployment |= certificates.client_env()
        tools = identities.write_tools_env(local.ports, pg.port, shards, deployment)

        # No identity in here: what is recorded for the supervisor (state.json) holds no secret. Each process
        # gets its own identity at start, from .run/secrets/.
        env = {
            **without_secrets(os.environ),
            "RRR_SHARDS": str(shards),
            "RRR_MARKET_DATA_FEED": feed,
            **deployment,
        }
        procs: dict[str, int] = {}
        for service in SERVICES:
            for shard, name in _shard_instances(service, shards, standby):
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
                    if name != instance(service, shard):
                        argv += ["--instance", name]  # its heartbeats say which of the shard's two it is
                    spec = ServiceSpec(argv=argv, env=settings(env))
                    # Detached: it outlives this command and a Ctrl-C in its terminal; `down` stops it.
                    process = ManagedProcess(
                        name,
                        spec.argv,
                        log_file=run.service_log(name),
                        pid_file=run.service_pid(name),
                        env={**env, **identities.service_env(service, local.ports, pg.port)},
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
    client_tls = certificates.client_context() if certificates is not None else None
    status_url = identities.status_url(local.ports)
    asyncio.run(wait_for_heartbeats(status_url, set(procs), timeout_s, procs, run.service_log, client_tls))
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


# How long a shard waits for its standby after the active instance stops renewing, at most (RRR_LEASE_TTL_MS).
DEFAULT_LEASE_TTL_MS = 3000


def _instances(service: str, shard: int, standby: bool) -> list[str]:
    """The instances of ``service`` for ``shard``: ``strategy-0``, and with a standby ``strategy-0b`` too."""
    name = instance(service, shard)
    return [name, f"{name}b"] if standby else [name]


def _shard_instances(service: str, shards: int, standby: bool) -> list[tuple[int, str]]:
    """Every instance of ``service``, with its shard."""
    return [(shard, name) for shard in range(shards) for name in _instances(service, shard, standby)]


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
    for name, server, data_dir in servers(run):
        if read_pid_file(data_dir / server.pid_name, server.name) is None:
            (data_dir / server.pid_name).unlink(missing_ok=True)
        elif server.stop_detached(data_dir):
            stopped.append(name)
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
    p_up.add_argument(
        "--cluster",
        type=int,
        default=None,
        metavar="N",
        help="NATS nodes: 1, or a cluster of 3 or 5 (routes on loopback, streams replicated on 3) "
        "[default: as recorded, else 1]",
    )
    p_up.add_argument(
        "--sync",
        choices=("default", "always"),
        default=None,
        help="JetStream store: flushed to disk after every write (always), or every 2 minutes as nats-server "
        "does by default [default: as recorded, else default]",
    )
    p_up.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NATS takes TLS only, for clients and routes, with a certificate authority made into .run/tls/ and "
        "every certificate verified [default: as recorded, else no]",
    )
    p_up.add_argument(
        "--standby",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a second instance of every service for every shard (strategy-0b ...), which takes over when the "
        "first one's lease lapses (RRR_LEASE_TTL_MS, default 3000) [default: as recorded, else no]",
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
            if args.cluster is not None and args.cluster not in (1, 3, 5):
                parser.error(f"--cluster: expected 1, 3 or 5 nodes (a quorum outlives 1 or 2), got {args.cluster}")
            if (args.venue or args.symbols) and args.feed != "live":
                parser.error("up: --venue and --symbols go with the live feed: up live --venue V --symbols S,...")
            for value, setting in ((args.venue, "RRR_MARKET_DATA_VENUES"), (args.symbols, "RRR_MARKET_DATA_SYMBOLS")):
                if value:
                    os.environ[setting] = value
            return up(
                run,
                feed=args.feed,
                shards=args.shards,
                timeout_s=args.timeout_s,
                supervised=not args.no_supervise,
                nodes=args.cluster,
                sync_always=None if args.sync is None else args.sync == "always",
                tls=args.tls,
                standby=args.standby,
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
