"""AccessKey request signing (CORRAL-HMAC-SHA256): canonical form, signing, verification, replays.

A program holding an AccessKey (``key_id`` + ``secret``) signs every request with four headers::

    Authorization: CORRAL-HMAC-SHA256 Credential=<key_id>, Signature=<64 hex>
    X-Corral-Date: 20261122T081500Z              (UTC, ISO-8601 basic)
    X-Corral-Content-SHA256: <64 hex>            (sha256 of the body; UNSIGNED-PAYLOAD for streams)
    X-Corral-Nonce: <32 hex>                     (random, one per request)

``Signature = hex(HMAC-SHA256(secret, canonical_request(...)))``; the canonical request is the lines
``CORRAL-HMAC-SHA256``, method, path, query, body hash, date and nonce joined by ``\\n`` (see
``canonical_request``). The server looks the secret up by ``key_id`` (that stays out of this module),
then calls ``verify``: dates more than ``MAX_SKEW`` away from its clock are refused, and a
``ReplayGuard`` refuses a nonce seen twice. Pure stdlib: usable by the SDK, the server and any tool.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

from corral.api.errors import CorralError, Unauthenticated

ALGORITHM = "CORRAL-HMAC-SHA256"
AUTHORIZATION = "Authorization"
DATE_HEADER = "X-Corral-Date"
CONTENT_HEADER = "X-Corral-Content-SHA256"
NONCE_HEADER = "X-Corral-Nonce"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
"""Body hash of a streamed body (uploads): the body is not covered; servers accept it per route."""
MAX_SKEW = timedelta(minutes=5)
DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_SAFE = "-_.~"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{16,64}")
_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_PARAM = re.compile(r"\s*(\w+)=([^,\s]*)\s*")
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")
"""Characters that percent-decoding and ``quote(safe=_SAFE)`` both leave unchanged."""
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/-]*")


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:  # naive means UTC here, never local time
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_date(moment: datetime) -> str:
    """``moment`` as an ``X-Corral-Date`` value (naive datetimes are taken as UTC)."""
    m = _utc(moment)  # what strftime(DATE_FORMAT) gives, at a fraction of its cost
    return f"{m.year:04d}{m.month:02d}{m.day:02d}T{m.hour:02d}{m.minute:02d}{m.second:02d}Z"


def parse_date(value: str) -> datetime:
    """An ``X-Corral-Date`` value as an aware UTC datetime; ``Unauthenticated`` when malformed."""
    if not _DATE.fullmatch(value):
        raise Unauthenticated(
            f"malformed {DATE_HEADER} {value[:40]!r}: expected UTC like 20261122T081500Z"
        )
    try:  # strptime would cost more than the whole signature check
        year, month, day = int(value[0:4]), int(value[4:6]), int(value[6:8])
        return datetime(
            year, month, day, int(value[9:11]), int(value[11:13]), int(value[13:15]), 0, UTC
        )
    except ValueError as exc:
        raise Unauthenticated(f"malformed {DATE_HEADER} {value!r}: not a valid date") from exc


def body_sha256(body: bytes) -> str:
    """The ``X-Corral-Content-SHA256`` of a body."""
    return hashlib.sha256(body).hexdigest()


def canonical_path(path: str) -> str:
    """``path`` with each segment percent-decoded then re-encoded (``%2f`` and ``%2F`` sign alike).

    Pass the path as sent on the wire (still encoded: ``a%2Fb`` is one segment, ``a/b`` two).
    """
    if not path:
        return "/"
    if _PLAIN_PATH.fullmatch(path):  # nothing to decode or encode: canonical already
        return path
    return "/".join(quote(unquote(segment), safe=_SAFE) for segment in path.split("/"))


def _plain_pairs(query: str) -> list[tuple[str, str]] | None:
    """The pairs of a raw query whose keys and values hold only unreserved characters (what
    ``parse_qsl(keep_blank_values=True)`` gives, and ``quote`` keeps as is); None otherwise."""
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            if not (_PLAIN.fullmatch(key) and _PLAIN.fullmatch(value)):
                return None
            pairs.append((key, value))
    return pairs


def canonical_query(query: Sequence[tuple[str, str]] | str) -> str:
    """Query parameters sorted by key then value and re-encoded (``a=1&b=x%20y``).

    ``query`` is a raw query string (``b=2&a=1``, ``+`` and ``%20`` both mean a space) or decoded
    ``(key, value)`` pairs; the order of parameters does not change the result, their values do.
    """
    if isinstance(query, str):
        plain = _plain_pairs(query)
        if plain is not None:  # nothing to decode or encode
            return "&".join(f"{key}={value}" for key, value in sorted(plain))
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    return "&".join(
        f"{quote(key, safe=_SAFE)}={quote(value, safe=_SAFE)}" for key, value in sorted(pairs)
    )


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] | str,
    body_sha256: str,
    date: str,
    nonce: str,
) -> str:
    """The string that is signed: algorithm, method, path, query, body hash, date, nonce (7 lines)."""
    lines = (ALGORITHM, method.upper(), canonical_path(path), canonical_query(query))
    return "\n".join((*lines, body_sha256, date, nonce))


def sign(secret: str, canonical: str) -> str:
    """``hex(HMAC-SHA256(secret, canonical))``."""
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh random nonce (128 bits, hex)."""
    return secrets.token_hex(16)


