"""What the local system shows of itself: health from heartbeats, ``rrr-stack status``, logs, and running a
tool (or psql) with ``.run/env``, the least identity each tool needs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec
from nats.aio.msg import Msg

from rrr.deploy.dashboard.config import url_of
from rrr.deploy.identities import HOST, Identities
from rrr.deploy.nats_server import NatsServer
from rrr.deploy.pid_files import pid_alive, read_pid_file
from rrr.deploy.postgres_server import PostgresServer, postgres_bin_dir
from rrr.deploy.processes import log_tail, service_program
from rrr.deploy.run_dir import RunDir, StackError, instance, read_state, service_of
from rrr.deploy.stack_nats import nats_processes
from rrr.deploy.supervisor import (
    COLLECTOR,
    COLLECTOR_MARK,
    UI,
    UI_PROGRAM,
    ProcessRecord,
    read_supervisor_state,
    supervisor_pid,
)
from rrr.deploy.terminal import printable
from rrr.shared import subjects
from rrr.shared.bus import Bus, Subscription
from rrr.shared.config import redact, tls_from_env
from rrr.shared.discovery import Ping
from rrr.shared.errors import RRRError
from rrr.shared.messages import Heartbeat, heartbeat_decoder
from rrr.shared.service import heartbeat_pid


def servers(run: RunDir) -> list[tuple[str, type[NatsServer | PostgresServer], Path]]:
    """Each server of the system (every NATS node, PostgreSQL): its name, its kind and its data directory."""
    nats: list[tuple[str, type[NatsServer | PostgresServer], Path]] = [
        (name, NatsServer, data_dir) for name, data_dir in nats_processes(run, read_state(run))
    ]
    return [*nats, (PostgresServer.name, PostgresServer, run.pg_dir)]


async def wait_for_heartbeats(
    url: str,
    expected: set[str],
    timeout_s: float,
    procs: Mapping[str, int],
    log_of: Callable[[str], Path],
    tls: ssl.SSLContext | None = None,
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
        tls: The system's TLS for NATS, when it has some.

    Raises:
        StackError: a service process exited, or the deadline passed.
    """
    bus = await Bus.connect(url, service="stack", name="rrr-stack", timeout_s=10, tls=tls)
    seen: dict[str, Heartbeat] = {}
    done = asyncio.Event()

    async def _on_beat(msg: Msg, beat: Heartbeat) -> None:
        # A standby is named by its instance (strategy-0b); the first instance of a shard by its service and shard.
        name = beat.instance if beat.instance in procs else instance(beat.service, beat.shard)
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


_ping_decoder = msgspec.json.Decoder(Ping)


