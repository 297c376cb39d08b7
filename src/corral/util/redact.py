"""Redaction of secrets from JSON-like data (audit summaries) and from log records.

Which keys are secret (``is_secret_key``): the name is split into words (``apiKey``, ``api-key``,
``API_KEY`` → ``api key``). It is secret when a word is or contains a secret word (``password``,
``passwd``, ``pwd``, ``passphrase``, ``secret``, ``token``, ``private``, ``credential``,
``authorization``, ``cookie``, ``otp``/``totp``/``hotp``, ``recovery``, ``signature``, ``apikey``…),
or when it has the word ``key``/``keys`` and no public-key word (``public``, ``pub``, ``ssh``,
``authorized``, ``host``, ``sort``): ``api_key``, ``master_key``, ``key`` are secret, ``public_key``,
``ssh_keys``, ``host_key`` are not. Either way, a word that only *describes* the secret, after the
secret word, makes it not secret (``key_id``, ``access_key_id``, ``token_ttl_s``,
``password_changed_at``, ``otp_enabled``…), but ``id_token`` stays secret. Values that are
``None`` or booleans are kept (``"otp": null`` tells nothing); anything else becomes ``"***"``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

MASK = "***"

# fmt: off
_SECRET_PARTS = (
    "password", "passwd", "passphrase", "secret", "token", "credential", "authorization", "cookie",
    "apikey", "privkey", "signature",
)
_SECRET_WORDS = frozenset({"pwd", "private", "otp", "totp", "hotp", "recovery", "psk"})
_KEY_WORDS = frozenset({"key", "keys"})
_PUBLIC_WORDS = frozenset({"public", "pub", "ssh", "authorized", "host", "sort"})
_DESCRIBING = frozenset({
    "id", "ids", "at", "ttl", "enabled", "disabled", "required", "set", "configured", "expires",
    "expiry", "expiration", "lifetime", "age", "count", "length", "len", "type", "kind", "name",
    "names", "fingerprint", "algorithm", "algo", "version", "policy", "file", "path", "prefix",
    "min", "max", "changed", "updated", "created", "rotated", "last", "valid", "verified",
    "method", "scheme",
})
# fmt: on
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _is_secret_word(word: str) -> bool:
    return word in _SECRET_WORDS or any(part in word for part in _SECRET_PARTS)


def is_secret_key(name: object) -> bool:
    """Whether a mapping key (or ``name=`` in text) names a secret (rules in the module doc)."""
    return isinstance(name, str) and _is_secret_name(name)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    words = [word.lower() for word in _WORD.findall(name)]
    marks = [i for i, word in enumerate(words) if _is_secret_word(word)]
    if not marks and not _PUBLIC_WORDS.intersection(words):
        marks = [i for i, word in enumerate(words) if word in _KEY_WORDS]
    if not marks:
        return False
    return not _DESCRIBING.intersection(words[marks[-1] + 1 :])


# fmt: off
_SUSPECT = (
    "pass", "pwd", "secret", "token", "credential", "authoriz", "cookie", "key", "otp",
    "recovery", "signature", "psk", "private", "bearer", "basic", "://",
)
# fmt: on
"""A cheap first look (a regex costs more): text without any of these is returned as it is."""
_SCHEME_TOKEN = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+|\b(Basic)\s+[A-Za-z0-9+/=]{8,}")
_ASSIGNMENT = re.compile(
    r"""(?:(?<![\w-])|(?<=%[0-9A-Fa-f]{2}))(?P<key>[A-Za-z_][\w-]*)(?P<sep>["']?\s*(?:[=:]|%3[DdAa])\s*)"""
    r"""(?=(?P<val>"[^"]*"|'[^']*'|[^\s"',;&)}\]]+))"""
)
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@", re.IGNORECASE)
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
)


def _mask_assignments(text: str) -> str:
    # Matches consume only "key=": the value of a harmless key may hold a secret one (a:key=x).
    out, done = [], 0
    for match in _ASSIGNMENT.finditer(text):
        if match.start() < done or not is_secret_key(match["key"]):
            continue
        value = match["val"]
        masked = f"{value[0]}{MASK}{value[0]}" if value[0] in "\"'" else MASK
        out += [text[done : match.end()], masked]
        done = match.end() + len(value)
    return "".join([*out, text[done:]])


