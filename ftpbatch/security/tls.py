"""TLS for explicit FTPS: the server context, and a self-signed pair for trials."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from OpenSSL import SSL

from ..errors import ConfigError

# Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only);
# TLS 1.3 suites are OpenSSL's defaults and need no list.
_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)


def server_context(cert_file: Path, key_file: Path) -> SSL.Context:
    """A server context for the control and data channels: TLS 1.2 or newer only.

    Raises :class:`ConfigError` with one clear line when the files are
    missing, unreadable or do not belong together.
    """
    for label, path in (("certificate", cert_file), ("key", key_file)):
        if not path.is_file():
            raise ConfigError(f"TLS {label} file {path} does not exist")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(_TLS12_CIPHERS.encode())
    # A session id context lets data connections resume the control
    # connection's TLS session, which some clients (FileZilla) insist on.
    context.set_session_id(b"ftpbatch")
    try:
        context.use_certificate_chain_file(str(cert_file))
        context.use_privatekey_file(str(key_file))
        context.check_privatekey()
    except SSL.Error as exc:
        raise ConfigError(f"TLS certificate {cert_file} and key {key_file} cannot be used together: {exc}") from None
    return context


def make_self_signed(cert_file: Path, key_file: Path, days: int = 365, hostname: str | None = None) -> None:
    """Write a self-signed certificate and its key (mode 0600) for trials.

    The certificate names the host, ``localhost`` and the loopback addresses;
    clients must be told to accept it (``curl -k``, ``set ssl:verify-certificate no``).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64]), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ftpbatch (self-signed)")])
    now = dt.datetime.now(dt.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((host, "localhost"))]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