async def discover(url: str, expected: int, window_s: float, tls: ssl.SSLContext | None = None) -> list[Ping]:
    """The service instances that answer ``$SRV.PING`` (NATS service discovery), wherever they run.

    Discovery has no end: answers are taken until ``expected`` came or ``window_s`` passed.
    """
    bus = await Bus.connect(url, service="stack", name="rrr-stack", timeout_s=10, tls=tls)
    found: list[Ping] = []
    enough = asyncio.Event()

    async def _on_answer(msg: Msg) -> None:
        try:
            found.append(_ping_decoder.decode(msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not an answer of the protocol: left out
        if len(found) >= expected:
            enough.set()

    try:
        inbox = bus.nc.new_inbox()
        await bus.nc.subscribe(inbox, cb=_on_answer)
        await bus.nc.publish(subjects.discovery("PING"), b"", reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout=window_s)
    finally:
        await bus.close()
    return sorted(found, key=lambda p: (p.name, p.metadata.get("shard", ""), p.id))


# Settings that carry a secret: never recorded in state.json, never printed.
SECRET_SETTINGS = ("RRR_DLQ_KEY",)


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less what carries a secret (a URL with a password, a key): such a setting is an identity,
    which every process gets its own of, not one inherited from whoever ran `up`."""
    return {k: v for k, v in env.items() if k not in SECRET_SETTINGS and redact(v) == v}


def shown(key: str, value: str) -> str:
    """A setting as it may be printed: passwords and keys hidden."""
    return "***" if key in SECRET_SETTINGS else str(redact(value))


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
    server_pids = {name: read_pid_file(d / s.pid_name, s.name) for name, s, d in servers(run)}
    for name, pid in server_pids.items():
        healthy &= pid is not None
        rows.append((name, "running" if pid else "stopped", str(pid or "-"), _restarts(records.get(name)), ""))
    if state.collector_port:
        pid = read_pid_file(run.collector_pid, COLLECTOR_MARK)
        healthy &= pid is not None
        rows.append(
            (COLLECTOR, "running" if pid else "stopped", str(pid or "-"), _restarts(records.get(COLLECTOR)), "")
        )
    if state.ui_port:
        pid = read_pid_file(run.ui_pid, UI_PROGRAM)
        healthy &= pid is not None
        rows.append((UI, "running" if pid else "stopped", str(pid or "-"), _restarts(records.get(UI)), ""))
    env = read_env(run)
    beats: dict[str, Heartbeat] = {}
    services = run.service_instances()
    alive = {
        name: pid
        for name in services
        if (pid := read_pid_file(run.service_pid(name), service_program(service_of(name)))) is not None
    }
    identities = Identities(run, tls=state.nats_tls)
    # The status user only listens to heartbeats; a run directory from before the users has none.
    url = identities.status_url(state.nats_ports) if identities.has_nats_users() else env["RRR_NATS_URL"]
    tls = tls_from_env(env)
    discovered: list[Ping] = []
    nats_up = any(pid is not None for name, pid in server_pids.items() if name.startswith(NatsServer.name))
    if alive and nats_up:
        with contextlib.suppress(StackError):
            beats = asyncio.run(wait_for_heartbeats(url, set(alive), listen_s, alive, run.service_log, tls))
        with contextlib.suppress(RRRError):
            discovered = asyncio.run(discover(url, len(alive), listen_s, tls))
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
    if discovered:
        print(f"discovered on NATS ($SRV.PING): {len(discovered)} instances")
    for ping in discovered:
        meta = ping.metadata
        fields = (
            ping.name, meta.get("instance", "?"), f"shard={meta.get('shard', '?')}/{meta.get('shards', '?')}",
            f"pid={meta.get('pid', '?')}", f"id={ping.id}", f"version={ping.version}",
            f"metrics={meta.get('metrics') or '-'}",
        )  # fmt: skip
        print("  " + " ".join(printable(str(field), 200) for field in fields))
    metrics = {**state.metrics_ports, **({COLLECTOR: state.collector_port} if state.collector_port else {})}
    for name, port in sorted(metrics.items()):
        print(f"metrics of {printable(name, 64)}: http://{HOST}:{port}/metrics")
    if state.ui_port:
        print(f"dashboard: {url_of(state.ui_host, state.ui_port)}")
    if metrics:
        print(f"prometheus targets: {run.prometheus_targets} (deploy/prometheus/prometheus.yml reads them)")
    print(
        f"settings: feed={state.feed} shards={state.shards} supervise={'yes' if state.supervise else 'no'} "
        f"nats_port={state.nats_port} nats_monitor_port={state.nats_monitor_port} pg_port={state.pg_port}"
        + (
            f" cluster={len(state.nats_nodes)} nats_ports={','.join(str(p) for p in state.nats_ports)}"
            if state.nats_nodes
            else ""
        )
        + (" sync=always" if state.nats_sync_always else "")
    )
    for key, value in env.items():
        print(f"{printable(key, 64)}={printable(shown(key, value))}")
    return 0 if healthy else 1


def _restarts(record: ProcessRecord | None) -> str:
    return f"restarts={record.restarts if record is not None else 0}"


def logs(run: RunDir, service: str | None, lines: int) -> int:
    """Print the last ``lines`` lines of one service's log, or of every log."""
    files = sorted(run.logs.glob("*.log")) if run.logs.exists() else []
    nats_logs = [data_dir / "nats.log" for _, data_dir in nats_processes(run, read_state(run))]
    files += [p for p in (*nats_logs, run.pg_dir / "postgres.log") if p.exists()]
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


def read_env(run: RunDir) -> dict[str, str]:
    """The settings in ``.run/env``."""
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
    env.update(read_env(run))
    os.execvpe(argv[0], list(argv), env)  # noqa: S606 - replaces this process by the user's own command


def psql(run: RunDir, argv: Sequence[str]) -> int:
    """Open psql on the system's database as the read-only role ``.run/env`` names (``RRR_DATABASE_URL``)."""
    if not run.env_file.exists():
        print("the system is not up: start it with `just up`", file=sys.stderr)
        return 1
    url = read_env(run).get("RRR_DATABASE_URL")
    if not url:
        print(f"no RRR_DATABASE_URL in {run.env_file}: start the system again with `just up`", file=sys.stderr)
        return 1
    program = str(postgres_bin_dir() / "psql")
    os.execv(program, [program, url, *argv])  # noqa: S606 - the user's own psql session replaces this process
