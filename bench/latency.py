"""(a) create→running latency of one VM through Corral vs ``virsh define`` + ``virsh start``.

Corral: ``corral up --driver libvirt`` (server + local agent, one process, plain HTTP), the tiny test
image of ``scripts/build-test-image`` (``$CORRAL_TEST_IMAGE`` if set); the time from ``POST /vms``
until its operation reports ``succeeded`` (the domain is running). A first VM, not timed, warms the
agent's image cache. Baseline, same machine, same run: the domain XML Corral generated (``virsh
dumpxml --inactive``) under a new name, without its UUID, on a fresh qcow2 overlay of the same
cached base image, then ``virsh define`` + ``virsh start``. Runs alternate; medians are reported.
Every domain and disk is removed afterwards, also when the benchmark fails.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, BenchContext, Figure, api, median, ok, start_up, upload_image

NAME = "latency"
TARGET = "ratio <= 1.3x"
URI = "qemu:///system"


def virsh(*args: str, check: bool = True) -> str:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def test_image() -> Path:
    env = os.environ.get("CORRAL_TEST_IMAGE")
    if env:
        return Path(env)
    out = subprocess.run([str(REPO / "scripts/build-test-image")], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def remove_domain(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, check=False)


def baseline_xml(template: str, name: str, disk: Path, log: Path) -> str:
    """Corral's domain XML under ``name``, without UUID and Corral metadata, on ``disk``."""
    root = ET.fromstring(template)
    root.find("name").text = name  # type: ignore[union-attr]
    for tag in ("uuid", "metadata", "title"):
        for el in root.findall(tag):
            root.remove(el)
    for src in root.iterfind("./devices/disk[@device='disk']/source"):
        src.set("file", str(disk))
    for src in root.iterfind("./devices/*/source[@path]"):
        src.set("path", str(log))
    return ET.tostring(root, encoding="unicode")


def backing_file(disk: str) -> str:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", disk], capture_output=True,
                         text=True, check=True)  # fmt: skip
    import json

    info: dict[str, Any] = json.loads(out.stdout)
    return str(info.get("full-backing-filename") or info["backing-filename"])


async def corral_create(c: httpx.AsyncClient, name: str, created: list[str]) -> float:
    """Seconds from POST /vms to the create operation's success (VM running)."""
    body = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 256}
    t0 = time.perf_counter()
    r = await c.post("/vms", json=body)
    if r.status_code != 202:
        raise RuntimeError(f"create {name}: {r.status_code} {r.text}")
    created.append(r.json()["target_id"])
    op = r.json()
    while op["status"] not in ("succeeded", "failed", "cancelled"):
        op = (await c.get(f"/operations/{op['id']}", params={"wait": 120})).json()
    elapsed = time.perf_counter() - t0
    vm = (await c.get(f"/vms/{name}")).json()
    if op["status"] != "succeeded" or vm["power_state"] != "running":
        raise RuntimeError(f"create {name}: {op} {vm}")
    return elapsed


def virsh_create(template: str, base: str, work: Path, domains: list[str]) -> tuple[float, float]:
    """(seconds for define + start, seconds for the overlay) of a copy of Corral's domain."""
    name = f"bench-virsh-{uuid.uuid4().hex[:12]}"
    disk, log, xml_file = work / f"{name}.qcow2", work / f"{name}.log", work / f"{name}.xml"
    t0 = time.perf_counter()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                    str(disk)], check=True)  # fmt: skip
    overlay = time.perf_counter() - t0
    xml_file.write_text(baseline_xml(template, name, disk, log))
    domains.append(name)
    t0 = time.perf_counter()
    virsh("define", str(xml_file))
    virsh("start", name)
    elapsed = time.perf_counter() - t0
    if "running" not in virsh("domstate", name):
        raise RuntimeError(f"{name} is not running")
    return elapsed, overlay


async def run(ctx: BenchContext) -> list[Figure]:
    runs = 1 if ctx.quick else 5
    image = test_image()
    work = ctx.workdir
    created: list[str] = []  # Corral VM ids
    domains: list[str] = []  # baseline domains
    proc, url, password = start_up(work / "up", driver="libvirt")
    try:
        async with api(url, password) as c:
            await upload_image(c, "tiny", image)
            await corral_create(c, "warm-up", created)  # fills the agent's image cache
            vm_id = created[0]
            template = virsh("dumpxml", "--inactive", f"corral-{vm_id}")
            disk = ET.fromstring(template).find("./devices/disk[@device='disk']/source")
            base = backing_file(disk.get("file", "") if disk is not None else "")
            await ok(c, "DELETE", "/vms/warm-up")
            corral_s, virsh_s, overlay_s = [], [], []
            for i in range(runs):
                corral_s.append(await corral_create(c, f"lat-{i}", created))
                await ok(c, "DELETE", f"/vms/lat-{i}")
                define_start, overlay = virsh_create(template, base, work, domains)
                virsh_s.append(define_start)
                overlay_s.append(overlay)
                remove_domain(domains[-1])
                ctx.say(f"run {i}: corral {corral_s[-1]:.3f} s, virsh define+start "
                        f"{define_start:.3f} s (+ overlay {overlay:.3f} s)")  # fmt: skip
    finally:
        proc.stop()  # VMs survive a stop: remove whatever is left
        for vm in created:
            remove_domain(f"corral-{vm}")
        for name in domains:
            remove_domain(name)
    note = (f"median of {runs}; tiny test image under TCG; baseline + its qemu-img overlay "
            f"{median(overlay_s) * 1000:.0f} ms = {median(virsh_s) + median(overlay_s):.3f} s")  # fmt: skip
    return [
        Figure("latency.create_to_running", median(corral_s), "s", TARGET, median(virsh_s),
               "virsh define + virsh start", note),
    ]  # fmt: skip