def redact_text(text: str) -> str:
    """``text`` with secrets masked: ``Bearer x``, ``Basic x``, ``password=x``, ``"token": "x"``,
    ``Signature=x``, ``scheme://user:x@host`` and PEM private keys. ``=``/``:`` may be URL-encoded
    (``?q=token%3Dx``, as in a logged request URL)."""
    lowered = text.lower()
    if not any(word in lowered for word in _SUSPECT):
        return text
    text = _PEM.sub(MASK, text)
    text = _SCHEME_TOKEN.sub(lambda m: f"{m[1] or m[2]} {MASK}", text)
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _mask_assignments(text)


def redact(obj: Any) -> Any:
    """A copy of JSON-like ``obj`` with the values of secret keys masked, at any depth.

    Mappings become dicts, lists lists, tuples plain tuples; strings pass through ``redact_text``;
    other values are returned as they are. The input is never modified.
    """
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, int | float | None):  # the common scalars, before the slower ABC check
        return obj
    if isinstance(obj, Mapping):
        return {
            key: (
                MASK
                if is_secret_key(key) and value is not None and not isinstance(value, bool)
                else redact(value)
            )
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [redact(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact(item) for item in obj)
    return obj


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_DONE = "_corral_redacted"


def redact_record(record: logging.LogRecord) -> None:
    """Scrub one log record in place: message, arguments, exception text, ``extra`` fields.

    Arguments are redacted one by one so formatters that read ``record.args`` keep working; when a
    secret only shows once formatted (``"password=%s"``), the message is replaced by its redacted
    formatted text and the arguments are dropped. Extra fields are checked on each call (they are
    set after the record factory runs); the message once unless it was replaced since.
    """
    for name, value in list(record.__dict__.items()):
        if name not in _STANDARD_ATTRS and name != _DONE:
            record.__dict__[name] = MASK if is_secret_key(name) and value else redact(value)
    done = getattr(record, _DONE, None)
    if done is not None and done[0] is record.msg and done[1] is record.args:
        return  # already scrubbed (makeLogRecord replaces msg and args after the factory ran)
    msg = record.msg if isinstance(record.msg, str) else redact(record.msg)
    args = redact(record.args) if record.args else record.args
    try:
        formatted = str(msg) % args if args else str(msg)
    except (TypeError, ValueError, KeyError):
        record.msg, record.args = redact_text(f"{msg} (arguments dropped: bad format)"), ()
    else:
        clean = redact_text(formatted)
        if clean == formatted:
            record.msg, record.args = msg, args
        else:
            record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    setattr(record, _DONE, (record.msg, record.args))


class RedactingFilter(logging.Filter):
    """A filter that scrubs each record (``redact_record``) and lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FACTORY_MARK = "_corral_redacting_factory"


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]


def install_log_redaction() -> None:
    """Scrub every log record from now on, whichever handler writes it (idempotent).

    A record factory wrapper scrubs each record as it is created, so handlers added later (uvicorn's,
    a file handler, pytest's caplog) see clean messages, arguments and tracebacks. A
    ``RedactingFilter`` is also put on every handler that exists now (any logger's) to catch
    ``extra=`` fields, which are set after the factory runs, and records built by
    ``logging.makeLogRecord``: call this again after configuring logging (idempotent). Not covered:
    ``extra=`` fields on handlers added later, and formatters that re-render ``exc_info``
    themselves instead of using ``exc_text``.
    """
    previous = logging.getLogRecordFactory()
    if not getattr(previous, _FACTORY_MARK, False):

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redact_record(record)
            return record

        setattr(factory, _FACTORY_MARK, True)
        factory.previous = previous  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
    for handler in _all_handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def uninstall_log_redaction() -> None:
    """Undo ``install_log_redaction`` (tests)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, _FACTORY_MARK, False):
        previous: Callable[..., logging.LogRecord] = factory.previous  # type: ignore[attr-defined]
        logging.setLogRecordFactory(previous)
    for handler in _all_handlers():
        for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(f)
