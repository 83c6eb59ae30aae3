"""Throwaway TLS for the ingress notebooks: a CA, a server certificate, its Secret, and a check.

Nothing here is ever written to the repository. The CA's private key lives only in memory
while it signs; the server's key goes into the Secret (as `kubectl create secret tls` puts
it there) and nowhere else. Only the CA certificate, which clients trust, is written to disk.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import secrets
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grpclab.paths import state_root

# Long enough for a workshop day and a re-run next week; a real issuer rotates far sooner.
VALID_DAYS = 30


class TlsCheckError(RuntimeError):
    """A TLS handshake failed; the message says which check failed and against what."""


@dataclass(frozen=True)
class TlsBundle:
    """A server certificate for `hosts`, its key, and the CA that signed it."""

    hosts: tuple[str, ...]
    ca_file: Path  # PEM of the CA certificate: what a client passes as tls_ca_file
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def secret(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The `kubernetes.io/tls` Secret `kubectl create secret tls NAME` would create."""
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "grpclab"},
        }
        if namespace is not None:
            metadata["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(self.cert_pem).decode(),
                "tls.key": base64.b64encode(self.key_pem).decode(),
            },
        }


def issue_certificate(
    hosts: Sequence[str], directory: Path | None = None, ca_name: str = "grpclab demo CA"
) -> TlsBundle:
    """A fresh CA and a server certificate for `hosts` (DNS names or IPs), signed by it."""
    if not hosts:
        raise ValueError("issue_certificate: name at least one host")
    start, end = _validity()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key, start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem, key_pem = _server_certificate(hosts, ca_cert, ca_key, start, end)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    folder = directory or state_root() / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    # A name of its own per CA, so two runs (a notebook and a test) never overwrite each other.
    ca_file = folder / f"{_file_stem(hosts[0])}-ca-{secrets.token_hex(4)}.pem"
    ca_file.write_bytes(ca_pem)
    return TlsBundle(tuple(hosts), ca_file, ca_pem, cert_pem, key_pem)


def self_signed(host: str, organization: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM), as controllers serve when no Secret fits."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, host),
        ]
    )
    cert = (
        _builder(name, name, key, *_validity())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _server_certificate(hosts, ca_cert, ca_key, start, end) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        _builder(subject, ca_cert.subject, key, start, end)
        # Clients check the name against subjectAltName only; the CN is for people.
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    """From a little before now (a laptop whose clock runs behind must not see "not yet
    valid") to VALID_DAYS ahead."""
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    """A certificate for `key`, named and dated, that the caller extends and signs."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _file_stem(host: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in host)


def certificate_from_secret(secret: dict[str, Any]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a `kubernetes.io/tls` Secret."""
    data = secret.get("data") or {}
    return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])


@dataclass(frozen=True)
class TlsPeer:
    """What a TLS handshake showed: the certificate's names, its issuer, the protocols."""

    # The connection: the name asked for and checked, and what was negotiated.
    server_name: str
    tls_version: str
    alpn: str | None
    # The certificate the server showed.
    subject: str
    issuer: str
    dns_names: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{self.tls_version}, ALPN {self.alpn or 'none'}; certificate for "
            f"{', '.join(self.dns_names) or self.subject} issued by {self.issuer}; "
            f"name {self.server_name} checked"
        )


def check_tls(address: str, ca_file: str | Path, server_name: str, timeout: float = 5.0) -> TlsPeer:
    """Handshake with `address` as a gRPC client would (SNI, ALPN h2, chain and name checked)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
                version, alpn = tls.version() or "?", tls.selected_alpn_protocol()
    except ssl.SSLCertVerificationError as error:
        raise TlsCheckError(
            f"TLS to {address} as {server_name!r}: the server's certificate was refused: "
            f"{error.verify_message} (trusting only {ca_file})"
        ) from None
    except (ssl.SSLError, OSError) as error:
        raise TlsCheckError(
            f"TLS to {address} as {server_name!r}: handshake failed: {error}"
        ) from None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return TlsPeer(
        server_name=server_name,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns_names,
        tls_version=version,
        alpn=alpn,
    )
