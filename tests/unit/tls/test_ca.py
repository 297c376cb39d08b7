"""The cluster CA: files, the certificates it issues (chain, SANs, usages, expiry), CSR checks."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.api.errors import InvalidInput, StorageError
from corral.util.ca import (
    ClusterCA,
    check_issued,
    host_server_name,
    issued_host_id,
    new_key_and_csr,
)

HOST = "0123456789abcdef0123456789abcdef"


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


@pytest.fixture
def ca(tmp_path: Path) -> ClusterCA:
    return ClusterCA.load_or_create(tmp_path / "ca")


def test_created_once_private_and_a_real_ca(tmp_path: Path, ca: ClusterCA) -> None:
    for name in ("ca.key", "ca.crt"):
        assert stat.S_IMODE((tmp_path / "ca" / name).stat().st_mode) == 0o600
    again = ClusterCA.load_or_create(tmp_path / "ca")
    assert again.ca_pem == ca.ca_pem
    cert = load(ca.ca_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    cert.verify_directly_issued_by(cert)  # self-signed


def test_two_installations_have_different_cas(tmp_path: Path, ca: ClusterCA) -> None:
    other = ClusterCA.load_or_create(tmp_path / "other")
    assert load(other.ca_pem).subject != load(ca.ca_pem).subject
    assert other.ca_pem != ca.ca_pem


def test_mismatched_or_corrupt_files_are_refused_not_replaced(tmp_path: Path) -> None:
    ClusterCA.load_or_create(tmp_path / "a")
    ClusterCA.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(StorageError, match="does not match"):
        ClusterCA.load_or_create(tmp_path / "a")
    (tmp_path / "b" / "ca.crt").write_text("garbage")
    with pytest.raises(StorageError, match="cannot read"):
        ClusterCA.load_or_create(tmp_path / "b")


def test_issued_certificate_chain_sans_usages(ca: ClusterCA) -> None:
    key_pem, csr_pem = new_key_and_csr("ignored-name")
    pem = ca.issue(csr_pem, host_id=HOST, address="192.0.2.7")
    cert = load(pem)
    cert.verify_directly_issued_by(load(ca.ca_pem))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST
    names = sans(cert)
    assert names.get_values_for_type(x509.DNSName) == [host_server_name(HOST)]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [f"corral:host:{HOST}"]
    assert issued_host_id(pem) == HOST
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days in (824, 825)
    check_issued(pem, ca_pem=ca.ca_pem, key_pem=key_pem, host_id=HOST)


def test_dns_address_and_expiry_bounded_by_the_ca(ca: ClusterCA) -> None:
    _, csr_pem = new_key_and_csr("h")
    cert = load(ca.issue(csr_pem, host_id=HOST, address="Node7.Example.org", days=7))
    assert sans(cert).get_values_for_type(x509.DNSName) == [
        host_server_name(HOST),
        "node7.example.org",
    ]
    assert (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days in (6, 7)
    forever = load(ca.issue(csr_pem, host_id=HOST, days=100_000))
    assert forever.not_valid_after_utc == load(ca.ca_pem).not_valid_after_utc


def test_server_name_is_a_dns_name_for_any_id() -> None:
    assert host_server_name(HOST) == f"{HOST}.host.corral.invalid"
    odd = host_server_name("Host_1/evil")
    assert odd.endswith(".host.corral.invalid") and "/" not in odd and odd.islower()
    assert odd != host_server_name("host_1/evil")


def test_bad_csrs_are_refused(ca: ClusterCA) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        ca.issue("not a csr", host_id=HOST)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(small, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with pytest.raises(InvalidInput, match="2048"):
        ca.issue(weak, host_id=HOST)


def test_agent_side_checks(tmp_path: Path, ca: ClusterCA) -> None:
    key_pem, csr_pem = new_key_and_csr("h")
    pem = ca.issue(csr_pem, host_id=HOST)
    other_ca = ClusterCA.load_or_create(tmp_path / "other")
    with pytest.raises(InvalidInput, match="not signed by the given CA"):
        check_issued(pem, ca_pem=other_ca.ca_pem, key_pem=key_pem, host_id=HOST)
    with pytest.raises(InvalidInput, match="another host"):
        check_issued(pem, ca_pem=ca.ca_pem, key_pem=key_pem, host_id="someone-else")
    other_key, _ = new_key_and_csr("h")
    with pytest.raises(InvalidInput, match="key"):
        check_issued(pem, ca_pem=ca.ca_pem, key_pem=other_key, host_id=HOST)
    leaf_as_ca = ca.issue(new_key_and_csr("x")[1], host_id="x")
    with pytest.raises(InvalidInput):
        check_issued(pem, ca_pem=leaf_as_ca, key_pem=key_pem, host_id=HOST)


def test_expired_certificate_is_refused_by_the_agent(ca: ClusterCA) -> None:
    key_pem, csr_pem = new_key_and_csr("h")
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(1)
        .not_valid_before(past)
        .not_valid_after(past + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"corral:host:{HOST}")]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    with pytest.raises(InvalidInput, match="not valid now"):
        check_issued(expired, ca_pem=ca.ca_pem, key_pem=key_pem, host_id=HOST)


def test_self_signed_certificates_have_no_host_id(tmp_path: Path) -> None:
    from corral.util.tls import ensure_self_signed

    ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "agent")
    assert issued_host_id((tmp_path / "c.pem").read_text()) is None
    assert issued_host_id("garbage") is None
