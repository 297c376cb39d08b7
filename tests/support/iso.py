"""A minimal ISO 9660 writer for tests (no genisoimage needed): one root directory of files.

Names are ISO level 1 style (``HELLO.TXT``, stored as ``HELLO.TXT;1``); Linux shows them in
lower case (``hello.txt``). The image is what ``Images`` detect as format ``iso``: "CD001" at
byte 0x8001, the primary volume descriptor in sector 16.
"""

from __future__ import annotations

import struct

SECTOR = 2048


def _both16(n: int) -> bytes:
    return struct.pack("<H", n) + struct.pack(">H", n)


def _both32(n: int) -> bytes:
    return struct.pack("<I", n) + struct.pack(">I", n)


def _record(ident: bytes, extent: int, size: int, directory: bool) -> bytes:
    length = 33 + len(ident) + (1 - len(ident) % 2)
    rec = bytes([length, 0]) + _both32(extent) + _both32(size)
    rec += bytes([126, 1, 1, 0, 0, 0, 0])  # 2026-01-01 00:00:00 UTC
    rec += bytes([2 if directory else 0, 0, 0]) + _both16(1) + bytes([len(ident)]) + ident
    return rec.ljust(length, b"\x00")


def _text(value: str, size: int) -> bytes:
    return value.encode("ascii").ljust(size, b" ")


def make_iso(files: dict[str, bytes], volume_id: str = "CORRAL") -> bytes:
    """An ISO 9660 image holding ``files`` (upper-case 8.3 names) in its root directory."""
    root_sector, first_file = 20, 21
    entries: list[tuple[bytes, int, bytes]] = []
    sector = first_file
    for name, data in sorted(files.items()):
        entries.append((f"{name.upper()};1".encode("ascii"), sector, data))
        sector += max(1, -(-len(data) // SECTOR))
    total = sector
    root = _record(b"\x00", root_sector, SECTOR, True) + _record(b"\x01", root_sector, SECTOR, True)
    for ident, extent, data in entries:
        root += _record(ident, extent, len(data), False)
    assert len(root) <= SECTOR, "too many files for one directory sector"
    path_l = bytes([1, 0]) + struct.pack("<I", root_sector) + struct.pack("<H", 1) + b"\x00\x00"
    path_m = bytes([1, 0]) + struct.pack(">I", root_sector) + struct.pack(">H", 1) + b"\x00\x00"
    date = b"0" * 16 + b"\x00"
    pvd = bytes([1]) + b"CD001" + bytes([1, 0]) + _text("LINUX", 32) + _text(volume_id, 32)
    pvd += bytes(8) + _both32(total) + bytes(32) + _both16(1) + _both16(1) + _both16(SECTOR)
    pvd += _both32(10) + struct.pack("<I", 18) + bytes(4) + struct.pack(">I", 19) + bytes(4)
    pvd += _record(b"\x00", root_sector, SECTOR, True)
    pvd += _text("", 128 * 4) + _text("", 37 * 3) + date * 4 + bytes([1])
    assert len(pvd) == 882, len(pvd)
    image = bytearray(total * SECTOR)
    image[16 * SECTOR : 16 * SECTOR + len(pvd)] = pvd
    image[17 * SECTOR : 17 * SECTOR + 7] = bytes([255]) + b"CD001" + bytes([1])
    image[18 * SECTOR : 18 * SECTOR + len(path_l)] = path_l
    image[19 * SECTOR : 19 * SECTOR + len(path_m)] = path_m
    image[root_sector * SECTOR : root_sector * SECTOR + len(root)] = root
    for _, extent, data in entries:
        image[extent * SECTOR : extent * SECTOR + len(data)] = data
    return bytes(image)
