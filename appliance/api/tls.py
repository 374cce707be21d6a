"""The appliance's private CA and its server certificate, made with ``cryptography.x509``.

``enclave init`` calls :func:`create_tls` once: a CA (ECDSA P-256, ten years, path length 0) and a
server certificate it signs (ECDSA P-256, 825 days, serverAuth) for ``localhost``, the loopback
addresses, this host's name and any names the admin adds. Private keys are written with mode 0600.
Clients pin the CA by its SHA-256 fingerprint, which :func:`ca_fingerprint` computes and ``init``
prints; nothing here contacts anything outside the machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import Settings
from shared.errors import ConfigError, InputError

__all__ = ["TlsFiles", "ca_fingerprint", "create_tls", "init_tls", "tls_files"]

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))


def tls_files(tls_dir: Path) -> TlsFiles:
    return TlsFiles(tls_dir / "ca.pem", tls_dir / "ca.key", tls_dir / "server.pem", tls_dir / "server.key")


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            try:
                names.append(x509.DNSName(host.encode("idna").decode("ascii")))
            except UnicodeError:
                raise InputError(f"not a valid host name for the certificate: {host!r}") from None
    return names


def default_hosts() -> list[str]:
    return ["localhost", "127.0.0.1", "::1", socket.gethostname()]


def create_tls(
    tls_dir: Path, *, now: dt.datetime, hosts: Iterable[str] = (), organization: str = "Enclave appliance"
) -> TlsFiles:
    """Create the CA and the server certificate under ``tls_dir``; refuses to overwrite existing ones."""
    files = tls_files(tls_dir)
    if files.ca_cert.exists() or files.server_cert.exists():
        raise ConfigError(f"{tls_dir} already holds TLS certificates; remove them to make new ones")
    if now.tzinfo is None:
        raise InputError("create_tls needs an aware datetime")
    tls_dir.mkdir(parents=True, exist_ok=True)
    start = now - dt.timedelta(minutes=5)  # tolerate small clock differences between machines

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} private CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    all_hosts = [*default_hosts(), *hosts]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_entries(all_hosts)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write_private(files.ca_key, _key_pem(ca_key))
    _write_private(files.server_key, _key_pem(server_key))
    _write_public(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    # The CA certificate last: its presence marks the set as complete.
    _write_public(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def ca_fingerprint(ca_cert: Path) -> str:
    """SHA-256 of the CA certificate's DER encoding, as colon-separated upper-case hex."""
    try:
        cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CA certificate {ca_cert}: {exc}") from None
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def init_tls(settings: Settings) -> None:
    """``enclave init`` step: the CA and server certificate in ``<data>/tls``; prints the CA's pin."""
    hosts = [] if settings.host in ("0.0.0.0", "::") else [settings.host]
    files = create_tls(settings.tls_dir, now=dt.datetime.now(dt.UTC), hosts=hosts)
    print(f"TLS CA certificate SHA-256 fingerprint (pin it in clients): {ca_fingerprint(files.ca_cert)}")
