"""TLS material: self-signed certificates, operator-supplied ones (PEM or PKCS#12), pinned client
contexts, and a server context that picks its certificate by SNI name (``SniContext``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from corral.api.errors import InvalidInput


def ensure_self_signed(cert_path: Path, key_path: Path, common_name: str) -> None:
    """Create a self-signed certificate + key pair unless both files exist already.

    The certificate names ``localhost``, ``127.0.0.1``, ``::1`` and this machine's host name, is valid
    for 10 years and is its own CA, so a client can trust exactly it (``pinned_context``).
    """
    if cert_path.exists() and key_path.exists():
        return
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_bytes(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def fingerprint(pem: str) -> str:
    """SHA-256 fingerprint of a PEM certificate, as colon-separated hex."""
    der = ssl.PEM_cert_to_DER_cert(pem)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pinned_context(pem: str) -> ssl.SSLContext:
    """A client TLS context that trusts exactly this certificate, whatever host name is used.

    The certificate needs not be self-signed (``VERIFY_X509_PARTIAL_CHAIN``): pin the leaf of an
    operator-supplied chain, never its CAs (with no name check, that would trust all they issued)."""
    ctx = ssl.create_default_context(cadata=pem)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def leaf_pem(pem: str) -> str:
    """The first certificate of a PEM bundle (the leaf of a certificate chain file)."""
    certs = x509.load_pem_x509_certificates(pem.encode())
    return certs[0].public_bytes(serialization.Encoding.PEM).decode()


def fetch_server_cert(url: str, timeout: float = 5.0) -> str:
    """The PEM certificate an ``https://host:port`` endpoint presents (trust on first use)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 443
    return ssl.get_server_certificate((host, port), timeout=timeout)


def check_cert_and_key(cert_path: Path, key_path: Path) -> str:
    """Validate a PEM certificate chain and its unencrypted private key, as the API listener will
    load them; returns the chain. Unreadable files, a malformed or expired certificate and a key
    that does not match raise ``InvalidInput`` with the reason."""
    try:
        chain = cert_path.read_bytes()
        key_bytes = key_path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the TLS certificate or key: {exc.strerror}", path=exc.filename
        ) from exc
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise InvalidInput("not a PEM certificate", path=str(cert_path)) from exc
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError as exc:
        raise InvalidInput(
            "the TLS key is encrypted: give it unencrypted", path=str(key_path)
        ) from exc
    except ValueError as exc:
        raise InvalidInput("not a PEM private key", path=str(key_path)) from exc
    if _spki(certs[0].public_key()) != _spki(key.public_key()):
        raise InvalidInput(
            "the TLS key does not match the certificate", cert=str(cert_path), key=str(key_path)
        )
    now = dt.datetime.now(dt.UTC)
    if not certs[0].not_valid_before_utc <= now <= certs[0].not_valid_after_utc:
        raise InvalidInput(
            "the TLS certificate is not valid now",
            not_before=certs[0].not_valid_before_utc.isoformat(),
            not_after=certs[0].not_valid_after_utc.isoformat(),
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise InvalidInput(f"OpenSSL refuses the certificate: {exc.reason}") from exc
    return chain.decode()


def pkcs12_to_pem(p12_path: Path, password: str | None, *, cert_out: Path, key_out: Path) -> None:
    """Extract a PKCS#12 file's certificate (with its chain) to ``cert_out`` and its key to
    ``key_out`` (mode 0600), for the listener. A wrong password, no key or no certificate raise
    ``InvalidInput``."""
    try:
        data = p12_path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the PKCS#12 file: {exc.strerror}", path=str(p12_path)
        ) from exc
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None
        )
    except ValueError as exc:
        raise InvalidInput(
            "cannot open the PKCS#12 file: wrong password (CORRAL_PKCS12_PASSWORD) or not PKCS#12",
            path=str(p12_path),
        ) from exc
    if key is None or cert is None:
        raise InvalidInput("the PKCS#12 file needs a certificate and its key", path=str(p12_path))
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *extra))
    _write_private(key_out, _key_bytes(key))
    cert_out.write_bytes(chain)


class SniContext:
    """A server TLS context presenting a default certificate, or the one registered (``add``) for
    the server name a client asks for (SNI). Registration changes apply to new handshakes."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.context = _server_context(cert_path, key_path)
        self.context.sni_callback = self._select
        self._by_name: dict[str, ssl.SSLContext] = {}

    def add(self, name: str, cert_path: Path, key_path: Path) -> None:
        """Present ``cert_path`` to clients asking for ``name`` (replaces any previous one)."""
        self._by_name[name.lower()] = _server_context(cert_path, key_path)

    def remove(self, name: str) -> None:
        self._by_name.pop(name.lower(), None)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def _select(self, conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = self._by_name.get(name.lower()) if name else None
        if chosen is not None:
            conn.context = chosen


def _server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _key_bytes(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
