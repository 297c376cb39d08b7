"""AccessKey request signing: canonical form, verification, tampering, staleness, replays, SDK auth."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from corral.api.errors import Unauthenticated
from corral.api.signing import (
    MAX_SKEW,
    UNSIGNED_PAYLOAD,
    ReplayGuard,
    canonical_path,
    canonical_query,
    canonical_request,
    format_date,
    new_access_key,
    parse_authorization,
    parse_signed_headers,
    signed_headers,
    verify,
)
from corral.sdk.auth import AccessKeyAuth, BearerAuth

NOW = datetime(2026, 11, 22, 8, 15, 0, tzinfo=UTC)
KEY_ID, SECRET = "CKABCDEFGHIJKLMNOPQR", "s3cr3t-" + "x" * 33
BODY = b'{"name": "web1"}'
QUERY = [("limit", "10"), ("name", "a b")]


def sign_request(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "key_id": KEY_ID,
        "secret": SECRET,
        "method": "POST",
        "url_path": "/api/v1/vms",
        "query": QUERY,
        "body": BODY,
        "now": NOW,
    }
    args.update(overrides)
    return signed_headers(**args)  # type: ignore[arg-type]


def check(headers: dict[str, str], **overrides: object) -> None:
    args: dict[str, object] = {
        "secret": SECRET,
        "method": "POST",
        "path": "/api/v1/vms",
        "query": QUERY,
        "body": BODY,
        "replay_guard": None,
        "now": NOW,
    }
    args.update(overrides)
    verify(parse_signed_headers(headers), **args)  # type: ignore[arg-type]


def test_signed_request_verifies() -> None:
    headers = sign_request()
    assert headers["Authorization"].startswith(f"CORRAL-HMAC-SHA256 Credential={KEY_ID}, ")
    assert headers["X-Corral-Date"] == "20261122T081500Z"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Corral-Nonce"])
    check(headers)
    check({k.lower(): v for k, v in headers.items()})  # header names in any case


def test_canonical_request_lines() -> None:
    text = canonical_request("get", "/api/v1/vms/a%2fb", "b=2&a=x+y&a=1", "0" * 64, "D", "N")
    assert text.split("\n") == [
        "CORRAL-HMAC-SHA256",
        "GET",
        "/api/v1/vms/a%2Fb",
        "a=1&a=x%20y&b=2",
        "0" * 64,
        "D",
        "N",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/api/v1/vms/other"),
        ("query", [("limit", "11"), ("name", "a b")]),
        ("query", [("limit", "10")]),
        ("body", b'{"name": "web2"}'),
        ("secret", "another-secret"),
    ],
)
def test_tampered_field_fails(field: str, value: object) -> None:
    with pytest.raises(Unauthenticated, match="does not match"):
        check(sign_request(), **{field: value})


def test_query_order_and_encoding_do_not_matter() -> None:
    headers = sign_request(query="name=a%20b&limit=10")
    check(headers, query="limit=10&name=a+b")
    check(headers, query=[("name", "a b"), ("limit", "10")])
    assert canonical_query("b=1&a=2") == canonical_query([("a", "2"), ("b", "1")])


@pytest.mark.parametrize(
    "query",
    ["", "limit=10", "b=2&a=1&a=0", "a", "a=", "&&a=1&", "a=b=c", "a+b=c", "a=%41", "a=x~y.z-_",
     "A=1&a=1", "é=1", "a=1;b=2", "a=%2B&b=+", "=x", "a&a=&a=1"],
)  # fmt: skip
def test_the_fast_canonical_query_is_the_general_one(query: str) -> None:
    """Plain queries skip decoding and re-encoding: the result must not change."""
    from urllib.parse import parse_qsl

    assert canonical_query(query) == canonical_query(parse_qsl(query, keep_blank_values=True))


@pytest.mark.parametrize(
    "path", ["/api/v1/vms", "/", "/a//b/", "/a%2Fb", "/web%2d1", "/a b", "/~x/y.z_-", "/é", "/a+b"]
)
def test_the_fast_canonical_path_is_the_general_one(path: str) -> None:
    from urllib.parse import quote, unquote

    general = "/".join(quote(unquote(segment), safe="-_.~") for segment in path.split("/"))
    assert canonical_path(path) == general


def test_format_date_is_strftime() -> None:
    for moment in (NOW, datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), datetime(2026, 12, 31)):
        assert format_date(moment) == moment.replace(tzinfo=UTC).strftime("%Y%m%dT%H%M%SZ")


def test_path_percent_encoding_is_normalized() -> None:
    headers = sign_request(url_path="/api/v1/vms/web%2d1")
    check(headers, path="/api/v1/vms/web-1")
    with pytest.raises(Unauthenticated):  # an encoded slash is not a separator
        check(sign_request(url_path="/api/v1/vms/a%2Fb"), path="/api/v1/vms/a/b")


def test_tampered_headers_fail() -> None:
    headers = sign_request()
    later = {**headers, "X-Corral-Date": "20261122T081600Z"}
    with pytest.raises(Unauthenticated, match="signature does not match"):
        check(later)
    other_nonce = {**headers, "X-Corral-Nonce": "ab" * 16}
    with pytest.raises(Unauthenticated, match="signature does not match"):
        check(other_nonce)
    other_hash = {**headers, "X-Corral-Content-SHA256": "0" * 64}
    with pytest.raises(Unauthenticated, match="body does not match"):
        check(other_hash)


@pytest.mark.parametrize("offset", [MAX_SKEW, -MAX_SKEW])
def test_edge_of_the_window_is_accepted(offset: timedelta) -> None:
    check(sign_request(now=NOW + offset))


def test_stale_signature_is_refused() -> None:
    old = sign_request(now=NOW - MAX_SKEW - timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="signature expired"):
        check(old)


def test_future_signature_is_refused() -> None:
    ahead = sign_request(now=NOW + MAX_SKEW + timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="clock skew"):
        check(ahead)


def test_replay_is_refused_and_forgotten_after_the_window() -> None:
    guard = ReplayGuard()
    headers = sign_request()
    check(headers, replay_guard=guard)
    with pytest.raises(Unauthenticated, match="replayed request"):
        check(headers, replay_guard=guard, now=NOW + timedelta(seconds=30))
    check(sign_request(), replay_guard=guard)  # a fresh nonce is fine
    assert len(guard) == 2
    later = NOW + MAX_SKEW + timedelta(seconds=1)
    check(sign_request(now=later), replay_guard=guard, now=later)
    assert len(guard) == 1  # the two old nonces expired with their dates
    with pytest.raises(Unauthenticated, match="signature expired"):
        check(headers, replay_guard=guard, now=later)


def test_bad_signature_is_not_remembered() -> None:
    guard = ReplayGuard()
    headers = sign_request()
    with pytest.raises(Unauthenticated):
        check(headers, replay_guard=guard, secret="wrong")
    check(headers, replay_guard=guard)


def test_full_replay_guard_fails_closed() -> None:
    guard = ReplayGuard(max_entries=2)
    check(sign_request(), replay_guard=guard)
    check(sign_request(), replay_guard=guard)
    with pytest.raises(Unauthenticated, match="too many"):
        check(sign_request(), replay_guard=guard)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer abc", "malformed Authorization"),
        ("CORRAL-HMAC-SHA256", "malformed Authorization"),
        (f"CORRAL-HMAC-SHA256 Credential={KEY_ID}", "malformed Authorization"),
        (f"CORRAL-HMAC-SHA256 Credential={KEY_ID}, Signature=xyz", "bad Signature"),
        (f"CORRAL-HMAC-SHA256 Credential=a b, Signature={'0' * 64}", "malformed"),
        (f"CORRAL-HMAC-SHA256 Credential=, Signature={'0' * 64}", "bad Credential"),
        (
            f"CORRAL-HMAC-SHA256 Credential={KEY_ID}, Credential=x, Signature={'0' * 64}",
            "malformed Authorization",
        ),
    ],
)
def test_malformed_authorization(header: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        parse_authorization(header)


def test_parse_authorization_accepts_any_order() -> None:
    sig = "ab" * 32
    assert parse_authorization(f"CORRAL-HMAC-SHA256 Signature={sig},Credential=K1") == ("K1", sig)


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("X-Corral-Date", "2026-11-22T08:15:00Z", "malformed X-Corral-Date"),
        ("X-Corral-Date", "20261340T081500Z", "not a valid date"),
        ("X-Corral-Nonce", "short", "malformed X-Corral-Nonce"),
        ("X-Corral-Content-SHA256", "ABC", "malformed X-Corral-Content-SHA256"),
    ],
)
def test_malformed_signing_headers(header: str, value: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        parse_signed_headers({**sign_request(), header: value})


def test_missing_header_is_named() -> None:
    headers = sign_request()
    del headers["X-Corral-Nonce"]
    with pytest.raises(Unauthenticated, match=r"lacks header.*X-Corral-Nonce") as info:
        parse_signed_headers(headers)
    assert info.value.context["missing"] == ["X-Corral-Nonce"]


def test_unsigned_payload_only_where_allowed() -> None:
    headers = sign_request(body=None)
    assert headers["X-Corral-Content-SHA256"] == UNSIGNED_PAYLOAD
    with pytest.raises(Unauthenticated, match="UNSIGNED-PAYLOAD is refused"):
        check(headers, body=b"anything")
    check(headers, body=None, allow_unsigned_payload=True)


def test_new_access_key_shape() -> None:
    keys = {new_access_key() for _ in range(50)}
    assert len(keys) == 50
    for key_id, secret in keys:
        assert re.fullmatch(r"CK[A-Z2-7]{18}", key_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{40}", secret)


# The SDK side: a MockTransport plays the server and verifies like the server would.


def verifying_server(
    guard: ReplayGuard, seen: list[str]
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            signed = parse_signed_headers(request.headers)
            verify(
                signed,
                secret=SECRET,
                method=request.method,
                path=request.url.raw_path.partition(b"?")[0].decode(),
                query=request.url.query.decode(),
                body=None if signed.content_sha256 == UNSIGNED_PAYLOAD else request.content,
                replay_guard=guard,
                allow_unsigned_payload=request.url.path.endswith("/upload"),
            )
        except Unauthenticated as exc:
            return httpx.Response(401, json={"error": exc.to_body().model_dump()})
        seen.append(signed.content_sha256)
        return httpx.Response(200, json={"key_id": signed.key_id})

    return handler


def test_access_key_auth_sync_client() -> None:
    guard, seen = ReplayGuard(), list[str]()
    auth = AccessKeyAuth(KEY_ID, SECRET)
    with httpx.Client(
        base_url="http://corral.test/api/v1",
        transport=httpx.MockTransport(verifying_server(guard, seen)),
        auth=auth,
    ) as client:
        assert client.post("/vms", params={"b": "2", "a": "x y"}, json={"n": 1}).status_code == 200
        assert client.get("/vms/web%201").status_code == 200
        assert client.get("/vms", params={"name": "ünï/?&"}).status_code == 200
        chunks = (part for part in (b"abc", b"def"))
        assert client.put("/images/x/upload", content=chunks).status_code == 200
        refused = client.put("/images/x/other", content=(p for p in (b"a",)))
        assert refused.status_code == 401
    assert seen[-1] == UNSIGNED_PAYLOAD
    assert len(seen) == 4
    assert "secret=***" in repr(auth)
    assert SECRET not in repr(auth)


async def test_access_key_auth_async_client() -> None:
    guard, seen = ReplayGuard(), list[str]()
    async with httpx.AsyncClient(
        base_url="http://corral.test/api/v1",
        transport=httpx.MockTransport(verifying_server(guard, seen)),
        auth=AccessKeyAuth(KEY_ID, SECRET),
    ) as client:
        response = await client.patch("/vms/web1", json={"description": "x"})
        assert response.status_code == 200
        assert response.json() == {"key_id": KEY_ID}


def test_access_key_auth_with_wrong_secret_or_clock_is_refused() -> None:
    transport = httpx.MockTransport(verifying_server(ReplayGuard(), []))
    with httpx.Client(transport=transport, auth=AccessKeyAuth(KEY_ID, "wrong")) as client:
        answer = client.get("http://corral.test/api/v1/vms")
        assert answer.status_code == 401
        assert "signature does not match" in answer.json()["error"]["message"]
    late = AccessKeyAuth(KEY_ID, SECRET, clock=lambda: datetime.now(UTC) - timedelta(minutes=6))
    with httpx.Client(transport=transport, auth=late) as client:
        assert "signature expired" in client.get("http://t/x").json()["error"]["message"]


def test_bearer_auth() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=request.headers["Authorization"])

    with httpx.Client(transport=httpx.MockTransport(handler), auth=BearerAuth("t0k3n")) as client:
        assert client.get("http://corral.test/").text == "Bearer t0k3n"
    assert "t0k3n" not in repr(BearerAuth("t0k3n"))
