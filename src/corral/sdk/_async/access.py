"""``client.access_keys``: the caller's AccessKeys (platform admins: everyone's).

An AccessKey lets a program sign its requests (``Client(url, access_key=(key_id, secret))``)
instead of logging in. The secret is returned by ``create`` only: the server never shows it again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from corral.api.auth import AccessKey, AccessKeyCreate, AccessKeyCreated, AccessKeyUpdate
from corral.api.common import DEFAULT_PAGE, Page
from corral.sdk._base import build, parse, parse_page, query, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient


class AsyncAccessKeys:
    """``client.access_keys``: list, create (the secret is in that answer only), enable,
    disable, update and delete. Changes take effect at once; none is an operation."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._path = "/access-keys"

    async def list(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
    ) -> Page[AccessKey]:
        """A page of the caller's keys, oldest first unless ``sort`` says otherwise (a platform
        admin gets every user's); ``q`` conditions as on every list (``enabled=true``,
        ``user.name=alice``); never secrets."""
        params = query({}, limit=limit, offset=offset, sort=sort, q=q)
        response = await self._client.request("GET", self._path, params=params)
        return parse_page(AccessKey, response.content)

    async def create(
        self, description: str = "", *, expires_at: datetime | None = None
    ) -> AccessKeyCreated:
        """A new key of the caller. ``expires_at`` (aware, or naive = UTC) ends it; ``None``
        never. The answer's ``secret`` is shown this once: store it now. More than the server's
        limit of keys per user is ``InvalidInput``."""
        body = build(AccessKeyCreate, description=description, expires_at=expires_at)
        return await self._client.call(AccessKeyCreated, "POST", self._path, body=body)

    async def update(
        self, key_id: str, *, enabled: bool | None = None, description: str | None = None
    ) -> AccessKey:
        """Change the given fields (``None``: unchanged); ``NotFound`` if the caller may not see
        the key. A disabled key's signatures are refused from the next request on (other server
        nodes may accept them for up to 10 s more)."""
        body = build(AccessKeyUpdate, enabled=enabled, description=description)
        path = f"{self._path}/{quote_ref(key_id)}"
        response = await self._client.request("PATCH", path, body=body)
        return parse(AccessKey, response.content)

    async def enable(self, key_id: str) -> AccessKey:
        """``update(key_id, enabled=True)``."""
        return await self.update(key_id, enabled=True)

    async def disable(self, key_id: str) -> AccessKey:
        """``update(key_id, enabled=False)``: requests signed with it are refused
        (``Unauthenticated``) until it is enabled again."""
        return await self.update(key_id, enabled=False)

    async def delete(self, key_id: str) -> None:
        """Delete the key for good (``NotFound`` if unknown or not the caller's)."""
        await self._client.request("DELETE", f"{self._path}/{quote_ref(key_id)}")
