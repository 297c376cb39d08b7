"""Helpers of the identity administration tests: answers checked with their stable codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from corral.up import Stack

STRONG = "Tr4vel-light-and-far"


def done(r: httpx.Response) -> dict[str, Any]:
    """The finished operation of a mutation (202, succeeded, Location header)."""
    assert r.status_code == 202, r.text
    op: dict[str, Any] = r.json()
    assert op["status"] == "succeeded", op
    assert r.headers["Location"] == f"/api/v1/operations/{op['id']}"
    return op


def refused(r: httpx.Response, status: int, code: str, **context: Any) -> dict[str, Any]:
    """The error body of a refused call, checked: status, code and the given context entries."""
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    for key, value in context.items():
        assert error["context"].get(key) == value, (key, error)
    return error


def names(page: dict[str, Any], key: str = "name") -> list[str]:
    return [item[key] for item in page["items"]]


@asynccontextmanager
async def logged_in(stack: Stack, name: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in as ``name`` with ``password`` (users made through the API)."""
    async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1", timeout=60) as c:
        r = await c.post("/auth/login", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c
