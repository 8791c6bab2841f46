"""What the dashboard serves from its package: the vendored chart library as pinned, a page with no inline script,
and the checks of the web edge that need no server."""

from __future__ import annotations

import hashlib
import re

import msgspec
import pytest

from rrr.deploy.dashboard.web import STATIC, HaltForm, _host_allowed

# uPlot 1.6.32 from the npm registry, unchanged (static/vendor/README.md).
VENDORED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "uPlot.LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


@pytest.mark.parametrize(("name", "sha256"), sorted(VENDORED.items()))
def test_the_vendored_chart_library_is_the_pinned_release(name: str, sha256: str) -> None:
    assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == sha256


def test_the_page_loads_only_its_own_files_and_runs_no_inline_script() -> None:
    page = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, page
    assert all(source.startswith("/static/") or source == "data:," for source in sources), sources
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "an inline script would need 'unsafe-inline'"
    assert not re.search(r"\son[a-z]+\s*=", page), "an inline event handler would need 'unsafe-inline'"
    assert page.count("__RRR_TOKEN__") == 1


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "[::1]", "10.1.2.3:80", "::1"],
)
def test_a_host_header_naming_an_address_or_localhost_is_taken(host: str) -> None:
    assert _host_allowed(host, frozenset())


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example", "", None, "[::1"],
)
def test_a_host_header_naming_another_site_is_refused(host: str | None) -> None:
    assert not _host_allowed(host, frozenset())


def test_a_host_named_by_allowed_hosts_is_taken() -> None:
    assert _host_allowed("trading-box:8080", frozenset({"trading-box"}))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{}", "missing required field `confirm`"),
        (b'{"confirm": "halt"}', "Invalid enum value 'halt'"),
        (b'{"confirm": "HALT", "reason": "a\\u001b[2Jb"}', "Expected `str` matching"),
        (b'{"confirm": "HALT", "reason": "' + b"x" * 201 + b'"}', "Expected `str` of length <= 200"),
        (b'{"confirm": "HALT", "scope": "everything"}', "unknown field `scope`"),
        (b"HALT", "malformed"),
    ],
)
def test_a_halt_body_that_is_not_a_plain_confirmation_is_refused(body: bytes, error: str) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError), match=re.escape(error)):
        msgspec.json.decode(body, type=HaltForm)


def test_a_confirmed_halt_with_a_reason_decodes() -> None:
    form = msgspec.json.decode(b'{"confirm": "HALT", "reason": "fat finger on EURUSD"}', type=HaltForm)
    assert form.reason == "fat finger on EURUSD"
