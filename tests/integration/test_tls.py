"""TLS with NATS, verification on both ways: the system's own authority, a server and a client certificate.

A client that has the authority and a certificate of its own connects and uses JetStream over TLS; one without
the authority, or without a certificate, is refused at once with a line saying why; the nodes of a cluster route
to one another over verified TLS too.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rrr.deploy.certificates import TlsFiles, ensure_certificates
from rrr.deploy.nats_cluster import NatsCluster
from rrr.deploy.nats_permissions import new_users
from rrr.deploy.nats_server import NatsServer
from rrr.shared import subjects
from rrr.shared.bus import Bus, NatsTlsError
from rrr.shared.config import ServiceConfig, client_tls
from tests.support.factories import make_signal, unique_id


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tmp_path: Path, certificates: TlsFiles) -> Iterator[NatsServer]:
    server = NatsServer(data_dir=tmp_path / "nats", users=new_users(), tls=certificates.server())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _monitor(url: str, key: str) -> list[dict[str, object]]:
    """One list of nats-server's monitoring endpoint (connections, routes), from a thread."""
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - the test's own server on loopback
        found: list[dict[str, object]] = json.load(answer)[key] or []
    return found


async def test_a_client_with_the_authority_and_a_certificate_uses_jetstream_over_verified_tls(
    tls_server: NatsServer, certificates: TlsFiles
) -> None:
    assert tls_server.url.startswith("tls://")
    name = unique_id("tls-client")
    tls = client_tls(str(certificates.ca), str(certificates.client_cert), str(certificates.client_key))
    bus = await Bus.connect(tls_server.url_for("admin"), service="test", name=name, timeout_s=10, tls=tls)
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s)
        acks = await bus.publish_persistent_many([bus.prepare(subjects.signal("EURUSD", 1), make_signal())])
        assert acks == 1
        connections = await asyncio.to_thread(_monitor, f"{tls_server.monitor_url}/connz", "connections")
        [mine] = [c for c in connections if c.get("name") == name]
        assert str(mine.get("tls_version", "")).startswith("1.")
    finally:
        await bus.close()


async def test_a_client_without_the_systems_authority_is_refused_at_once_naming_the_failed_verification(
    tls_server: NatsServer,
) -> None:
    # The machine's own trust store knows nothing of the system's authority: nobody turns verification off.
    with pytest.raises(NatsTlsError, match=r"certificate verify failed|unable to get local issuer"):
        await Bus.connect(
            tls_server.url_for("admin"), service="test", name="no-ca", timeout_s=10, tls=ssl.create_default_context()
        )


async def test_a_client_with_the_authority_but_no_certificate_of_its_own_is_refused(
    tls_server: NatsServer, certificates: TlsFiles
) -> None:
    with pytest.raises(NatsTlsError, match=r"(?i)certificate"):
        await Bus.connect(
            tls_server.url_for("admin"),
            service="test",
            name="no-cert",
            timeout_s=10,
            tls=client_tls(str(certificates.ca)),
        )


async def test_a_server_whose_certificate_names_another_host_is_refused_though_the_authority_signed_it(
    tmp_path: Path,
) -> None:
    elsewhere = ensure_certificates(tmp_path / "tls", names=("nats.elsewhere.example",))
    server = NatsServer(data_dir=tmp_path / "nats", users=new_users(), tls=elsewhere.server())
    server.start()
    try:
        tls = client_tls(str(elsewhere.ca), str(elsewhere.client_cert), str(elsewhere.client_key))
        with pytest.raises(NatsTlsError, match=r"(?i)mismatch|doesn't match|not valid for"):
            await Bus.connect(server.url_for("admin"), service="test", name="wrong-name", timeout_s=10, tls=tls)
    finally:
        server.stop()


async def test_a_cluster_with_tls_routes_over_verified_tls_and_replicates_on_every_node(
    tmp_path: Path, certificates: TlsFiles
) -> None:
    cluster = NatsCluster(data_dir=tmp_path / "cluster", size=3, users=new_users(), tls=certificates.server())
    cluster.start()
    try:
        tls = client_tls(str(certificates.ca), str(certificates.client_cert), str(certificates.client_key))
        bus = await Bus.connect(cluster.url_for("admin"), service="test", name="tls-cluster", timeout_s=10, tls=tls)
        try:
            await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, replicas=3)
            info = await bus.js.stream_info("RRR_SIG")
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2
            assert all(peer.current for peer in info.cluster.replicas or [])
        finally:
            await bus.close()
        routes = await asyncio.to_thread(_monitor, f"{cluster.nodes[0].monitor_url}/routez", "routes")
        assert len(routes) >= 2
        # The routes that carried the replication are TLS with the peers' certificates verified.
        conf = cluster.nodes[0].config_file.read_text()
        cluster_block = conf[conf.index("cluster {") :]
        assert "tls { cert_file" in cluster_block
        assert "verify: true" in cluster_block
    finally:
        cluster.stop()
