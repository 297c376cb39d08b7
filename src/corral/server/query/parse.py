"""Parse the ``q``, ``sort`` and ``fields`` parameters of list endpoints (pure, no SQL).

Grammar of ``q`` (``,`` is a top-level AND; spaces around tokens are ignored)::

    q        := cond ("," cond)*
    cond     := path op rhs
    path     := ident ("." ident)*             ident := [A-Za-z_][A-Za-z0-9_]*
    op       := "=" | "!=" | ">" | ">=" | "<" | "<=" | "~"
    rhs      := value                          field = value, field > value, ...
              | "in:" value ("|" value)*       after "=": in; after "!=": not-in
              | "not-in:" value ("|" value)*   after "=" only
              | "null"                         after "=": is null; after "!=": is not null
    value    := bare | '"' (char | '\\' char)* '"'

``field~pattern`` is a case-insensitive match of the whole value where ``*`` stands for any run of
characters; every other character, ``%`` and ``_`` included, is literal (a quoted ``\\*`` is a
literal star). The parser turns it into a SQL LIKE pattern with ``\\`` as escape character.

A bare value runs to the next ``,`` (or ``|`` in a list), trimmed; it may not be empty nor contain
``"``; a ``|`` outside a list is refused so ``a|b`` is never silently taken literally. Quote a value
to put ``,`` ``|`` ``"`` (as ``\\"``), surrounding spaces, or to compare with the literal text
``null`` / ``in:...`` (``name="null"``).

Every error is ``InvalidQuery`` whose message names the condition and whose ``context.field`` is the
field path, or the raw condition text when no field could be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from corral.api.errors import InvalidQuery

MAX_TEXT = 4096
"""Longest ``q`` / ``sort`` / ``fields`` text accepted."""
MAX_CONDITIONS = 50
MAX_VALUES = 100
"""Most values in one ``in:`` / ``not-in:`` list."""
MAX_DEPTH = 5
"""Most segments in a field path (``host.cluster.zone.name`` has 4)."""
MAX_SORT_KEYS = 8

_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPS = ("!=", ">=", "<=", "=", ">", "<", "~")


class Op(StrEnum):
    eq = "eq"
    ne = "ne"
    gt = "gt"
    ge = "ge"
    lt = "lt"
    le = "le"
    in_ = "in"
    not_in = "not_in"
    like = "like"
    is_null = "is_null"


_SYMBOLS = {"=": Op.eq, "!=": Op.ne, ">": Op.gt, ">=": Op.ge, "<": Op.lt, "<=": Op.le, "~": Op.like}

Value = str | list[str] | bool | None


@dataclass(frozen=True)
class Condition:
    """One condition: ``value`` is a ``str`` for comparisons, a SQL LIKE pattern (``\\`` escapes)
    for ``like``, a non-empty ``list[str]`` for ``in`` / ``not_in``, and for ``is_null`` ``True``
    (is null) or ``False`` (is not null)."""

    path: tuple[str, ...]
    op: Op
    value: Value

    @property
    def field(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class SortKey:
    path: tuple[str, ...]
    descending: bool = False

    @property
    def field(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class _Text:
    """A scanned value: its characters, each with whether it was backslash-escaped."""

    chars: tuple[tuple[str, bool], ...]
    quoted: bool

    @property
    def plain(self) -> str:
        return "".join(c for c, _ in self.chars)

    @property
    def like(self) -> str:
        out = []
        for c, escaped in self.chars:
            if c == "*":
                out.append("*" if escaped else "%")
            elif c in "%_\\":
                out.append("\\" + c)
            else:
                out.append(c)
        return "".join(out)


class _Parser:
    """A cursor over the ``q`` text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.start = 0
        self.field: str | None = None

    def fail(self, why: str) -> InvalidQuery:
        end = self.text.find(",", self.start)
        raw = self.text[self.start : end if end >= 0 else len(self.text)].strip()
        if not raw:
            return InvalidQuery("invalid q: empty condition (stray ',')", field="q", condition="")
        return InvalidQuery(
            f"invalid condition {raw!r}: {why}", field=self.field or raw, condition=raw
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end_of_cond(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == ","

    def conditions(self) -> list[Condition]:
        out: list[Condition] = []
        while True:
            self.start, self.field = self.pos, None
            if len(out) == MAX_CONDITIONS:
                raise InvalidQuery(
                    f"too many conditions (at most {MAX_CONDITIONS})",
                    field="q",
                    limit=MAX_CONDITIONS,
                )
            out.append(self.condition())
            if self.pos >= len(self.text):
                return out
            self.pos += 1  # the ","

    def condition(self) -> Condition:
        self.skip_ws()
        m = _PATH.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected a field name")
        path = tuple(m.group().split("."))
        self.field, self.pos = m.group(), m.end()
        if len(path) > MAX_DEPTH:
            raise self.fail(f"field paths have at most {MAX_DEPTH} parts")
        self.skip_ws()
        sym = next((s for s in _OPS if self.text.startswith(s, self.pos)), None)
        if sym is None:
            raise self.fail("expected an operator (= != > >= < <= ~) after the field")
        self.pos += len(sym)
        self.skip_ws()
        op, value = self.rhs(sym)
        self.skip_ws()
        if not self.at_end_of_cond():
            raise self.fail("unexpected text after the value (quote values containing ',')")
        return Condition(path, op, value)

    def rhs(self, sym: str) -> tuple[Op, Value]:
        for prefix, op in (("in:", Op.in_), ("not-in:", Op.not_in)):
            if self.text.startswith(prefix, self.pos):
                if sym == "!=" and op is Op.in_:
                    op = Op.not_in
                elif sym != "=":
                    raise self.fail(f"'{prefix}' needs '=' (quote the value to compare the text)")
                self.pos += len(prefix)
                return op, self.values()
        if self.text.startswith("null", self.pos):
            save = self.pos
            self.pos += 4
            self.skip_ws()
            if self.at_end_of_cond():
                if sym not in ("=", "!="):
                    raise self.fail(f"null works with = and != only, not {sym}")
                return Op.is_null, sym == "="
            self.pos = save
        text = self.value(in_list=False)
        return _SYMBOLS[sym], (text.like if sym == "~" else text.plain)

    def values(self) -> list[str]:
        out = [self.value(in_list=True).plain]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            self.skip_ws()
            out.append(self.value(in_list=True).plain)
            if len(out) > MAX_VALUES:
                raise self.fail(f"at most {MAX_VALUES} values in a list")
        return out

    def value(self, *, in_list: bool) -> _Text:
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return self.quoted()
        begin = self.pos
        stops = ",|" if in_list else ","
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            c = self.text[self.pos]
            if c == '"':
                raise self.fail('quote the whole value: "..."')
            if c == "|":
                raise self.fail("'|' separates values only after in: / not-in: (quote it)")
            self.pos += 1
        raw = self.text[begin : self.pos].strip()
        if not raw:
            raise self.fail('missing value (write "" for the empty text)')
        return _Text(tuple((c, False) for c in raw), quoted=False)

    def quoted(self) -> _Text:
        self.pos += 1
        chars: list[tuple[str, bool]] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                chars.append((self.text[self.pos + 1], True))
                self.pos += 2
            elif c == '"':
                self.pos += 1
                self.skip_ws()
                return _Text(tuple(chars), quoted=True)
            else:
                chars.append((c, False))
                self.pos += 1
        raise self.fail("unterminated quoted value")


def _check_size(text: str, param: str) -> None:
    if len(text) > MAX_TEXT:
        raise InvalidQuery(
            f"{param} is too long ({len(text)} characters, at most {MAX_TEXT})",
            field=param,
            limit=MAX_TEXT,
        )


def parse_q(text: str) -> list[Condition]:
    """The conditions of a ``q`` parameter (see the module docstring); ``[]`` for blank text.

    Raises ``InvalidQuery`` (``context.field`` = the field path or raw condition) on bad syntax,
    more than ``MAX_CONDITIONS`` conditions or more than ``MAX_TEXT`` characters.
    """
    _check_size(text, "q")
    if not text.strip():
        return []
    return _Parser(text).conditions()


def _split(text: str, param: str) -> list[str]:
    _check_size(text, param)
    if not text.strip():
        return []
    return [part.strip() for part in text.split(",")]


def _path(raw: str, param: str) -> tuple[str, ...]:
    if not _PATH.fullmatch(raw):
        raise InvalidQuery(f"invalid {param} field {raw!r}", field=raw or param)
    path = tuple(raw.split("."))
    if len(path) > MAX_DEPTH:
        raise InvalidQuery(f"field paths have at most {MAX_DEPTH} parts: {raw!r}", field=raw)
    return path


def parse_fields(text: str) -> list[str]:
    """Dotted field paths of a ``fields`` parameter (``id,name,host.name``), in order, without
    duplicates; ``[]`` for blank text (all fields). Syntax errors raise ``InvalidQuery``."""
    out: list[str] = []
    for raw in _split(text, "fields"):
        _path(raw, "fields")
        if raw not in out:
            out.append(raw)
    if len(out) > MAX_CONDITIONS:
        raise InvalidQuery(f"too many fields (at most {MAX_CONDITIONS})", field="fields")
    return out


def parse_sort(text: str) -> list[SortKey]:
    """Sort keys of a ``sort`` parameter: ``name``, ``-created_at`` (descending), ``+name``, or
    several comma-separated keys, related fields included (``host.cluster.name,-memory_mb``).
    ``[]`` for blank text. Bad syntax, a repeated field or more than ``MAX_SORT_KEYS`` keys raise
    ``InvalidQuery``."""
    out: list[SortKey] = []
    for raw in _split(text, "sort"):
        descending = raw.startswith("-")
        name = raw[1:].strip() if raw[:1] in ("-", "+") else raw
        key = SortKey(_path(name, "sort"), descending)
        if any(k.path == key.path for k in out):
            raise InvalidQuery(f"sort field {name!r} is given twice", field=name)
        out.append(key)
    if len(out) > MAX_SORT_KEYS:
        raise InvalidQuery(f"too many sort keys (at most {MAX_SORT_KEYS})", field="sort")
    return out
