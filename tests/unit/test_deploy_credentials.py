"""Secrets of the local system: generated once, kept in files only their owner reads, never shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rrr.deploy.credentials import SecretError, SecretsDir, new_password, with_userinfo
from rrr.deploy.databases import scram_verifier
from rrr.deploy.nats_permissions import ROLES, SERVICE_ROLES, render_authorization
from rrr.shared import subjects
from rrr.shared.config import redact


def test_a_password_is_made_once_in_a_file_of_mode_0600_in_a_directory_of_mode_0700(tmp_path: Path) -> None:
    secrets = SecretsDir(tmp_path / "secrets")
    first = secrets.password("strategy")
    assert secrets.password("strategy") == first
    assert SecretsDir(tmp_path / "secrets").password("strategy") == first
    assert secrets.password("execution") != first
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "strategy").stat().st_mode & 0o777 == 0o600
    assert len(first) >= 40


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    secrets = SecretsDir(tmp_path)
    secrets.password("tap")
    (tmp_path / "tap").chmod(0o644)
    with pytest.raises(SecretError, match="mode 0600"):
        secrets.password("tap")


def test_passwords_need_no_quoting_in_a_url_and_are_redacted_in_it() -> None:
    password = new_password()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", password)
    url = with_userinfo("nats://127.0.0.1:4222", "strategy", password)
    assert url == f"nats://strategy:{password}@127.0.0.1:4222"
    assert redact(url) == "nats://strategy:***@127.0.0.1:4222"
    assert with_userinfo(url, "tap", "x") == "nats://tap:x@127.0.0.1:4222"


def test_scram_verifier_has_postgresqls_layout_and_hides_the_password() -> None:
    verifier = scram_verifier("secret", salt=b"0123456789abcdef")
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier)
    assert "secret" not in verifier
    assert scram_verifier("secret", salt=b"0123456789abcdef") == verifier


def test_every_role_gets_a_user_and_only_admin_has_no_limits() -> None:
    block = render_authorization({name: f"pw-{name}" for name in ROLES})
    users = [json.loads(line) for line in block.splitlines() if line.strip().startswith("{")]
    by_name = {u["user"]: u for u in users}
    assert set(by_name) == set(ROLES)
    assert "permissions" not in by_name["admin"]
    for name in set(ROLES) - {"admin"}:
        assert "permissions" in by_name[name]
    assert by_name["tap"]["permissions"]["publish"] == {"deny": [">"]}
    assert by_name["status"]["permissions"]["subscribe"]["allow"] == ["ctl.>", "_INBOX_status.>"]
    for service in SERVICE_ROLES:
        subscribe = by_name[service]["permissions"]["subscribe"]["allow"]
        assert f"_INBOX_{service}.>" in subscribe
        assert not [s for s in subscribe if s.startswith("_INBOX") and s != f"_INBOX_{service}.>"]


def test_only_execution_may_publish_order_events_and_only_strategy_order_commands() -> None:
    def may_publish(role: str, prefix: str) -> bool:
        allowed = ROLES[role].publish
        return allowed is None or any(s.startswith(prefix) for s in allowed)

    assert [r for r in ROLES if r != "admin" and may_publish(r, "evt.")] == ["execution"]
    assert [r for r in ROLES if r != "admin" and may_publish(r, "cmd.")] == ["strategy"]
    assert sorted(r for r in ROLES if r != "admin" and may_publish(r, "md.")) == ["market_data", "replay"]


@pytest.mark.parametrize("shard", [0, 3])
def test_only_the_strategy_publishes_lockstep_markers_and_only_execution_their_progress(shard: int) -> None:
    marker, progress = subjects.step(subjects.ORDER_COMMAND, shard), subjects.step(subjects.ORDER_EVENT, shard)

    def publishers(subject: str) -> set[str]:
        return {
            name
            for name, role in ROLES.items()
            if role.publish is None or any(subjects.matches(subject, allowed) for allowed in role.publish)
        }

    assert publishers(marker) == {"strategy", "admin"}
    assert publishers(progress) == {"execution", "admin"}
    # Those who read the streams see them with the rest of their shard's commands and events.
    assert subjects.matches(marker, subjects.shard_filter(subjects.ORDER_COMMAND, shard))
    assert subjects.matches(progress, subjects.shard_filter(subjects.ORDER_EVENT, shard))