def new_access_key() -> tuple[str, str]:
    """A new ``(key_id, secret)``: ``CK`` + 18 base32 characters, and 40 url-safe characters.

    The key id is public (shown in lists, logs, audit); the secret is shown once to its owner and
    must be stored sealed (``corral.server.secretbox``), not hashed: the server needs it to verify.
    """
    key_id = "CK" + base64.b32encode(secrets.token_bytes(15)).decode()[:18]
    return key_id, secrets.token_urlsafe(30)


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    url_path: str,
    query: Sequence[tuple[str, str]] | str,
    body: bytes | None,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers that sign one request (``body=None``: a stream, sent UNSIGNED-PAYLOAD)."""
    content = UNSIGNED_PAYLOAD if body is None else body_sha256(body)
    date = format_date(_utc(now))
    nonce = new_nonce() if nonce is None else nonce
    signature = sign(secret, canonical_request(method, url_path, query, content, date, nonce))
    return {
        AUTHORIZATION: f"{ALGORITHM} Credential={key_id}, Signature={signature}",
        DATE_HEADER: date,
        CONTENT_HEADER: content,
        NONCE_HEADER: nonce,
    }


def is_signed(headers: Mapping[str, str]) -> bool:
    """Whether a request claims to be AccessKey-signed (its Authorization uses our algorithm)."""
    value = _lower(headers).get("authorization", "")
    return value.split(" ", 1)[0] == ALGORITHM


def parse_authorization(header: str) -> tuple[str, str]:
    """``(key_id, signature)`` from an Authorization header; ``Unauthenticated`` when malformed."""
    usage = f"expected '{ALGORITHM} Credential=<key id>, Signature=<64 hex>'"
    scheme, _, rest = header.strip().partition(" ")
    if scheme != ALGORITHM:
        raise Unauthenticated(f"malformed Authorization: {usage}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        match = _PARAM.fullmatch(part)
        if match is None or match[1] in params:
            raise Unauthenticated(f"malformed Authorization: {usage}")
        params[match[1]] = match[2]
    if set(params) != {"Credential", "Signature"}:
        raise Unauthenticated(f"malformed Authorization: {usage}")
    key_id, signature = params["Credential"], params["Signature"]
    if not _KEY_ID.fullmatch(key_id):
        raise Unauthenticated(f"malformed Authorization: bad Credential; {usage}")
    if not _HEX64.fullmatch(signature):
        raise Unauthenticated(f"malformed Authorization: bad Signature; {usage}")
    return key_id, signature


@dataclass(frozen=True)
class SignedRequest:
    """The signing headers of one request, parsed and syntactically checked (not yet verified)."""

    key_id: str
    signature: str
    date: datetime
    date_header: str
    content_sha256: str
    nonce: str


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def parse_signed_headers(headers: Mapping[str, str]) -> SignedRequest:
    """Parse the four signing headers (any case); ``Unauthenticated`` names what is missing/wrong."""
    found = _lower(headers)
    missing = [
        name
        for name in (AUTHORIZATION, DATE_HEADER, CONTENT_HEADER, NONCE_HEADER)
        if name.lower() not in found
    ]
    if missing:
        raise Unauthenticated(
            f"signed request lacks header(s) {', '.join(missing)}", missing=missing
        )
    key_id, signature = parse_authorization(found["authorization"])
    date_header = found[DATE_HEADER.lower()].strip()
    content = found[CONTENT_HEADER.lower()].strip()
    nonce = found[NONCE_HEADER.lower()].strip()
    if content != UNSIGNED_PAYLOAD and not _HEX64.fullmatch(content):
        raise Unauthenticated(f"malformed {CONTENT_HEADER}: expected 64 lowercase hex digits")
    if not _NONCE.fullmatch(nonce):
        raise Unauthenticated(f"malformed {NONCE_HEADER}: expected 16 to 64 lowercase hex digits")
    return SignedRequest(key_id, signature, parse_date(date_header), date_header, content, nonce)


class ReplayGuard:
    """Remembers the nonces of verified requests and refuses a second use (in memory, bounded).

    A nonce is remembered per key id until its signed date is ``window`` old: later, ``verify``
    refuses the request as stale anyway, so at most ``2 * window`` after it arrived. When
    ``max_entries`` live nonces are held, new requests are refused (fail closed) rather than
    forgetting a nonce that could then be replayed. One guard per server process: several
    workers need a shared store to stop replays across them.
    """

    def __init__(self, *, window: timedelta = MAX_SKEW, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[datetime, str, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, signed: SignedRequest, *, now: datetime | None = None) -> None:
        """Remember ``signed``'s nonce; ``Unauthenticated`` if it was used before (or guard full)."""
        moment = _utc(now)
        entry = (signed.key_id, signed.nonce)
        with self._lock:
            while self._expiry and self._expiry[0][0] < moment:
                _, key_id, nonce = heapq.heappop(self._expiry)
                self._seen.discard((key_id, nonce))
            if entry in self._seen:
                raise Unauthenticated(
                    "replayed request: this nonce was already used; sign each request afresh",
                    key_id=signed.key_id,
                )
            if len(self._seen) >= self.max_entries:
                raise Unauthenticated(
                    "too many signed requests in the replay window; retry later",
                    key_id=signed.key_id,
                )
            self._seen.add(entry)
            heapq.heappush(self._expiry, (signed.date + self.window, *entry))


