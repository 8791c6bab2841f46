"""TLS for NATS: a certificate authority of the system's own, a server and a client certificate signed by it.

`rrr-stack up --tls` makes them once into `.run/tls/` (the directory 0700, every key 0600) and reads them back
on every later start; `just reset` deletes them. nats-server presents the server certificate to clients and to
the other nodes of a cluster, and asks each of them for a certificate signed by the same authority (`verify`);
every client checks the server's certificate against the authority and its name (127.0.0.1, localhost), and
presents the client certificate. Verification is never turned off anywhere: a client without the authority
cannot connect.

Keys are ECDSA P-256; the authority is valid for ten years, the others for two, renewed by `up` when less
than thirty days remain or when they no longer chain to the authority.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rrr.deploy.credentials import write_private
from rrr.deploy.nats_server import ServerTls

__all__ = ["DEFAULT_NAMES", "TlsFiles", "ensure_certificates"]

# The names a local server answers to: what clients dial (`127.0.0.1`) and what a person may type.
DEFAULT_NAMES = ("127.0.0.1", "localhost", "::1")
_CA_DAYS = 3650
_LEAF_DAYS = 730
_RENEW_DAYS = 30
_ORGANISATION = "RRRalgorithms"
# The authority signs certificates (and revocation lists) and nothing else.
_SIGNS_CERTIFICATES = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the authority, the server's and the client's certificates and keys are."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def server(self) -> ServerTls:
        """What nats-server presents and verifies with."""
        return ServerTls(cert_file=self.server_cert, key_file=self.server_key, ca_file=self.ca)

    def client_env(self) -> dict[str, str]:
        """The settings a service or tool reads to connect with TLS (``RRR_NATS_TLS_*``)."""
        return {
            "RRR_NATS_TLS_CA": str(self.ca),
            "RRR_NATS_TLS_CERT": str(self.client_cert),
            "RRR_NATS_TLS_KEY": str(self.client_key),
        }

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context: the server verified against the authority and by name, the client
        certificate presented."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def ensure_certificates(directory: Path, names: Sequence[str] = DEFAULT_NAMES) -> TlsFiles:
    """The authority and the certificates in ``directory``: those there if still good, else new ones.

    A new authority (none there yet) replaces the server's and the client's certificates too; a certificate
    that expires within thirty days, or that the authority did not sign, is made again.
    """
    files = TlsFiles(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    if not (files.ca.exists() and files.ca_key.exists()) or _expiring(files.ca, now):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _authority(ca_key, now)
        write_private(files.ca_key, _key_pem(ca_key))
        files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        for stale in (files.server_cert, files.client_cert):
            stale.unlink(missing_ok=True)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    loaded = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{files.ca_key}: expected an EC private key")
    ca_key = loaded
    for cert, key, usages, subject_names in (
        (
            files.server_cert,
            files.server_key,
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            names,
        ),
        (files.client_cert, files.client_key, (ExtendedKeyUsageOID.CLIENT_AUTH,), ()),
    ):
        if cert.exists() and key.exists() and not _expiring(cert, now) and _signed_by(cert, ca):
            continue
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        common_name = "rrr-nats" if subject_names else "rrr-client"
        leaf = _leaf(ca, ca_key, leaf_key, common_name, subject_names, usages, now)
        write_private(key, _key_pem(leaf_key))
        cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _authority(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = _name("RRRalgorithms local CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_SIGNS_CERTIFICATES, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
    now: datetime.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _expiring(path: Path, now: datetime.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - now < datetime.timedelta(days=_RENEW_DAYS)


def _signed_by(path: Path, ca: x509.Certificate) -> bool:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
