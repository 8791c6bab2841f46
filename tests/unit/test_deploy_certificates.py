"""The system's certificate authority and NATS certificates (`rrr.deploy.certificates`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from rrr.deploy.certificates import ensure_certificates


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_server_certificate_names_loopback_and_both_certificates_chain_to_the_authority(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls")
    ca, server, client = _cert(files.ca), _cert(files.server_cert), _cert(files.client_cert)
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    # The server's serves clients and is a client of the other nodes' routes; the client's is a client only.
    server_usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(server_usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls")
    assert files.directory.stat().st_mode & 0o777 == 0o700
    for key in (files.ca_key, files.server_key, files.client_key):
        assert key.stat().st_mode & 0o777 == 0o600, key


def test_certificates_are_kept_across_starts_and_remade_when_the_authority_is_new(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls")
    first = files.server_cert.read_bytes(), files.client_cert.read_bytes()
    assert (ensure_certificates(tmp_path / "tls").server_cert.read_bytes(), files.client_cert.read_bytes()) == first
    files.ca.unlink()
    again = ensure_certificates(tmp_path / "tls")
    assert again.server_cert.read_bytes() != first[0]
    _cert(again.server_cert).verify_directly_issued_by(_cert(again.ca))
