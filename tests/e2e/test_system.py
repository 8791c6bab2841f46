"""The whole system as a user runs it: `rrr-stack up`, a replay, PostgreSQL checked against the file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import asyncpg
import pytest

from rrr.deploy.identities import PG_WRITER, Identities
from rrr.deploy.pid_files import pid_alive, read_pid_file
from rrr.deploy.run_dir import RunDir, read_state
from rrr.market_data.replay import source_id
from rrr.shared.bus import Bus
from tests.support.reference import sma_cross_expectations
from tests.support.streams import count_quotes
from tests.support.system import permission_violations

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DATA = Path(__file__).parents[1] / "data"
EURUSD = DATA / "eurusd_quotes_2020-01-01.csv"
BIN = Path(sys.executable).parent


def _cli(*argv: str | Path, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout_s, check=False, env=os.environ.copy()
    )


def _env(run_dir: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in (run_dir / "env").read_text().splitlines())
    return {k: v for k, sep, v in pairs if sep}


async def _wait_for_rows(dsn: str, expected: dict[str, int], timeout_s: float) -> dict[str, int]:
    """Poll the row counts until they equal ``expected`` or the deadline passes; return the last counts."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in expected}  # noqa: S608
            if counts == expected or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    finally:
        await conn.close()


async def _admin_bus(run_dir: Path) -> Bus:
    """Not a tool's identity: the test reads the streams' state, which only the admin may."""
    state = read_state(RunDir(run_dir))
    assert state is not None
    url = Identities(RunDir(run_dir)).nats_url("admin", state.nats_port)
    return await Bus.connect(url, service="test", name="e2e-admin", timeout_s=10)


