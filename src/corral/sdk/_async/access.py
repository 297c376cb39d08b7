"""``client.access_keys``: the caller's AccessKeys (platform admins: everyone's).

An AccessKey lets a program sign its requests (``Client(url, access_key=(key_id, secret))``)
instead of logging in. The secret is returned by ``create`` only: the server never shows it again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from corral.api.auth import AccessKey, AccessKeyCreate, AccessKeyCreated, AccessKeyUpdate
from corral.api.errors import CorralError
from corral.sdk._base import build, parse, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient

KeyList = list[AccessKey]
_KEY_LIST: TypeAdapter[KeyList] = TypeAdapter(KeyList)


def parse_keys(content: bytes) -> KeyList:
    """Parse a ``list[AccessKey]`` body; one that does not match the contract is a
    ``CorralError``."""
    try:
        return _KEY_LIST.validate_json(content)
    except ValidationError as exc:
        raise CorralError(
            f"the server answered with an unexpected AccessKey list: {exc.error_count()} errors"
        ) from exc


class AsyncAccessKeys:
    """``client.access_keys``: list, create (the secret is in that answer only), enable,
    disable, update and delete. Changes take effect at once; none is an operation."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._path = "/access-keys"

    async def list(self) -> KeyList:
        """The caller's keys, oldest first (a platform admin gets every user's); never secrets."""
        response = await self._client.request("GET", self._path)
        return parse_keys(response.content)

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
