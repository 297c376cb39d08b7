"""``corral login`` with two-factor auth: asks for the code (or reads CORRAL_OTP / --otp)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pyotp

from corral.server.services import auth
from tests.support.identity import PASSWORD, make_project, make_user
from tests.support.stack import running_stack

CORRAL = str(Path(sys.executable).parent / "corral")


async def test_cli_login_prompts_for_the_second_factor(tmp_path: Path) -> None:
    async with running_stack(tmp_path / "s") as stack:
        svc = stack.server.services
        uid = await make_user(stack, "gina", {await make_project(stack, "p"): "member"})
        secret = (await auth.totp_begin(svc=svc, user_id=uid)).secret
        await auth.totp_confirm(svc=svc, user_id=uid, code=pyotp.TOTP(secret).now())
        env = {
            **os.environ,
            "CORRAL_CONFIG_DIR": str(tmp_path / "cfg"),
            "CORRAL_PASSWORD": PASSWORD,
        }
        env.pop("CORRAL_OTP", None)
        cmd = [CORRAL, "login", stack.server.url, "--user", "gina"]

        def run(stdin: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60,
                                  env={**env, **extra}, check=False)  # fmt: skip

        wrong = await asyncio.to_thread(run, "000000\n")
        assert wrong.returncode != 0
        assert "Two-factor code" in wrong.stdout + wrong.stderr
        code = pyotp.TOTP(secret).at(int(__import__("time").time()) + 30)
        done = await asyncio.to_thread(run, f"{code}\n")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Logged in" in done.stdout
        assert (tmp_path / "cfg").exists()
