"""Redaction of secrets from JSON-like data and from log records (caplog and a real log file)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.util.redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    is_secret_key,
    redact,
    redact_text,
    uninstall_log_redaction,
)

SECRETS = ["hunter2", "s3cr3t-tok3n", "AKIAPASS99", "0123456789abcdef" * 4, "pr1v4te"]


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "Password",
        "admin_password",
        "bmcPassword",
        "passwd",
        "db-pwd",
        "secret",
        "client_secret",
        "token",
        "id_token",
        "X-Auth-Token",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "key",
        "master_key",
        "ceph_key",
        "private_key",
        "ssh_private_key",
        "credentials",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "otp",
        "totp_secret",
        "recovery_codes",
        "signature",
        "password_hash",
    ],
)
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "key_id",
        "access_key_id",
        "accessKeyId",
        "public_key",
        "ssh_keys",
        "ssh_public_key",
        "host_key",
        "sort_key",
        "token_ttl_s",
        "token_expires_at",
        "password_changed_at",
        "otp_enabled",
        "name",
        "username",
        "monkey",
        "keyboard_layout",
        3,
    ],
)
def test_not_secret_keys(name: object) -> None:
    assert not is_secret_key(name)


def test_redact_nested_structures() -> None:
    data = {
        "name": "host1",
        "bmc": {"address": "10.0.0.9", "username": "admin", "password": "hunter2"},
        "storage": [{"type": "ceph", "key": "AKIAPASS99", "monitors": ["m1", "m2"]}],
        "headers": {"Authorization": "Bearer s3cr3t-tok3n", "Accept": "*/*"},
        "access_key_id": "CKABCDEFGHIJKLMNOPQR",
        "credentials": {"user": "x", "secret": "pr1v4te"},
        "otp": None,
        "totp_enabled": True,
        "items": ("a", {"token": "s3cr3t-tok3n"}),
        "note": "connect to qemu+ssh://root:hunter2@h1/system",
    }
    original = copy.deepcopy(data)
    clean = redact(data)
    assert data == original  # the input is not modified
    assert clean["bmc"] == {"address": "10.0.0.9", "username": "admin", "password": MASK}
    assert clean["storage"][0] == {"type": "ceph", "key": MASK, "monitors": ["m1", "m2"]}
    assert clean["headers"] == {"Authorization": MASK, "Accept": "*/*"}
    assert clean["access_key_id"] == "CKABCDEFGHIJKLMNOPQR"
    assert clean["credentials"] == MASK
    assert clean["otp"] is None and clean["totp_enabled"] is True
    assert clean["items"] == ("a", {"token": MASK})
    assert clean["note"] == f"connect to qemu+ssh://root:{MASK}@h1/system"
    assert not any(secret in repr(clean) for secret in SECRETS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer s3cr3t-tok3n", f"Authorization: {MASK} {MASK}"),
        ("got Bearer s3cr3t.tok3n, then", f"got Bearer {MASK}, then"),
        ("Basic YWRtaW46aHVudGVyMg==", f"Basic {MASK}"),
        (
            f"CORRAL-HMAC-SHA256 Credential=CK1, Signature={SECRETS[3]}",
            f"CORRAL-HMAC-SHA256 Credential={MASK}, Signature={MASK}",
        ),
        ("login user=bob password=hunter2 ok", f"login user=bob password={MASK} ok"),
        ("{'password': 'hunter2', 'n': 1}", f"{{'password': '{MASK}', 'n': 1}}"),
        ('{"api_key": "AKIA PASS99"}', f'{{"api_key": "{MASK}"}}'),
        ("GET /v1/x?token=s3cr3t-tok3n&limit=5", f"GET /v1/x?token={MASK}&limit=5"),
        ("rbd:pool/img:key=AKIAPASS99", f"rbd:pool/img:key={MASK}"),
        ("access_key_id=CKABC other=1", "access_key_id=CKABC other=1"),
        ("https://u:hunter2@h/p", f"https://u:{MASK}@h/p"),
        (
            "k=-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- done",
            f"k={MASK} done",
        ),
        ("nothing to see: a=b, c", "nothing to see: a=b, c"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.fixture
def redaction() -> Iterator[None]:
    install_log_redaction()
    install_log_redaction()  # idempotent
    try:
        yield
    finally:
        uninstall_log_redaction()


def log_secrets(logger: logging.Logger) -> None:
    logger.warning("login %s", {"username": "bob", "password": "hunter2"})
    logger.warning("Authorization: Bearer %s", "s3cr3t-tok3n")
    logger.warning("password=%s", "hunter2")  # the secret only shows once formatted
    logger.warning("%(user)s uses %(api_key)s", {"user": "bob", "api_key": "AKIAPASS99"})
    logger.warning({"token": "s3cr3t-tok3n"})
    logger.warning("extra", extra={"client_secret": "pr1v4te", "ctx": {"password": "hunter2"}})
    try:
        raise RuntimeError(f"cannot connect with password={SECRETS[0]}")
    except RuntimeError:
        logger.exception("failed")
    logger.warning("signed with Signature=%s", SECRETS[3], stack_info=True)


def test_log_records_are_scrubbed_for_caplog(
    redaction: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        log_secrets(logging.getLogger("corral.test.redact"))
    assert "login {'username': 'bob', 'password': '***'}" in caplog.messages
    assert "bob uses ***" in caplog.messages
    assert "password=***" in caplog.messages
    assert "cannot connect with password=***" in caplog.text
    assert not any(secret in caplog.text for secret in SECRETS)


def test_log_file_written_by_a_later_handler_is_clean(redaction: None, tmp_path: Path) -> None:
    path = tmp_path / "corral.log"
    handler = logging.FileHandler(path, mode="w")  # added after install: no filter on it
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("corral.test.file")
    logger.addHandler(handler)
    try:
        log_secrets(logger)
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "Traceback" in text and "Stack (most recent call last)" in text
    assert "Authorization: *** ***" in text
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, text


def test_install_covers_existing_handlers_of_any_logger(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(message)s %(client_secret)s"))
    logger = logging.getLogger("corral.test.access")  # like uvicorn.access: its own handler
    logger.propagate = False
    logger.addHandler(handler)
    install_log_redaction()
    try:
        logger.warning("Bearer %s", "s3cr3t-tok3n", extra={"client_secret": "pr1v4te"})
    finally:
        uninstall_log_redaction()
        logger.removeHandler(handler)
        handler.close()
    assert path.read_text() == f"Bearer {MASK} {MASK}\n"
    assert not handler.filters


def test_filter_on_a_handler_covers_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "corral.log"
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(message)s %(client_secret)s %(ctx)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("corral.test.filter")
    logger.addHandler(handler)
    try:
        log_secrets(logger)
        logger.warning("extra", extra={"client_secret": "pr1v4te", "ctx": {"password": "hunter2"}})
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert f"extra {MASK} {{'password': '{MASK}'}}" in text
    assert not any(secret in text for secret in SECRETS), text


def test_without_redaction_the_secrets_would_leak(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        log_secrets(logging.getLogger("corral.test.raw"))
    assert all(secret in caplog.text for secret in SECRETS[:2])


def test_records_rebuilt_by_make_log_record(redaction: None) -> None:
    record = logging.makeLogRecord({"msg": "token=%s", "args": ("s3cr3t-tok3n",)})
    RedactingFilter().filter(record)  # what a root handler's filter does
    assert record.getMessage() == f"token={MASK}"


def test_unformattable_message(redaction: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("corral.test.bad").warning("bad format %d with %s", "hunter2", "x")
    assert caplog.messages == ["bad format %d with %s (arguments dropped: bad format)"]


def test_args_stay_usable_by_formatters(redaction: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", "/x?token=s3cr3t-tok3n", "1.1", 200
        )
    (record,) = caplog.records
    assert record.args == ("1.2.3.4", "GET", f"/x?token={MASK}", "1.1", 200)
    assert record.getMessage() == f'1.2.3.4 - "GET /x?token={MASK} HTTP/1.1" 200'
