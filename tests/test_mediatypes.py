"""files_app.mediatypes: media types parsed and normalised by RFC 9110 §8.3.1."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from files_app.mediatypes import MediaType, is_passive, normalize, parse


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/plain", MediaType("text", "plain")),
        ("Text/HTML ; Charset=UTF-8", MediaType("text", "html", (("charset", "utf-8"),))),
        ("a/b;c=d;e=f", MediaType("a", "b", (("c", "d"), ("e", "f")))),
        ('a/b; c="x \\"y\\" z"', MediaType("a", "b", (("c", 'x "y" z'),))),
        ("a/b; c=D", MediaType("a", "b", (("c", "D"),))),  # only charset is folded
        ("a/b;", MediaType("a", "b")),
        ("a/b ; ; ", MediaType("a", "b")),
        ("\ta/b\t", MediaType("a", "b")),
    ],
)
def test_parse(value: str, expected: MediaType) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "text",
        "text/",
        "/plain",
        "te xt/plain",
        "text/plain; a",
        "text/plain; a=",
        "text/plain; =b",
        'text/plain; a="b',
        "text/plain; a=b c",
        "text/plain\r\n",
        "text/plain\nx",
        "text/plain\x00",
        "t\u00e9xt/plain",
        "text/plain; a=\u00e9",
        "text/plain, text/html",
        "text/plain" + "; a=b" * 300,
    ],
)
def test_parse_refuses(value: str | None) -> None:
    assert parse(value) is None


def test_normalize() -> None:
    assert normalize('TEXT/Plain ;charset="ISO-8859-1"') == "text/plain; charset=iso-8859-1"
    assert normalize('a/b; c="needs quotes"') == 'a/b; c="needs quotes"'
    with pytest.raises(ValueError, match="is not a media type"):
        normalize("text/plain\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="longer than 255"):
        normalize("a/" + "b" * 300)


@pytest.mark.parametrize(
    ("value", "passive"),
    [
        ("image/png", True),
        ("IMAGE/JPEG", True),
        ("video/mp4", True),
        ("audio/mpeg", True),
        ("application/pdf", True),
        ("text/plain; charset=utf-8", True),
        ("image/svg+xml", False),
        ("video/x-thing+xml", False),
        ("text/html", False),
        ("application/xhtml+xml", False),
        ("text/xml", False),
        ("application/javascript", False),
        ("application/json", False),
        ("application/octet-stream", False),
        ("not a type", False),
    ],
)
def test_is_passive(value: str, passive: bool) -> None:
    assert is_passive(parse(value)) is passive


@given(st.text(max_size=80))
def test_property_parse_never_raises_and_normal_forms_are_stable(value: str) -> None:
    media_type = parse(value)
    if media_type is None:
        return
    normal = str(media_type)
    assert parse(normal) == media_type
    assert normal.isascii() and "\r" not in normal and "\n" not in normal


@given(
    st.from_regex(r"[a-z]{1,8}/[a-z+.-]{1,8}", fullmatch=True),
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{1,6}", fullmatch=True),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10),
        ),
        max_size=3,
    ),
)
def test_property_any_parameter_value_round_trips(
    essence: str, parameters: list[tuple[str, str]]
) -> None:
    kind, subtype = essence.split("/")
    media_type = MediaType(kind, subtype, tuple(parameters))
    parsed = parse(str(media_type))
    assert parsed is not None
    assert parsed.essence == essence
    assert [name for name, _ in parsed.parameters] == [name for name, _ in parameters]
    for (name, value), (_, got) in zip(parameters, parsed.parameters, strict=True):
        assert got == (value.lower() if name == "charset" else value)
