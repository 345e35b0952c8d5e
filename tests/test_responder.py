"""files_app.responder: the sans-io core that decides every download answer."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.cache import get_conditional_response
from hypothesis import given, settings
from hypothesis import strategies as st

from files_app.ranges import ByteRange
from files_app.responder import FileInfo, Plan, http_date, plan_response, reads

no_db = pytest.mark.django_db(databases=[])

ETAG = '"abc"'
MODIFIED = 1_700_000_000
INFO = FileInfo(
    size=10_000,
    filename="notes.txt",
    content_type="text/plain",
    etag=ETAG,
    last_modified=MODIFIED,
    cache_control="public, max-age=300",
)


def _plan(method: str = "GET", info: FileInfo = INFO, **headers: Any) -> Plan:
    lower = {name.lower().replace("_", "-"): str(value) for name, value in headers.items()}
    return plan_response(method, lambda name: lower.get(name.lower()), info, boundary=lambda: "B")


def test_it_imports_nothing_from_django() -> None:
    code = (
        "import sys, files_app.responder; "
        "print(sorted(m for m in sys.modules if m.startswith('django')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_plain_get() -> None:
    plan = _plan()
    assert plan.status == 200
    assert plan.header("Content-Length") == "10000"
    assert plan.header("ETag") == ETAG
    assert plan.header("Last-Modified") == http_date(MODIFIED)
    assert plan.header("Accept-Ranges") == "bytes"
    assert plan.header("Content-Disposition") == 'inline; filename="notes.txt"'
    assert plan.header("Content-Security-Policy") is None
    assert plan.body == [ByteRange(0, 10_000)]


def test_head_plans_no_body() -> None:
    plan = _plan("HEAD", range="bytes=0-9")
    assert (plan.status, plan.body, plan.header("Content-Length")) == (200, [], "10000")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Range": "bytes=0-9"}, 206),
        ({"Range": "bytes=0-9,100-109"}, 206),
        ({"Range": "bytes=20000-"}, 416),
        ({"Range": "bytes=0-9", "If-Range": ETAG}, 206),
        ({"Range": "bytes=0-9", "If-Range": '"other"'}, 200),
        ({"Range": "bytes=0-9", "If-Range": http_date(MODIFIED)}, 206),
        ({"If-Match": '"other"', "Range": "bytes=0-9"}, 412),
        ({"If-None-Match": ETAG, "Range": "bytes=0-9"}, 304),
        ({"If-None-Match": f"W/{ETAG}"}, 304),
        ({"If-Modified-Since": http_date(MODIFIED)}, 304),
        ({"If-Modified-Since": http_date(MODIFIED - 1)}, 200),
        ({"If-Unmodified-Since": http_date(MODIFIED - 1)}, 412),
        ({"If-Match": "*"}, 200),
    ],
)
def test_statuses(headers: dict[str, str], status: int) -> None:
    assert _plan("GET", INFO, **headers).status == status


def test_a_416_names_the_size_and_says_why() -> None:
    plan = _plan(range="bytes=20000-")
    assert plan.header("Content-Range") == "bytes */10000"
    assert plan.body and b"Range Not Satisfiable" in plan.body[0]  # type: ignore[operator]


def test_a_304_carries_the_validators_and_no_length() -> None:
    plan = _plan(if_none_match=ETAG)
    assert dict(plan.headers) == {
        "ETag": ETAG,
        "Last-Modified": http_date(MODIFIED),
        "Cache-Control": "public, max-age=300",
    }


def test_multipart_in_the_order_asked() -> None:
    plan = _plan(range="bytes=5000-5099,0-99")
    assert plan.header("Content-Type") == "multipart/byteranges; boundary=B"
    assert reads(plan.body) == [ByteRange(5000, 5100), ByteRange(0, 100)]
    assert int(plan.header("Content-Length") or 0) == sum(
        len(s) if isinstance(s, bytes) else s.length for s in plan.body
    )


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/png", True),
        ("text/html ; charset=utf-8", False),
        ("image/svg+xml", False),
        ("text/plain\r\nX: y", False),
    ],
)
def test_active_types_are_sandboxed_attachments(content_type: str, inline: bool) -> None:
    info = FileInfo(size=1, filename="f", content_type=content_type)
    plan = _plan(info=info)
    assert plan.header(
        "Content-Disposition",
    ).startswith("inline" if inline else "attachment")  # type: ignore[union-attr]
    assert (plan.header("Content-Security-Policy") is None) is inline
    assert "\n" not in str(plan.headers)


def test_a_forced_attachment_and_an_empty_file() -> None:
    info = FileInfo(size=0, filename='a"b.png', content_type="image/png", as_attachment=True)
    plan = _plan(info=info, range="bytes=0-")
    assert plan.status == 200 and plan.body == []
    assert (
        plan.header("Content-Disposition")
        == 'attachment; filename="a\\"b.png"; filename*=utf-8\'\'a%22b.png'
    )


TAGS = st.sampled_from([ETAG, f"W/{ETAG}", '"other"', "*", '"abc", "def"', "garbage", ""])
DATES = st.sampled_from(
    [http_date(MODIFIED + delta) for delta in (-86400, -1, 0, 1, 86400)] + ["not a date", ""]
)


@no_db
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["GET", "HEAD"]),
    st.one_of(st.none(), TAGS),
    st.one_of(st.none(), DATES),
    st.one_of(st.none(), TAGS),
    st.one_of(st.none(), DATES),
    st.sampled_from([ETAG, f"W/{ETAG}", None]),
    st.sampled_from([MODIFIED, None]),
)
def test_property_preconditions_agree_with_djangos(
    method: str,
    if_match: str | None,
    if_unmodified_since: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    last_modified: int | None,
) -> None:
    headers = {
        "HTTP_IF_MATCH": if_match,
        "HTTP_IF_UNMODIFIED_SINCE": if_unmodified_since,
        "HTTP_IF_NONE_MATCH": if_none_match,
        "HTTP_IF_MODIFIED_SINCE": if_modified_since,
    }
    meta: dict[str, Any] = {k: v for k, v in headers.items() if v is not None}
    request = RequestFactory().generic(method, "/", **meta)
    base = HttpResponse()
    django = get_conditional_response(
        request, etag=etag, last_modified=last_modified, response=base
    )
    assert django is not None
    info = FileInfo(size=10, filename="f", etag=etag, last_modified=last_modified)
    ours = plan_response(method, request.headers.get, info)
    expected = 200 if django is base else django.status_code
    assert (ours.status if ours.status in (304, 412) else 200) == expected