def verify(
    signed: SignedRequest,
    *,
    secret: str,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] | str,
    body: bytes | None,
    replay_guard: ReplayGuard | None,
    now: datetime | None = None,
    allow_unsigned_payload: bool = False,
) -> None:
    """Check one signed request; return quietly if it is genuine, fresh and new.

    ``secret`` is the one of ``signed.key_id`` (the caller looked it up); ``path`` and ``query`` are
    as received (raw, still percent-encoded: e.g. ASGI ``raw_path`` and ``query_string``); ``body``
    the bytes received, or ``None`` when the route streams its body, in which case the client must
    have sent UNSIGNED-PAYLOAD and ``allow_unsigned_payload`` must be true. Raises
    ``Unauthenticated`` for: a date more than ``MAX_SKEW`` off (either side), a body that does not
    match its hash, a wrong signature, a nonce already seen by ``replay_guard`` (``None``: no replay
    protection, only for tests and tools).
    """
    moment = _utc(now)
    if signed.date < moment - MAX_SKEW:
        raise Unauthenticated(
            f"signature expired: {DATE_HEADER} {signed.date_header} is more than 5 minutes old",
            date=signed.date_header,
        )
    if signed.date > moment + MAX_SKEW:
        raise Unauthenticated(
            f"clock skew: {DATE_HEADER} {signed.date_header} is more than 5 minutes ahead of"
            " the server's clock; check the client's time",
            date=signed.date_header,
        )
    if signed.content_sha256 == UNSIGNED_PAYLOAD:
        if not allow_unsigned_payload:
            raise Unauthenticated(f"{CONTENT_HEADER}: {UNSIGNED_PAYLOAD} is refused here")
    elif body is None:
        raise CorralError("verify() needs the body of a request whose body hash is signed")
    elif not hmac.compare_digest(body_sha256(body), signed.content_sha256):
        raise Unauthenticated(f"the body does not match {CONTENT_HEADER}")
    canonical = canonical_request(
        method, path, query, signed.content_sha256, signed.date_header, signed.nonce
    )
    if not hmac.compare_digest(sign(secret, canonical), signed.signature):
        raise Unauthenticated(
            "signature does not match: check the secret and that method, path, query and body"
            " are signed as sent",
            key_id=signed.key_id,
            canonical_request=canonical,
        )
    if replay_guard is not None:
        replay_guard.check(signed, now=moment)
