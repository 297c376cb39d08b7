"""Pure helpers of the audit middleware: action names, request summaries, client addresses.

Action names (``action_for``): the route's path template without ``/api/v1``; each literal segment
is singularized (``vms`` -> ``vm``, ``access-keys`` -> ``access_key``, ``policies`` -> ``policy``),
``{parameters}`` are dropped, and the words are joined with dots. Then:

- a POST whose template ends with a singular literal after another word is a verb:
  ``POST /vms/{ref}/resize`` -> ``vm.resize``, ``POST /auth/login`` -> ``auth.login``,
  ``POST /operations/{id}/cancel`` -> ``operation.cancel``;
- otherwise the method's verb is appended: POST ``create``, PUT and PATCH ``update``, DELETE
  ``delete``: ``POST /vms`` -> ``vm.create``, ``DELETE /vms/{ref}`` -> ``vm.delete``,
  ``POST /projects/{id}/members`` -> ``project.member.create``,
  ``PUT /images/{ref}/data`` -> ``image.data.update``.

Requests no route matched (404) are named from their raw path, segments that do not look like words
(ids, names with digits) taken as parameters: best effort. A 405 keeps the template of the route
that matched the path.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from corral.util.redact import redact

API_PREFIX = "/api/v1"
SUMMARY_LIMIT = 4096
"""Longest request summary stored (characters of JSON); bigger ones keep an excerpt."""
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_WORD = re.compile(r"[a-z][a-z_-]*")


def singular(word: str) -> str:
    """``vms`` -> ``vm``, ``policies`` -> ``policy``, ``addresses`` -> ``address``; words ending
    in ``ss``/``us``/``is`` and words without a final ``s`` are kept."""
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")) or not word.endswith("s"):
        return word
    return word[:-1]


def action_for(method: str, template: str | None, path: str) -> str:
    """The action name of a request (rules in the module docstring). ``template`` is the matched
    route's path template (with or without the ``/api/v1`` prefix), None when no route matched."""
    if template is not None:
        return _named(method, template)
    return _name(method, [p if _WORD.fullmatch(p) else "{}" for p in _segments(path)])


@functools.lru_cache(maxsize=1024)
def _named(method: str, template: str) -> str:
    return _name(method, _segments(template))


def _name(method: str, parts: list[str]) -> str:
    words: list[str] = []
    last_literal, last_plural = False, False
    for part in parts:
        if part.startswith("{"):
            last_literal = False
            continue
        word = singular(part)
        words.append(word.replace("-", "_"))
        last_literal, last_plural = True, word != part
    verb = _VERBS.get(method, method.lower())
    if not words:
        return f"api.{verb}"
    if method == "POST" and len(words) > 1 and last_literal and not last_plural:
        return ".".join(words)
    return ".".join([*words, verb])


def _segments(path: str) -> list[str]:
    if path.startswith(API_PREFIX + "/") or path == API_PREFIX:
        path = path[len(API_PREFIX) :]
    return [p for p in path.split("/") if p]


def noun_of(action: str) -> str:
    """The resource kind an action is about: its first word (``vm.resize`` -> ``vm``)."""
    return action.split(".", 1)[0]


def summarize(body: bytes, size: int, content_type: str, query: bytes) -> tuple[str | None, Any]:
    """The stored request summary (JSON text, secrets masked, at most about ``SUMMARY_LIMIT``
    characters) and the parsed body (None unless a JSON object or array could be read).

    ``body`` is the first bytes of the request body, ``size`` its full length. A body that is not
    JSON, or was cut, is never stored, even masked: only its type and size are. Query parameters
    are kept (masked) under ``query``."""
    summary: dict[str, Any] = {}
    parsed: Any = None
    if query:
        summary["query"] = redact(dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)))
    if size:
        if "json" in content_type and len(body) == size:
            try:
                parsed = json.loads(body)
            except ValueError:
                summary["body_unreadable"] = True
            else:
                summary["body"] = redact(parsed)
        if "body" not in summary:
            summary["content_type"] = content_type or None
            summary["size"] = size
    if not summary:
        return None, parsed
    text = json.dumps(summary, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(text) > SUMMARY_LIMIT:
        excerpt = text[: SUMMARY_LIMIT - 200]
        text = json.dumps(
            {"truncated": True, "size": size, "excerpt": excerpt},
            separators=(",", ":"),
            ensure_ascii=False,
        )
    return text, parsed


def client_ip(scope: dict[str, Any], *, trust_forwarded: bool) -> str | None:
    """The client's address: the TCP peer, or (only when ``trust_forwarded``: the server is behind
    a trusted reverse proxy) the last address of ``X-Forwarded-For``, the one that proxy added
    (earlier ones are whatever the client claimed)."""
    if trust_forwarded:
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                last: str = value.decode("latin-1").split(",")[-1].strip()
                if last:
                    return last
    client = scope.get("client")
    return str(client[0]) if client else None


def cut(value: Any, limit: int) -> str | None:
    """``value`` as text of at most ``limit`` characters (None stays None)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
