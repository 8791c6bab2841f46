"""The live dashboard in a real headless Chromium, on `rrr-stack up` with security on, while the EUR/USD day is
replayed: the page loads, its figures move by push alone, the halt asks for a confirmation. Screenshots go to
build/dashboard/ (dashboard.png, halt-dialog.png)."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from rrr.deploy.dashboard.halt import HALT_AVAILABLE
from rrr.deploy.pid_files import read_pid_file
from rrr.deploy.processes import free_port, poll_until
from rrr.deploy.stack_ui import wait_for_ui
from rrr.deploy.supervisor import UI_PROGRAM
from tests.support.stack import EURUSD, Stack
from tests.support.system import permission_violations

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SCREENSHOTS = Path(__file__).parents[2] / "build" / "dashboard"
# What the EUR/USD day gives (README): 757 orders, each filled; PnL at the last mid -0.04526.
ORDERS = "757"
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_WAIT_MS = 60_000


def _browser_path(playwright: Playwright) -> str:
    for name in _BROWSERS:
        found = shutil.which(name)
        if found is not None:
            return found
    downloaded = Path(playwright.chromium.executable_path)
    if downloaded.exists():
        return str(downloaded)
    pytest.skip(
        "no Chromium found (looked for " + ", ".join(_BROWSERS) + " on PATH and for Playwright's own): "
        "`apt-get install chromium` (.ci/run installs it when it can)"
    )


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses its sandbox as root, which CI is.
        launched = playwright.chromium.launch(executable_path=_browser_path(playwright), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _dashboard_url(up_output: str) -> str:
    found = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)$", up_output, re.MULTILINE)
    assert found is not None, up_output
    return found[1]


def _watch_text(page: Page, element_id: str) -> None:
    """Record every text an element shows, as the page changes it, in ``window.rrrSeen[element_id]``."""
    page.evaluate(
        """(id) => {
            window.rrrSeen = window.rrrSeen || {};
            const el = document.getElementById(id);
            const seen = window.rrrSeen[id] = [el.textContent];
            new MutationObserver(() => { if (seen.at(-1) !== el.textContent) seen.push(el.textContent); })
                .observe(el, { childList: true, characterData: true, subtree: true });
        }""",
        element_id,
    )


def _halves(tmp_path: Path) -> tuple[Path, Path]:
    """The EUR/USD day as two files, its first and second half: replayed one after the other, they give what
    the whole day gives (the strategy goes on from where the first half left it)."""
    header, *rows = EURUSD.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first_half.csv", tmp_path / "second_half.csv"
    first.write_text(header + "".join(rows[: len(rows) // 2]))
    second.write_text(header + "".join(rows[len(rows) // 2 :]))
    return first, second


def _replay(stack: Stack, path: Path) -> None:
    replay = stack.replay(path)
    out, err = replay.communicate(timeout=300)
    assert replay.returncode == 0, out + err


def test_the_dashboard_shows_a_replayed_day_live_and_asks_before_it_halts(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    first_half, second_half = _halves(tmp_path)
    up = stack.up()
    url = _dashboard_url(up.stdout)
    status = stack.status()
    assert f"dashboard: {url}" in status, status
    assert re.search(r"^ui\s+running", status, re.MULTILINE), status

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    frames: list[int] = []
    page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(len(frame))))

    page.goto(url)
    expect(page.locator("#conn")).to_have_text("live", timeout=_WAIT_MS)
    expect(page.locator("#nats")).to_have_class(re.compile("pill-ok"), timeout=_WAIT_MS)
    expect(page.locator("#db")).to_have_class(re.compile("pill-ok"), timeout=_WAIT_MS)
    # The four instances, each healthy by its heartbeat.
    expect(page.locator("#services-body tr")).to_have_count(4, timeout=_WAIT_MS)
    expect(page.locator("#services-body .status-ok")).to_have_count(4, timeout=_WAIT_MS)
    expect(page.locator("#kpi-fills")).to_have_text("0", timeout=_WAIT_MS)
    expect(page.locator("#orders-empty")).to_be_visible()
    for element_id in ("kpi-fills", "kpi-orders", "kpi-pnl"):
        _watch_text(page, element_id)

    _replay(stack, first_half)
    # Half a day in: orders, fills and a PnL are there, short of the whole day's.
    expect(page.locator("#kpi-fills")).not_to_have_text("0", timeout=_WAIT_MS)
    expect(page.locator("#orders-body tr").first).to_contain_text("filled", timeout=_WAIT_MS)
    halfway = int(page.locator("#kpi-fills").inner_text().replace(",", ""))
    assert 0 < halfway < int(ORDERS)
    _replay(stack, second_half)

    expect(page.locator("#kpi-orders")).to_have_text(ORDERS, timeout=_WAIT_MS)
    expect(page.locator("#kpi-fills")).to_have_text(ORDERS, timeout=_WAIT_MS)
    expect(page.locator("#kpi-pnl")).to_have_text("-0.04526", timeout=_WAIT_MS)
    expect(page.locator("#kpi-pnl")).to_have_class(re.compile("neg"))
    expect(page.locator("#orders-body tr")).to_have_count(20)
    expect(page.locator("#orders-body tr").first).to_contain_text("EURUSD")
    expect(page.locator("#orders-body tr").first).to_contain_text("filled")
    expect(page.locator("#fills-body tr")).to_have_count(20)
    expect(page.locator("#strategies-body tr")).to_have_count(1)
    expect(page.locator("#strategies-body tr").first).to_contain_text("sma_cross")
    expect(page.locator("#positions-body tr").first).to_contain_text("EURUSD")
    expect(page.locator("#equity-chart canvas")).to_have_count(1)
    expect(page.locator("#throughput-chart canvas")).to_have_count(1)
    # Each instance's consumers by NATS discovery: messages a second and handler time, once two answers came.
    expect(page.locator("#services-body tr td:nth-child(4)").first).to_have_text(re.compile(r"\d"), timeout=_WAIT_MS)

    seen = page.evaluate("() => window.rrrSeen")
    print(f"\nfills shown as the replay ran: {seen['kpi-fills']}; PnL: {seen['kpi-pnl']}")
    fills_seen = [int(text.replace(",", "")) for text in seen["kpi-fills"]]
    assert fills_seen[0] == 0, seen
    assert halfway in fills_seen, seen
    assert fills_seen[-1] == int(ORDERS), seen
    assert fills_seen == sorted(fills_seen), seen  # the count only ever grew
    assert len(seen["kpi-pnl"]) >= 3, seen
    # All of it by push, on the page first loaded.
    assert navigations == [url], navigations
    assert len(frames) >= 3, frames

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True, animations="disabled")

    assert not errors, errors

    # The halt: a dialog that halts nothing until HALT is typed, and a cancel that sends nothing.
    halts: list[str] = []
    page.on("request", lambda request: halts.append(request.method) if request.url.endswith("/api/halt") else None)
    page.locator("#halt-open").click()
    dialog = page.locator("#halt-dialog")
    expect(dialog).to_be_visible()
    send = page.locator("#halt-send")
    expect(send).to_be_disabled()
    page.locator("#halt-confirm").fill("HAL")
    expect(send).to_be_disabled()
    page.locator("#halt-cancel").click()
    expect(dialog).to_be_hidden()
    assert halts == []

    page.locator("#halt-open").click()
    page.locator("#halt-reason").fill("browser test")
    page.locator("#halt-confirm").fill("HALT")
    expect(send).to_be_enabled()
    page.screenshot(path=SCREENSHOTS / "halt-dialog.png", animations="disabled")
    with page.expect_response(lambda response: response.url.endswith("/api/halt")) as answered:
        send.click()
    response = answered.value
    assert halts == ["POST"]
    assert HALT_AVAILABLE
    assert response.status == 200, response.text()
    # Every execution shard confirmed: the halt is in force, and the risk panel says so.
    assert "1/1 shards confirmed" in response.json()["outcome"], response.text()
    expect(page.locator("#halt-result")).to_contain_text("halt sent")
    expect(dialog).to_be_hidden()
    expect(page.locator("#risk-trading")).to_contain_text("HALTED account", timeout=_WAIT_MS)
    page.screenshot(path=SCREENSHOTS / "halted.png", animations="disabled")
    log = stack.run.ui_log.read_text()
    assert "HALT requested by rrr-ui@127.0.0.1" in log, log
    assert "reason browser test" in log, log
    assert "1/1 shards confirmed" in log, log

    # Nothing went wrong in the browser.
    assert errors == [], errors
    refused = permission_violations(stack.run.nats_dir / "nats.log")
    assert not refused, "\n".join(refused)


def test_just_ui_prints_the_address_the_supervisor_restores_it_and_it_moves_when_asked(stack: Stack) -> None:
    url = _dashboard_url(stack.up().stdout)
    shown = stack.cli("ui")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"dashboard: {url}" in shown.stdout

    # Killed, it is started again by the supervisor, on its port.
    pid = read_pid_file(stack.run.ui_pid, UI_PROGRAM)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert poll_until(lambda: read_pid_file(stack.run.ui_pid, UI_PROGRAM) not in (None, pid), 30)
    assert wait_for_ui(url, 30)

    # Moved to another port: the new address everywhere, nothing left on the old one.
    port = free_port()
    moved = stack.cli("ui", "--port", str(port))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f"dashboard: http://127.0.0.1:{port}/" in moved.stdout
    assert f"dashboard: http://127.0.0.1:{port}/" in stack.status()
    assert not wait_for_ui(url, 1)

    down = stack.cli("down")
    assert "ui" in down.stdout.split("stopped: ", 1)[1].split(", ")
    assert read_pid_file(stack.run.ui_pid, UI_PROGRAM) is None
