"""ISO images, the CD-ROM drive and the boot order through the REST API (server + simulated
agent over HTTP): ISO detection on upload, insert/eject live and stopped, boot order sent in the
spec, refusals (disk image in the drive, image in use, bad boot order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from corral.agent.compute.simulator import SimulatorDriver
from tests.integration.test_vm_sim import make_qcow2
from tests.support.iso import make_iso
from tests.support.stack import api_client, running_stack, upload_image, wait_op


def sim_vm(stack: Any, vm_id: str) -> Any:
    """The simulated VM ``vm_id`` on whichever host runs it."""
    for runtime in stack.agent.runtimes.values():
        compute: SimulatorDriver = runtime.compute
        if vm_id in compute.vms:
            return compute.vms[vm_id], runtime
    raise AssertionError(f"VM {vm_id} is on no host")


async def ok(c: httpx.AsyncClient, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    op = await wait_op(c, r.json())
    assert op["status"] == "succeeded", op
    return op


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def test_iso_insert_eject_boot_order_and_refusals(tmp_path: Path) -> None:
    iso_file = tmp_path / "install.iso"
    iso_file.write_bytes(make_iso({"README.TXT": b"corral\n"}))
    async with running_stack(tmp_path, sim_hosts=1) as stack, api_client(stack) as c:
        disk = await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        iso = await upload_image(c, "installer", iso_file)
        assert (iso["status"], iso["format"]) == ("ready", "iso")
        assert iso["size_bytes"] == iso_file.stat().st_size
        await ok(c, await c.post("/vms", json={"name": "web1", "image": "tiny", "cpus": 1,
                                                "memory_mb": 256}))  # fmt: skip
        vm_id = (await c.get("/vms/web1")).json()["id"]
        sim, runtime = sim_vm(stack, vm_id)
        assert sim.cdrom is None and sim.spec.boot == ["hd"] and sim.state == "running"

        # Insert into the running VM: the agent fetches and checks the ISO, the spec has it.
        await ok(c, await c.post("/vms/web1/cdrom", json={"image": "installer"}))
        sim, runtime = sim_vm(stack, vm_id)
        assert sim.cdrom is not None and sim.cdrom.endswith(f"/images/{iso['id']}.iso")
        stored = runtime.specs.get(vm_id)
        assert stored.spec.cdrom.id == iso["id"] and stored.spec.cdrom.format == "iso"
        assert stored.cdrom_path == sim.cdrom
        assert runtime.volumes.calls["image.media"] == 1

        shown = (await c.get("/vms/web1")).json()
        assert shown["cdrom_image_id"] == iso["id"] and shown["boot_order"] == ["hd"]
        listed = (await c.get("/vms", params={"q": f"cdrom_image_id={iso['id']}"})).json()
        assert [v["name"] for v in listed["items"]] == ["web1"]
        # An ISO is no root disk
        r = await c.post("/vms", json={"name": "x", "image": "installer", "cpus": 1,
                                       "memory_mb": 256})  # fmt: skip
        assert error(r) == (422, "invalid_input") and "CD-ROM" in r.text
        assert (await c.get("/vms/x")).status_code == 404

        # An image in a drive cannot be deleted; the error names the VM.
        r = await c.delete("/images/installer")
        assert error(r) == (409, "in_use") and r.json()["error"]["context"]["vms"] == ["web1"]

        # Boot order: stored, sent in the spec (a redefinition keeps the disc).
        await ok(c, await c.post("/vms/web1/boot-order", json={"boot": ["cdrom", "hd"]}))
        sim, runtime = sim_vm(stack, vm_id)
        assert sim.spec.boot == ["cdrom", "hd"] and sim.cdrom is not None
        assert (await c.get("/vms/web1")).json()["boot_order"] == ["cdrom", "hd"]
        assert sim.spec.cdrom is not None and sim.spec.cdrom.id == iso["id"]

        # Eject (twice: an empty drive stays empty), then the image can go.
        await ok(c, await c.delete("/vms/web1/cdrom"))
        await ok(c, await c.delete("/vms/web1/cdrom"))
        sim, runtime = sim_vm(stack, vm_id)
        assert sim.cdrom is None and runtime.specs.get(vm_id).spec.cdrom is None

        # Stopped VM: insert and boot order change the definition.
        await ok(c, await c.post("/vms/web1/stop"))
        await ok(c, await c.post("/vms/web1/cdrom", json={"image": iso["id"]}))
        await ok(c, await c.post("/vms/web1/boot-order", json={"boot": ["hd"]}))
        sim, _ = sim_vm(stack, vm_id)
        assert sim.cdrom is not None and sim.spec.boot == ["hd"] and sim.state == "stopped"

        # Refusals.
        r = await c.post("/vms/web1/cdrom", json={"image": "tiny"})
        assert error(r) == (422, "invalid_input") and "not an ISO" in r.text
        r = await c.post("/vms/web1/cdrom", json={"image": "nope"})
        assert error(r) == (404, "not_found")
        for boot in ([], ["hd", "hd"], ["floppy"], ["cdrom", "hd", "hd"]):
            r = await c.post("/vms/web1/boot-order", json={"boot": boot})
            assert error(r) == (422, "invalid_input"), boot
        r = await c.post("/vms/nope/cdrom", json={"image": "installer"})
        assert error(r) == (404, "not_found")

        # A failing agent puts the old medium back (in the row and on the host).
        sim, runtime = sim_vm(stack, vm_id)
        before = sim.cdrom
        runtime.compute.fail_next("vm.set_cdrom")
        r = await c.delete("/vms/web1/cdrom")
        assert r.status_code == 202
        assert (await wait_op(c, r.json()))["status"] == "failed"
        sim, runtime = sim_vm(stack, vm_id)
        assert sim.cdrom == before
        r = await c.delete("/images/installer")
        assert error(r) == (409, "in_use")

        await ok(c, await c.delete("/vms/web1/cdrom"))
        await ok(c, await c.delete("/images/installer"))
        assert disk["format"] == "qcow2"
