"""The q / sort / fields parsers: every operator, quoting, limits, and errors that name the field."""

from __future__ import annotations

import pytest

from corral.api.errors import InvalidInput
from corral.server.query.parse import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_SORT_KEYS,
    MAX_TEXT,
    MAX_VALUES,
    Condition,
    Op,
    SortKey,
    Value,
    parse_fields,
    parse_q,
    parse_sort,
)


def one(text: str) -> Condition:
    conds = parse_q(text)
    assert len(conds) == 1
    return conds[0]


def error(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_q(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("status=running", Op.eq, "running"),
        ("status!=running", Op.ne, "running"),
        ("memory>1024", Op.gt, "1024"),
        ("memory>=1024", Op.ge, "1024"),
        ("memory<1024", Op.lt, "1024"),
        ("memory<=1024", Op.le, "1024"),
        ("status=in:running|stopped", Op.in_, ["running", "stopped"]),
        ("status!=in:running|stopped", Op.not_in, ["running", "stopped"]),
        ("status=not-in:running", Op.not_in, ["running"]),
        ("status~run*", Op.like, "run%"),
        ("status=null", Op.is_null, True),
        ("status!=null", Op.is_null, False),
    ],
)
def test_each_operator(text: str, op: Op, value: Value) -> None:
    assert one(text) == Condition(("status",) if "status" in text else ("memory",), op, value)


def test_conditions_related_paths_and_spaces() -> None:
    conds = parse_q(" state = running , memory >= 1024,host.cluster.name=c1 ")
    assert conds == [
        Condition(("state",), Op.eq, "running"),
        Condition(("memory",), Op.ge, "1024"),
        Condition(("host", "cluster", "name"), Op.eq, "c1"),
    ]
    assert conds[2].field == "host.cluster.name"


def test_blank_text_is_no_condition() -> None:
    assert parse_q("") == []
    assert parse_q("   ") == []


def test_bare_values_keep_inner_text() -> None:
    assert one("description=hello world").value == "hello world"
    assert one("name=a=b").value == "a=b"
    assert one("created_at>=2024-05-01T10:00:00Z").value == "2024-05-01T10:00:00Z"
    assert one("name=nullable") == Condition(("name",), Op.eq, "nullable")
    assert one("name=in: a | b ").value == ["a", "b"]


def test_quoted_values() -> None:
    assert one('name="a,b"').value == "a,b"
    assert one(r'name="say \"hi\""').value == 'say "hi"'
    assert one('name=" padded "').value == " padded "
    assert one('name=""').value == ""
    assert one('name="null"') == Condition(("name",), Op.eq, "null")
    assert one('name="in:x"') == Condition(("name",), Op.eq, "in:x")
    assert one('name=in:"a|b"|"c,d"|e').value == ["a|b", "c,d", "e"]
    assert parse_q('name="a,b" , cpus=2') == [
        Condition(("name",), Op.eq, "a,b"),
        Condition(("cpus",), Op.eq, "2"),
    ]


def test_like_pattern_translation() -> None:
    assert one("name~*web*").value == "%web%"
    assert one("name~db_1").value == r"db\_1"
    assert one("error~100%").value == r"100\%"
    assert one(r'name~"a\*b*"').value == "a*b%"
    assert one(r'name~"back\\slash"').value == "back\\\\slash"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("memory", "memory", "operator"),
        ("memory 1024", "memory", "operator"),
        ("host-name=x", "host", "operator"),
        ("memory>=", "memory", "missing value"),
        ("name=a|b", "name", "'|'"),
        ('name=a"b', "name", "quote"),
        ('name="abc', "name", "unterminated"),
        ('name="a"b', "name", "unexpected text"),
        ("memory>null", "memory", "null works with = and !="),
        ("name~in:a", "name", "needs '='"),
        ("name!=not-in:a", "name", "needs '='"),
        ("name=in:a|", "name", "missing value"),
        ("a.b.c.d.e.f=1", "a.b.c.d.e.f", f"at most {MAX_DEPTH}"),
        ("=running", "=running", "field name"),
        ("9lives=1", "9lives=1", "field name"),
    ],
)
def test_errors_name_the_field(text: str, field: str, words: str) -> None:
    err = error(f"cpus=1,{text},cpus=2")
    assert err.context["field"] == field
    assert words in err.message
    assert repr(text) in err.message  # the offending condition, not the whole q


def test_stray_commas() -> None:
    for text in ("a=1,,b=2", "a=1,", ",a=1"):
        err = error(text)
        assert err.context["field"] == "q"
        assert "empty condition" in err.message


def test_limits() -> None:
    assert len(parse_q(",".join(["cpus=1"] * MAX_CONDITIONS))) == MAX_CONDITIONS
    err = error(",".join(["cpus=1"] * (MAX_CONDITIONS + 1)))
    assert err.context["field"] == "q" and str(MAX_CONDITIONS) in err.message
    assert one("name=" + "x" * (MAX_TEXT - 5)).value == "x" * (MAX_TEXT - 5)
    err = error("name=" + "x" * (MAX_TEXT - 4))
    assert err.context == {"field": "q", "limit": MAX_TEXT}
    assert one("n=in:" + "|".join("v" * MAX_VALUES)).value == ["v"] * MAX_VALUES
    assert error("n=in:" + "|".join("v" * (MAX_VALUES + 1))).context["field"] == "n"


def test_parse_sort() -> None:
    assert parse_sort("") == []
    assert parse_sort("name") == [SortKey(("name",))]
    assert parse_sort("-created_at") == [SortKey(("created_at",), descending=True)]
    assert parse_sort(" host.cluster.name , -memory,+cpus") == [
        SortKey(("host", "cluster", "name")),
        SortKey(("memory",), descending=True),
        SortKey(("cpus",)),
    ]


@pytest.mark.parametrize(
    ("text", "field"),
    [("name,-name", "name"), ("na me", "na me"), ("name,", "sort"), ("--x", "-x")],
)
def test_parse_sort_errors(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_sort(text)
    assert info.value.context["field"] == field


def test_parse_sort_limits() -> None:
    assert len(parse_sort(",".join(f"f{i}" for i in range(MAX_SORT_KEYS)))) == MAX_SORT_KEYS
    with pytest.raises(InvalidInput):
        parse_sort(",".join(f"f{i}" for i in range(MAX_SORT_KEYS + 1)))


def test_parse_fields() -> None:
    assert parse_fields("") == []
    assert parse_fields("id, name,host.name,name") == ["id", "name", "host.name"]
    with pytest.raises(InvalidInput) as info:
        parse_fields("id,host..name")
    assert info.value.context["field"] == "host..name"
    with pytest.raises(InvalidInput):
        parse_fields("x" * (MAX_TEXT + 1))
