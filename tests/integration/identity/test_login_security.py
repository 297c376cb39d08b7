"""Login hardening: lockout back-off, per-address rate limit, TOTP two-factor auth with recovery
codes, logout and password change ending sessions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
from sqlalchemy import update

from corral.server.db.tables import UserRow
from corral.server.security.ratelimit import RateLimiter
from tests.support.identity import PASSWORD, make_project, make_user
from tests.support.stack import running_stack


async def _login(
    c: httpx.AsyncClient, name: str, password: str, otp: str | None = None
) -> httpx.Response:
    body = {"username": name, "password": password}
    if otp is not None:
        body["otp"] = otp
    return await c.post("/auth/login", json=body)


async def test_lockout_backs_off_and_a_good_login_resets_it(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await make_user(stack, "dave", {await make_project(stack, "p"): "member"})
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1") as c:
            for _ in range(5):
                r = await _login(c, "dave", "wrong password")
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
            r = await _login(c, "dave", PASSWORD)  # right, but locked: not even checked
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited"
            assert 25 <= int(r.headers["Retry-After"]) <= 30
            # the back-off is over (moved back in time): the right password works and resets
            async with stack.server.services.sessionmaker.begin() as s:
                earlier = datetime.now(UTC) - timedelta(minutes=1)
                await s.execute(
                    update(UserRow).where(UserRow.name == "dave").values(last_failed_at=earlier)
                )
            assert (await _login(c, "dave", PASSWORD)).status_code == 200
            r = await _login(c, "dave", "wrong password")
            assert r.status_code == 401  # counting starts again from zero


async def test_rate_limit_per_address(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        stack.server.services.login_limiter = RateLimiter(0.01, 3)
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1") as c:
            codes = [(await _login(c, "nobody", "x")).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]


async def test_two_factor_enrolment_login_and_recovery_codes(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await make_user(stack, "erin", {await make_project(stack, "p"): "member"})
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1") as c:
            token = (await _login(c, "erin", PASSWORD)).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            enrol = (await c.post("/auth/totp", headers=auth)).json()
            assert enrol["otpauth_uri"].startswith("otpauth://totp/Corral:erin?")
            assert enrol["qr_svg"].lstrip().startswith("<svg")
            secret = enrol["secret"]
            # the secret is sealed at rest
            async with stack.server.services.sessionmaker() as s:
                from sqlalchemy import select

                stored = await s.scalar(select(UserRow.totp_secret).where(UserRow.name == "erin"))
            assert stored is not None and secret not in stored
            r = await c.post("/auth/totp/confirm", headers=auth, json={"code": "000000"})
            assert r.status_code == 422
            now = pyotp.TOTP(secret).now()
            r = await c.post("/auth/totp/confirm", headers=auth, json={"code": now})
            assert r.status_code == 200, r.text
            recovery = r.json()["recovery_codes"]
            assert len(recovery) == 10

            r = await _login(c, "erin", PASSWORD)
            assert r.status_code == 401 and r.json()["error"]["code"] == "otp_required"
            r = await _login(c, "erin", PASSWORD, "123456")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
            # the code used to confirm cannot be replayed; the next step's code works
            r = await _login(c, "erin", PASSWORD, now)
            assert r.status_code == 401
            nxt = pyotp.TOTP(secret).at(time.time() + 30)
            assert (await _login(c, "erin", PASSWORD, nxt)).status_code == 200
            # a recovery code works once
            assert (await _login(c, "erin", PASSWORD, recovery[0].upper())).status_code == 200
            assert (await _login(c, "erin", PASSWORD, recovery[0])).status_code == 401


async def test_logout_and_password_change_end_sessions(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await make_user(stack, "fred", {await make_project(stack, "p"): "member"})
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1") as c:
            t1 = (await _login(c, "fred", PASSWORD)).json()["token"]
            t2 = (await _login(c, "fred", PASSWORD)).json()["token"]
            h1, h2 = {"Authorization": f"Bearer {t1}"}, {"Authorization": f"Bearer {t2}"}
            assert (await c.get("/vms", headers=h1)).status_code == 200
            assert (await c.post("/auth/logout", headers=h1)).status_code == 204
            assert (await c.get("/vms", headers=h1)).status_code == 401
            t3 = (await _login(c, "fred", PASSWORD)).json()["token"]
            h3 = {"Authorization": f"Bearer {t3}"}
            weak = {"current_password": PASSWORD, "new_password": "password1"}
            r = await c.post("/auth/password", headers=h2, json=weak)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
            new = "another long passphrase 77"
            r = await c.post("/auth/password", headers=h2,
                             json={"current_password": PASSWORD, "new_password": new})  # fmt: skip
            assert r.status_code == 204, r.text
            assert (await c.get("/vms", headers=h2)).status_code == 200  # this session stays
            stack.server.services.sessions.clear()
            assert (await c.get("/vms", headers=h3)).status_code == 401  # the others end
            assert (await _login(c, "fred", PASSWORD)).status_code == 401
            assert (await _login(c, "fred", new)).status_code == 200
