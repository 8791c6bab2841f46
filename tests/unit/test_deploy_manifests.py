"""The deploy files validate against their schemas: Kubernetes' (kubernetes-validate, schemas vendored in the
package, no cluster needed) and the Compose specification's (check-jsonschema's vendored compose-spec)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[2] / "deploy"
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("manifest", ["services.yaml", "secrets.example.yaml"])
def test_each_kubernetes_manifest_is_valid_for_kubernetes_1_31_in_strict_mode(manifest: str) -> None:
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "-k", "1.31.0", "--strict", str(DEPLOY / "k8s" / manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout + done.stderr


def test_the_compose_file_is_valid_for_the_compose_specification() -> None:
    done = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose" / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_nats_node_of_the_compose_cluster_verifies_its_clients_and_routes() -> None:
    for i in range(3):
        conf = (DEPLOY / "compose" / "nats" / f"nats-{i}.conf").read_text()
        assert conf.count("verify: true") == 2
        assert "sync_interval: always" in conf
