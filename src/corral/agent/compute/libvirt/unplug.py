"""Hot-unplugging a device (a data disk, a NIC): ask, wait for the guest to let go, then drop it
from the persistent definition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from corral.api.errors import InvalidState
from corral.api.vms import PowerState


async def unplug(
    run: Callable[[Callable[[], Any]], Awaitable[Any]],
    power_state: Callable[[], Awaitable[PowerState]],
    *,
    request: Callable[[], bool],
    plugged: Callable[[], bool],
    remove: Callable[[], None],
    what: str,
    timeout: float,
    poll: float,
    **context: Any,
) -> None:
    """``request`` the unplug (False: QEMU does not have the device), poll ``plugged`` every
    ``poll`` s until the guest released it, then ``remove`` it from the persistent definition
    (each through ``run``, libvirt calls being blocking). If the guest keeps it past ``timeout``
    s: ``InvalidState`` ("the guest did not release the <what>", with ``context``), the
    persistent definition untouched (the request stays pending)."""
    if await run(request):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await run(plugged):
            if loop.time() >= deadline:
                state = await power_state()
                raise InvalidState(
                    f"the guest did not release the {what} within {timeout:g} s"
                    + (" (the VM is paused)" if state == PowerState.paused else ""),
                    timeout=timeout,
                    power_state=state.value,
                    **context,
                )
            await asyncio.sleep(poll)
    await run(remove)
