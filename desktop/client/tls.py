"""The pinned CA: its fingerprint (as ``enclave init`` prints it) and the TLS context built on it.

The client trusts exactly one certificate authority per appliance — the one the user confirmed by
fingerprint on first connection — and never the system store: an appliance CA is private, and a
public CA has no business vouching for it.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.errors import InputError

__all__ = ["ca_fingerprint", "load_ca", "ssl_context"]


def load_ca(pem: bytes) -> x509.Certificate:
    """The CA certificate in ``pem``; InputError when it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise InputError("not a PEM certificate: expected the appliance's ca.pem") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InputError("this certificate is not a certificate authority: expected the appliance's ca.pem")
    return cert


def ca_fingerprint(pem: bytes) -> str:
    """SHA-256 of the CA certificate's DER bytes, as colon-separated upper-case hex."""
    der = load_ca(pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ssl_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts only ``ca_file`` and checks the host name."""
    # Built by hand rather than with create_default_context, which would also load the system store.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx
