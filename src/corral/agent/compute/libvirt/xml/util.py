"""Helpers shared by the element builders: child creation and rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append ``<tag attrs>text</tag>`` to ``parent`` and return it."""
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def render(element: ET.Element) -> str:
    """Serialize ``element`` as indented XML text (stable, for golden files and libvirt)."""
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode") + "\n"
