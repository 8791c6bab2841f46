"""A new user's mistakes, tried as one would make them: each gets one clear line, loses nothing, and leaves
no state that only `just reset` repairs."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from rrr.deploy.pid_files import read_pid_file
from rrr.deploy.processes import free_port, service_command
from rrr.deploy.run_dir import read_state
from tests.support.services import client_bus
from tests.support.stack import Stack


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> list[str]:
    """Read the process's output until a line contains ``needle``; return the lines read."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no line with {needle!r} within {timeout_s:g} s:\n{''.join(lines)}")


def test_a_service_started_with_no_nats_stops_at_once_on_ctrl_c_with_an_honest_line(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.Popen(
        [*service_command("strategy"), "--nats-url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        seen = _wait_for_line(proc, "nats:", 30)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        proc.kill()
    output = "".join(seen) + out
    assert proc.returncode == 0, output
    assert f"stopped before NATS at {url} could be reached" in output
    assert "redelivered" not in output
    # One line about the unreachable broker, not one per attempt.
    assert output.count("Connect call failed") <= 1, output
    print(f"\nstopped {took:.2f} s after SIGINT")


EURUSD = Path(__file__).parents[1] / "data" / "eurusd_quotes_2020-01-01.csv"
BIN = Path(sys.executable).parent


def _run(argv: list[str], env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def _tool_env(nats_url: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RRR_")} | {"RRR_NATS_URL": nats_url}


async def test_a_replay_with_another_shard_count_than_the_system_is_refused_and_publishes_nothing(
    nats_url: str,
) -> None:
    async with client_bus(nats_url) as bus:
        await bus.check_shards(1)  # a one-shard system, as its first service records it
        done = await asyncio.to_thread(
            _run, [*service_command("market_data"), "replay", str(EURUSD), "--no-progress", "--shards", "2"],
            _tool_env(nats_url),
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines == [
            "rrr-market-data replay: error: nothing was published: this system runs with --shards 1, not 2: "
            "the quotes would go to shards nobody consumes. Replay with --shards 1"
        ], done.stderr
        assert (await bus.js.stream_info("RRR_MD")).state.messages == 0


async def test_a_replay_into_a_system_no_service_ever_started_is_refused(nats_url: str) -> None:
    done = await asyncio.to_thread(
        _run, [*service_command("market_data"), "replay", str(EURUSD), "--no-progress"], _tool_env(nats_url)
    )
    assert done.returncode == 1, done.stderr
    assert "nothing was published: no service of this system has started yet" in done.stderr


def test_tools_run_while_the_system_is_down_say_so_in_one_line_at_once() -> None:
    env = _tool_env(f"nats://127.0.0.1:{free_port()}")
    for argv in (
        [*service_command("market_data"), "replay", str(EURUSD), "--no-progress"],
        [str(BIN / "rrr-tap"), "md.>"],
        [str(BIN / "rrr-dlq"), "list"],
    ):
        started = time.monotonic()
        done = _run(argv, env, timeout_s=30)
        took = time.monotonic() - started
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode != 0, argv
        assert len(lines) == 1, f"{argv[0]}:\n{done.stderr}"
        assert "cannot reach NATS at nats://127.0.0.1:" in lines[0], lines[0]
        assert "is the system up (`just up`)?" in lines[0], lines[0]
        print(f"\n{Path(argv[0]).name}: {took:.2f} s: {lines[0]}")


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_up_asking_for_another_port_while_the_system_runs_is_refused_and_changes_nothing(stack: Stack) -> None:
    stack.up()
    state, env = stack.run.state_file.read_bytes(), stack.run.env_file.read_bytes()
    stack.env["RRR_NATS_PORT"] = str(free_port())
    line = _one_error_line(stack.cli("up", "none"))
    assert "nats-server runs on port" in line
    assert "`just down` first" in line
    assert (stack.run.state_file.read_bytes(), stack.run.env_file.read_bytes()) == (state, env)
    del stack.env["RRR_NATS_PORT"]
    assert stack.cli("status").returncode == 0


def test_up_with_port_0_picks_a_free_port_and_keeps_it_across_down_and_up(stack: Stack) -> None:
    stack.env["RRR_NATS_PORT"] = "0"
    stack.up()
    port, _ = stack.ports()
    assert port != 0
    del stack.env["RRR_NATS_PORT"]
    assert stack.cli("down").returncode == 0
    stack.up()
    assert stack.ports()[0] == port


def test_up_without_a_feed_or_shard_count_keeps_the_systems_and_another_feed_is_refused(stack: Stack) -> None:
    stack.up("--shards", "2")
    again = stack.cli("up")  # no feed, no --shards: the system's own
    assert again.returncode == 0, again.stdout + again.stderr
    status = stack.cli("status").stdout
    assert "settings: feed=none shards=2" in status
    line = _one_error_line(stack.cli("up", "sim"))
    assert line.endswith("the system runs with feed none, not sim: `just down`, then `just up sim` to change it")
    assert "settings: feed=none shards=2" in stack.cli("status").stdout


def test_up_on_a_port_another_program_holds_says_so_in_one_line_and_leaves_nothing_running(stack: Stack) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        stack.env["RRR_PG_PORT"] = str(port)
        line = _one_error_line(stack.cli("up", "none"))
    assert f"postgres could not listen on port {port}: another program uses it" in line
    assert "Set RRR_PG_PORT to another port (0 picks a free one)" in line
    # nats-server, started first, was stopped again; no state claims a system.
    assert read_pid_file(stack.run.nats_dir / "nats.pid", "nats-server") is None
    assert read_state(stack.run) is None


def test_the_normal_path_writes_no_error_line_in_the_server_logs(stack: Stack) -> None:
    stack.up()
    assert stack.cli("down").returncode == 0
    stack.up()
    postgres = (stack.run.pg_dir / "postgres.log").read_text()
    nats_log = (stack.run.nats_dir / "nats.log").read_text()
    assert [line for line in postgres.splitlines() if "ERROR:" in line or "FATAL:" in line] == []
    assert [line for line in nats_log.splitlines() if "[ERR]" in line] == []


def test_reset_from_a_script_deletes_without_asking(stack: Stack) -> None:
    # In a terminal `reset` asks first (--yes does not); from a script, with no terminal, it does not ask.
    stack.up()
    done = stack.cli("reset")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted" in done.stdout
    assert not stack.run.root.exists()


def test_a_tool_run_by_hand_anywhere_below_the_system_finds_it_and_says_which_it_talks_to(
    stack: Stack, tmp_path: Path
) -> None:
    stack.up()
    project = tmp_path / "project"
    (project / "tests" / "data").mkdir(parents=True)
    (project / ".run").symlink_to(stack.run.root)  # as `just up` leaves it in the project folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRR_")}
    done = subprocess.run(
        [str(BIN / "rrr-tap"), "ctl.>", "--count", "1"],
        cwd=project / "tests" / "data",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"rrr-tap: using the system of {project}" in done.stderr
    assert "ctl.heartbeat." in done.stdout


def test_just_adds_no_epilogue_of_its_own_to_an_error_a_command_already_explained(tmp_path: Path) -> None:
    just = shutil.which("just")
    if just is None:
        pytest.skip("just is not on PATH")
    justfile = Path(__file__).parents[2] / "justfile"
    done = subprocess.run(
        [just, "--justfile", str(justfile), "replay", str(tmp_path / "no-such-file.csv")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("installing")]
    assert len(lines) == 1, done.stderr
    assert "Recipe" not in done.stderr


def _replay_with_a_bad_row(tmp_path: Path, stderr: int) -> subprocess.Popen[bytes]:
    """``rrr-market-data replay`` of a file whose third row does not read: it stops in its check, before NATS."""
    quotes = tmp_path / "quotes.csv"
    quotes.write_text(
        "ts,symbol,bid,ask\n2020-01-01T17:00:00.065Z,EURUSD,1.1212,1.1217\n2020-01-01T17:00:01Z,EURUSD,1.1213,x\n"
    )
    url = f"nats://127.0.0.1:{free_port()}"  # never reached: the check fails first
    return subprocess.Popen(
        [*service_command("market_data"), "replay", str(quotes), "--nats-url", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
    )  # fmt: skip


def test_the_replays_progress_is_drawn_on_a_terminal_and_left_out_of_a_pipe(tmp_path: Path) -> None:
    # Piped (a log, a script, CI): the error alone, no bar's redraws.
    piped = _replay_with_a_bad_row(tmp_path, subprocess.PIPE)
    _, err = piped.communicate(timeout=120)
    assert piped.returncode != 0
    assert "checking quotes.csv" not in err.decode(), err.decode()
    assert "quotes.csv:3: ask 'x' is not a decimal number" in err.decode(), err.decode()
    # On a terminal: the check's progress, then the same error.
    controller, terminal = pty.openpty()
    # A terminal of 100 columns: one without a size gets a bar of none.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = _replay_with_a_bad_row(tmp_path, terminal)
    os.close(terminal)
    drawn = bytearray()
    deadline = time.monotonic() + 120
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([controller], [], [], left)[0]:
            continue
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal's other end closed with the process
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert proc.wait(timeout=30) != 0
    assert "checking quotes.csv" in drawn.decode(errors="replace"), drawn


def test_just_replay_takes_the_file_path_from_where_the_user_stands(stack: Stack, tmp_path: Path) -> None:
    just = shutil.which("just")
    if just is None:
        pytest.skip("just is not on PATH")
    stack.up()
    here = tmp_path / "my" / "data"
    here.mkdir(parents=True)
    (here / "two.csv").write_text(
        "ts,symbol,bid,ask\n2020-01-01T00:00:00Z,EURUSD,1.1210,1.1212\n2020-01-01T00:00:01Z,EURUSD,1.1211,1.1213\n"
    )
    justfile = Path(__file__).parents[2] / "justfile"
    done = subprocess.run(
        [just, "--justfile", str(justfile), "replay", "two.csv", "--no-progress"],
        cwd=here,
        env={**stack.env, "RRR_RUN_DIR": str(stack.run.root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replayed two.csv: rows=2 published=2" in done.stdout