def _assert_no_secret_shown(run_dir: Path, outputs: list[str]) -> None:
    """No password or key appears in any log, state file or command output, nor in any process's argv."""
    secrets = {p.name: p.read_text().strip() for p in (run_dir / "secrets").iterdir()}
    assert (run_dir / "secrets").stat().st_mode & 0o777 == 0o700
    for path in [run_dir / "env", *(run_dir / "secrets").iterdir(), run_dir / "nats" / "nats.conf"]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    shown = {
        str(p): p.read_text(errors="replace")
        for p in [*run_dir.rglob("*.log"), *run_dir.glob("*.json"), run_dir / "up.out"]
        if p.is_file()
    }
    shown |= {f"output {i}": text for i, text in enumerate(outputs)}
    for pid_file in run_dir.rglob("*.pid"):
        pid = read_pid_file(pid_file)
        if pid is not None:
            shown[f"argv of {pid_file.stem}"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    leaks = [(name, where) for name, secret in secrets.items() for where, text in shown.items() if secret in text]
    assert not leaks, f"secrets shown: {leaks}"


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    up = _cli(BIN / "rrr-stack", "--run-dir", run_dir, "up", "none", "--timeout-s", "120")
    try:
        assert up.returncode == 0, f"rrr-stack up failed:\n{up.stdout}\n{up.stderr}"
        (run_dir / "up.out").write_text(up.stdout + up.stderr)
        yield run_dir
    finally:
        down = _cli(BIN / "rrr-stack", "--run-dir", run_dir, "down")
        assert down.returncode == 0, down.stderr
        pids = [int(p.read_text()) for p in run_dir.rglob("*.pid")]
        assert not [p for p in pids if pid_alive(p)], "processes left running after down"


async def test_replaying_eurusd_through_the_four_service_processes_stores_exactly_what_the_file_implies(
    stack: Path,
) -> None:
    env = _env(stack)
    # Each tool's least identity: the tap's listens only, the replay's publishes market data only.
    assert env["RRR_NATS_URL"].startswith("nats://tap:")
    assert env["RRR_MARKET_DATA_NATS_URL"].startswith("nats://replay:")
    assert env["RRR_DATABASE_URL"].startswith("postgresql://rrr_reader:")
    expected = sma_cross_expectations(EURUSD)

    # A malformed payload on a subject three services consume: each counts it and dead-letters it, and
    # none of them stops.
    bus = await Bus.connect(env["RRR_MARKET_DATA_NATS_URL"], service="test", name="e2e-replay", timeout_s=10)
    try:
        await bus.js.publish("md.quote.0.EURUSD", b"\x93not a quote")
    finally:
        await bus.close()

    replay = _cli(
        BIN / "rrr-stack", "--run-dir", stack, "exec", BIN / "rrr-market-data", "replay", EURUSD, "--no-progress"
    )
    assert replay.returncode == 0, replay.stderr
    assert f"rows={expected.quotes} published={expected.quotes} duplicates=0" in replay.stdout

    want = {
        "quotes": expected.quotes,
        "signals": expected.crosses,
        "orders": len(expected.orders),
        "fills": len(expected.orders),
        "positions": 1,
    }
    counts = await _wait_for_rows(env["RRR_DATABASE_URL"], want, timeout_s=120)
    print(f"stored {counts}, expected {want}")
    assert counts == want

    conn = await asyncpg.connect(env["RRR_DATABASE_URL"])
    try:
        source = source_id(EURUSD)
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM quotes")}
        assert ids == {f"{source}:{line}" for line in range(2, expected.quotes + 2)}

        rows = await conn.fetch(
            """SELECT o.client_order_id, o.side, o.qty, o.status, f.price, f.qty AS fill_qty, f.fee
                 FROM orders o JOIN fills f USING (client_order_id)"""
        )
        got = sorted(
            (r["client_order_id"], r["side"], r["qty"], r["status"], r["price"], r["fill_qty"], r["fee"]) for r in rows
        )
        want_orders = sorted(
            (
                f"sma_cross-{source}:{o.line}",
                o.side,
                Decimal(o.qty.numerator),
                "filled",
                o.price,
                Decimal(o.qty.numerator),
                0,
            )
            for o in expected.orders
        )
        assert [g[:4] for g in got] == [w[:4] for w in want_orders]
        assert all(Fraction(g[4]) == w[4] and g[5] == w[5] and g[6] == 0 for g, w in zip(got, want_orders, strict=True))

        position = await conn.fetchrow(
            "SELECT qty, avg_price, realized_pnl, version FROM positions WHERE symbol = 'EURUSD'"
        )
        assert position is not None
        ref = expected.position
        assert (Fraction(position["qty"]), Fraction(position["avg_price"]), Fraction(position["realized_pnl"])) == (
            ref.qty,
            ref.avg_price,
            ref.realized_pnl,
        )
        assert position["version"] == ref.fills
        print(f"position qty={position['qty']} avg={position['avg_price']} realized={position['realized_pnl']}")
    finally:
        await conn.close()

    # The same file again: every quote is a duplicate of one already in the stream, so nothing new is stored.
    again = _cli(
        BIN / "rrr-stack", "--run-dir", stack, "exec", BIN / "rrr-market-data", "replay", EURUSD, "--no-progress"
    )
    assert again.returncode == 0, again.stderr
    assert f"published=0 duplicates={expected.quotes}" in again.stdout
    admin = await _admin_bus(stack)
    try:
        # The file's quotes once (in batches), and the malformed payload.
        assert await count_quotes(admin.js) == expected.quotes
        info = await admin.js.stream_info("RRR_MD")
        assert info.state.messages == -(-expected.quotes // 512) + 1

        dead = await admin.js.stream_info("RRR_DLQ")
        # market-data (its core subscription), strategy and persistence (their durable consumers).
        assert dead.state.messages == 3
    finally:
        await admin.close()

    status = _cli(BIN / "rrr-stack", "--run-dir", stack, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    for service in ("market_data-0", "strategy-0", "execution-0", "persistence-0"):
        assert "healthy" in lines[service], status.stdout
    for service in ("market_data-0", "strategy-0", "persistence-0"):
        assert "malformed=1 " in lines[service] + " ", status.stdout

    # Every service ran as its own NATS user and never needed what its role does not allow; persistence
    # wrote as its own PostgreSQL role; no password was shown anywhere.
    assert permission_violations(stack / "nats" / "nats.log") == []
    conn = await asyncpg.connect(env["RRR_DATABASE_URL"])
    try:
        users = {r[0] for r in await conn.fetch("SELECT usename FROM pg_stat_activity WHERE datname = 'rrr'")}
    finally:
        await conn.close()
    assert PG_WRITER in users
    outputs = [replay.stdout, replay.stderr, again.stdout, again.stderr, status.stdout, status.stderr]
    _assert_no_secret_shown(stack, outputs)


def test_justfile_offers_every_recipe_the_readme_names() -> None:
    listing = _cli(BIN / "just", "--justfile", Path(__file__).parents[2] / "justfile", "--list", timeout_s=30)
    assert listing.returncode == 0, listing.stderr
    recipes = {
        line.split()[0] for line in listing.stdout.splitlines()[1:] if line.strip() and not line.strip().startswith("[")
    }
    assert {"up", "replay", "tap", "status", "logs", "down", "reset", "test", "lint"} <= recipes
