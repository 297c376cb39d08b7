"""``POST /v1/tasks`` answered by ``agent/http/fast.py`` gives exactly what the FastAPI route gives:
same status codes and bodies for a missing or wrong bearer, an invalid body, a task that succeeds,
one that fails, and a duplicate task id."""

from __future__ import annotations

import httpx

from corral.agent.http import create_agent_app, create_host_app
from corral.agent.runtime import HostRuntime
from tests.unit.agent.test_agent_attach import TOKEN, attach_body, auth

SPEC = {"vm_id": "vm-1", "name": "a", "cpus": 1, "memory_mb": 64, "disk_gb": 1, "vnc_password": "x"}


def _requests(prefix: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of the requests compared; task ids differ per app (``prefix``)."""
    json = {"Content-Type": "application/json"}
    define = f'{{"task_id": "{prefix}d", "payload": {{"kind": "vm.define", "spec": {_js(SPEC)}}}}}'
    pause = f'{{"task_id": "{prefix}p", "payload": {{"kind": "vm.pause", "vm_id": "vm-404"}}}}'
    return [
        (json, define.encode()),  # no bearer
        ({**json, **auth("w" * 40)}, define.encode()),  # wrong bearer
        ({**json, **auth()}, b'{"task_id": "b", "payload": {}}'),  # invalid payload
        ({**json, **auth()}, b"{not json"),
        ({**json, **auth()}, define.encode()),  # succeeds
        ({**json, **auth()}, define.encode()),  # duplicate: the first status
        ({**json, **auth()}, pause.encode()),  # fails: the task's error
    ]


def _js(d: dict[str, object]) -> str:
    import json

    return json.dumps(d)


def _same(body: object, prefix: str) -> object:
    """``body`` with this app's task id prefix removed."""
    if isinstance(body, dict):
        return {k: _same(v, prefix) for k, v in body.items()}
    if isinstance(body, list):
        return [_same(v, prefix) for v in body]
    return body.replace(prefix, "") if isinstance(body, str) else body


async def test_fast_path_answers_as_the_fastapi_route(runtime: HostRuntime) -> None:
    fast = httpx.ASGITransport(app=create_agent_app({"": runtime}))
    slow = httpx.ASGITransport(app=create_host_app(runtime))
    async with (
        httpx.AsyncClient(transport=fast, base_url="http://agent") as f,
        httpx.AsyncClient(transport=slow, base_url="http://agent") as s,
    ):
        assert (await f.post("/v1/attach", json=attach_body())).status_code == 200
        assert runtime.authenticate(f"Bearer {TOKEN}") is not None
        answers = []
        for (hf, bf), (hs, bs) in zip(_requests("f-"), _requests("s-"), strict=True):
            rf = await f.post("/v1/tasks", content=bf, headers=hf)
            rs = await s.post("/v1/tasks", content=bs, headers=hs)
            assert rf.status_code == rs.status_code, (rf.text, rs.text)
            assert _same(rf.json(), "f-") == _same(rs.json(), "s-")
            answers.append(rf.status_code)
        assert answers == [401, 401, 422, 422, 200, 200, 200]
