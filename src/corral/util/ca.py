"""The cluster CA: it signs the agents' certificates; TLS contexts that verify agents against it.

Every enrolled host gets a certificate whose SANs hold ``<id>.host.corral.invalid`` (DNS, see
``host_server_name``), the address of the host's URL (DNS or IP) and ``corral:host:<id>`` (URI).
The server reaches a host's agent with that DNS name as TLS server name (SNI): the agent presents
the certificate of that host, and OpenSSL checks both the chain (the cluster CA only) and the name,
so an agent holding the certificate of another host (or one from another CA) is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.api.errors import InvalidInput, StorageError

CA_DAYS = 3650
HOST_URI_PREFIX = "corral:host:"
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def host_server_name(host_id: str) -> str:
    """The TLS server name (SNI, and a DNS SAN of its certificate) of a host's agent:
    ``<host_id>.host.corral.invalid`` (a SHA-256 prefix when the id is not a DNS label)."""
    label = host_id if _LABEL.fullmatch(host_id) else hashlib.sha256(host_id.encode()).hexdigest()
    return f"{label[:63]}.host.corral.invalid"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (the parent is created 0700 if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def new_key_and_csr(common_name: str) -> tuple[str, str]:
    """A new EC P-256 private key (PKCS#8 PEM) and a CSR for it with ``CN=common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .sign(key, hashes.SHA256())
    )
    return _pem_key(key).decode(), csr.public_bytes(serialization.Encoding.PEM).decode()


def _address_san(address: str | None) -> list[x509.GeneralName]:
    if not address:
        return []
    try:
        return [x509.IPAddress(ipaddress.ip_address(address.strip("[]")))]
    except ValueError:
        return [x509.DNSName(address.lower())]


@dataclass(frozen=True)
class ClusterCA:
    """The CA key and certificate (``ca.key`` / ``ca.crt``, mode 0600, in one directory)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def load_or_create(cls, directory: Path) -> ClusterCA:
        """Load the CA from ``directory``, creating it (EC P-256, 10 years) at first use.
        Unreadable or mismatched files raise ``StorageError`` (never silently replaced)."""
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if not key_path.exists() and not cert_path.exists():
            ca = cls._create()
            write_secret(key_path, _pem_key(ca.key))
            write_secret(cert_path, ca.cert.public_bytes(serialization.Encoding.PEM))
            return ca
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise StorageError("cannot read the cluster CA", path=str(directory)) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or _spki(key.public_key()) != _spki(
            cert.public_key()
        ):
            raise StorageError(
                "the cluster CA key does not match its certificate", path=str(directory)
            )
        return cls(key=key, cert=cert)

    @classmethod
    def _create(cls) -> ClusterCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"Corral cluster CA {secrets.token_hex(4)}"
                ),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    @property
    def ca_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self, csr_pem: str, *, host_id: str, address: str | None = None, days: int = 825
    ) -> str:
        """Sign a host agent's CSR: a leaf certificate (serverAuth + clientAuth) for ``host_id``.

        Only the CSR's public key is used (EC, or RSA of 2048 bits or more); subject and SANs are
        the server's choice: ``CN=<host_id>``, ``host_server_name(host_id)``, ``address`` (the
        host name or IP of the agent's URL) and ``corral:host:<host_id>``. Valid for ``days``, never
        beyond the CA. A malformed or badly signed CSR raises ``InvalidInput``."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            valid = csr.is_signature_valid
            public_key = csr.public_key()
        except (ValueError, TypeError) as exc:
            raise InvalidInput("the agent sent a malformed certificate request") from exc
        if not valid:
            raise InvalidInput("the agent's certificate request is not signed by its key")
        if not (
            isinstance(public_key, ec.EllipticCurvePublicKey)
            or (isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048)
        ):
            raise InvalidInput("the agent's key must be EC or RSA of 2048 bits or more")
        now = dt.datetime.now(dt.UTC)
        sans = [
            x509.DNSName(host_server_name(host_id)),
            *_address_san(address),
            x509.UniformResourceIdentifier(HOST_URI_PREFIX + host_id),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_id[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def issued_host_id(cert_pem: str) -> str | None:
    """The host id of a certificate issued by a cluster CA (its ``corral:host:`` URI SAN), or None
    for any other certificate (e.g. an agent's self-signed bootstrap certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(HOST_URI_PREFIX):
            return uri[len(HOST_URI_PREFIX) :]
    return None


def check_issued(cert_pem: str, *, ca_pem: str, key_pem: str, host_id: str) -> None:
    """What an agent checks before it installs its certificate: signed by ``ca_pem`` (a CA
    certificate), currently valid, for ``host_id``, and for its own key. ``InvalidInput`` otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("malformed certificate") from exc
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature) as exc:
        raise InvalidInput("the certificate is not signed by the given CA") from exc
    if not is_ca:
        raise InvalidInput("the given CA certificate is not a CA")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidInput("the certificate is not valid now")
    if issued_host_id(cert_pem) != host_id:
        raise InvalidInput("the certificate is for another host", host_id=host_id)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise InvalidInput("the certificate is not for this agent's key")


def ca_context(ca_pem: str) -> ssl.SSLContext:
    """A client TLS context that trusts only ``ca_pem`` and checks the server name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


class _NamedContext(ssl.SSLContext):
    """A client context that always uses ``server_name`` as TLS server name (SNI and the name
    checked), whatever host name the connection was opened with."""

    server_name: str

    def wrap_bio(
        self,
        incoming: Any,
        outgoing: Any,
        server_side: bool = False,
        server_hostname: Any = None,
        session: Any = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


def host_context(ca_pem: str, host_id: str) -> ssl.SSLContext:
    """The server's client context for one host's agent: trusts only the cluster CA and requires
    the certificate issued for ``host_id`` (name ``host_server_name(host_id)``, sent as SNI)."""
    ctx = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.server_name = host_server_name(host_id)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx
