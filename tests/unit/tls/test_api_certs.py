"""Operator-supplied API certificates: validation, PKCS#12 extraction, pinning a leaf, settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corral.api.errors import InvalidInput
from corral.server.settings import ServerSettings
from corral.util.tls import check_cert_and_key, ensure_self_signed, leaf_pem, pkcs12_to_pem
from tests.unit.tls.support import operator_chain


def test_a_good_chain_and_key_pass(tmp_path: Path) -> None:
    chain, key, _ = operator_chain(tmp_path)
    assert check_cert_and_key(chain, key) == chain.read_text()
    leaf = leaf_pem(chain.read_text())
    assert chain.read_text().startswith(leaf) and len(leaf) < len(chain.read_text())


def test_clear_errors_for_bad_files(tmp_path: Path) -> None:
    chain, key, _ = operator_chain(tmp_path / "a")
    _, other_key, _ = operator_chain(tmp_path / "b")
    with pytest.raises(InvalidInput, match="cannot read") as err:
        check_cert_and_key(tmp_path / "missing.pem", key)
    assert err.value.context["path"] == str(tmp_path / "missing.pem")
    with pytest.raises(InvalidInput, match="does not match"):
        check_cert_and_key(chain, other_key)
    with pytest.raises(InvalidInput, match="not a PEM certificate"):
        check_cert_and_key(key, key)
    with pytest.raises(InvalidInput, match="not a PEM private key"):
        check_cert_and_key(chain, chain)
    expired, expired_key, _ = operator_chain(tmp_path / "c", days=-1)
    with pytest.raises(InvalidInput, match="not valid now"):
        check_cert_and_key(expired, expired_key)


def test_pkcs12_is_extracted_with_its_chain(tmp_path: Path) -> None:
    chain, _, p12 = operator_chain(tmp_path, password=b"s3cret")
    cert_out, key_out = tmp_path / "tls" / "p.crt", tmp_path / "tls" / "p.key"
    pkcs12_to_pem(p12, "s3cret", cert_out=cert_out, key_out=key_out)
    assert cert_out.read_text() == chain.read_text()
    assert stat.S_IMODE(key_out.stat().st_mode) == 0o600
    check_cert_and_key(cert_out, key_out)
    with pytest.raises(InvalidInput, match="wrong password"):
        pkcs12_to_pem(p12, "nope", cert_out=cert_out, key_out=key_out)
    with pytest.raises(InvalidInput, match="cannot read"):
        pkcs12_to_pem(tmp_path / "none.p12", None, cert_out=cert_out, key_out=key_out)


def test_settings_pick_the_files_and_refuse_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, key, p12 = operator_chain(tmp_path)
    s = ServerSettings(data_dir=tmp_path / "d", cert_file=chain, key_file=key)
    assert (s.cert_path, s.key_path) == (chain, key)
    monkeypatch.setenv("CORRAL_PKCS12_PASSWORD", "pw")
    s = ServerSettings(data_dir=tmp_path / "d", pkcs12_file=p12)
    assert s.pkcs12_password == "pw" and s.cert_path.parent == tmp_path / "d" / "tls"
    assert ServerSettings(data_dir=tmp_path / "d").cert_path.name == "server.crt"
    with pytest.raises(InvalidInput, match="both"):
        ServerSettings(data_dir=tmp_path, cert_file=chain)
    with pytest.raises(InvalidInput, match="not both"):
        ServerSettings(data_dir=tmp_path, cert_file=chain, key_file=key, pkcs12_file=p12)
    with pytest.raises(InvalidInput, match="plain HTTP"):
        ServerSettings(data_dir=tmp_path, tls=False, pkcs12_file=p12)


def test_self_signed_default_passes_the_same_checks(tmp_path: Path) -> None:
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    ensure_self_signed(cert, key, "corral-server")
    check_cert_and_key(cert, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
