"""image.import: download an image from a URL into the image store, with progress."""

from __future__ import annotations

from typing import Any

import httpx

from corral.api.errors import CorralError, InvalidInput
from corral.server.db.tables import ImageRow
from corral.server.workflows.engine import Ctx, Step, Workflow

CHUNK = 1024 * 1024


async def _download(ctx: Ctx) -> dict[str, Any]:
    from corral.server.services.images import store_bytes

    url: str = ctx.params["url"]
    image_id: str = ctx.params["image_id"]
    try:
        async with (
            httpx.AsyncClient(follow_redirects=True, timeout=60) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise InvalidInput(f"{url} answered {resp.status_code}", url=url)
            total = int(resp.headers.get("content-length") or 0)

            last = -1

            async def progress(done: int) -> None:
                nonlocal last
                percent = min(99, done * 100 // total) if total else 0
                if percent != last:  # one database write per percent, not per chunk
                    last = percent
                    await ctx.progress(percent, "downloading")

            await store_bytes(ctx.deps, image_id, resp.aiter_bytes(CHUNK), progress)
    except httpx.HTTPError as exc:
        raise InvalidInput(f"cannot download {url}: {exc}", url=url) from exc
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    async with ctx.deps.sessionmaker.begin() as s:
        row = await s.get(ImageRow, ctx.params["image_id"])
        if row is not None:
            row.status = "error"


async def _undo(ctx: Ctx) -> None:
    from corral.server.services.images import image_path

    image_path(ctx.deps, ctx.params["image_id"]).unlink(missing_ok=True)


IMAGE_IMPORT = Workflow(
    "image.import", steps=(Step("download", _download, _undo),), on_failure=_on_failure
)
