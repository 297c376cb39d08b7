"""Dump the OpenAPI document (``--write PATH``) or fail if the committed one drifted (``--check PATH``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def document() -> dict[str, Any]:
    from corral.server.app import create_app

    spec: dict[str, Any] = create_app().openapi()
    return spec


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        return 0
    current = args.check.read_text() if args.check.exists() else ""
    if current != text:
        print(f"{args.check} is out of date: run `make gen` and commit it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
