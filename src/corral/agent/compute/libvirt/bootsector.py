"""A 512-byte BIOS boot sector that proves a guest runs and obeys ACPI: used by the KVM probe
and by tests that need a guest which powers itself off or shuts down gracefully."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from corral.api.errors import InvalidInput

READY_MARKER = "GUEST-READY"
"""What the boot sector prints on COM1 (0x3f8) once it runs."""

ASSEMBLY = """\
.code16
.globl _start
_start:
  cli
  xor %ax, %ax
  mov %ax, %ds
  mov %ax, %ss
  mov $0x7c00, %sp
  mov $0x7c00 + (msg - _start), %si
  mov $0x3f8, %dx
1: lodsb
  test %al, %al
  jz 2f
  out %al, (%dx)
  jmp 1b
2: in $0xa1, %al
  or $0x02, %al
  out %al, $0xa1
  mov $0x602, %dx
  mov $0x0100, %ax
  out %ax, (%dx)
  mov (0x7c00 + (limit - _start)), %cx
3: mov $0x600, %dx
  in (%dx), %ax
  test $0x0100, %ax
  jnz off
  jcxz 4f
  dec %cx
  jz off
4: sti
  hlt
  jmp 3b
off:
  mov $0x604, %dx
  mov $0x2000, %ax
  out %ax, (%dx)
  cli
  hlt
  jmp off
limit: .word 0
msg: .asciz "GUEST-READY\\r\\n"
"""
"""The source of ``_CODE`` (GNU as; ``tests/unit/libvirt`` reassembles it and compares). It prints
the marker on COM1, masks the SCI (IRQ 9) at the slave PIC, enables the ACPI power button event
(PM1_EN), then sleeps (``hlt``) between timer interrupts until the power button status (PM1_STS)
is set or ``limit`` wake-ups have passed, and then writes SLP_EN with sleep type 0 (S5, soft
off) to PM1_CNT. SeaBIOS puts the ACPI PM registers at 0x600 on QEMU's pc machine."""

_CODE = bytes.fromhex(
    "fa31c08ed88ed0bc007cbe487cbaf803ac84c07403eeebf8e4a10c02e6a1ba0206b80001ef8b0e467cba0006"
    "eda900017509e303497404fbf4ebeeba0406b80020effaf4ebf5000047554553542d52454144590d0a00"
)
_LIMIT_OFFSET = 0x46
DISK_BYTES = 1024 * 1024
"""Size of the raw disk: SeaBIOS does not boot a disk of a single sector."""


def boot_sector(*, poweroff_after_ticks: int = 0) -> bytes:
    """The boot sector. It prints ``GUEST-READY``, then powers the guest off when the ACPI power
    button is pressed (a graceful shutdown request) or after ``poweroff_after_ticks`` timer
    interrupts (about 18 per second under SeaBIOS; 1 = at once; 0 = never)."""
    if not 0 <= poweroff_after_ticks <= 0xFFFF:
        raise InvalidInput("poweroff_after_ticks must fit in 16 bits", ticks=poweroff_after_ticks)
    sector = bytearray(512)
    sector[: len(_CODE)] = _CODE
    sector[_LIMIT_OFFSET : _LIMIT_OFFSET + 2] = struct.pack("<H", poweroff_after_ticks)
    sector[510:] = b"\x55\xaa"
    return bytes(sector)


def write_boot_disk(path: Path, *, poweroff_after_ticks: int = 0) -> None:
    """Write a 1 MiB sparse raw disk holding ``boot_sector(...)``, readable by QEMU (0644)."""
    with path.open("wb") as f:
        f.write(boot_sector(poweroff_after_ticks=poweroff_after_ticks))
        f.truncate(DISK_BYTES)
    os.chmod(path, 0o644)
