"""The HTTP range cases of tests/data/range_cases.json, the files they run against, and one
checker that judges a response the same way whether it came from Django's test client or
from a real server.
"""

from __future__ import annotations

import email.message
import email.parser
import email.utils
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CASES_PATH = Path(__file__).parent / "data" / "range_cases.json"
GiB = 2**30

# Statuses a download view may answer with (docs/design.md, "Tests").
VIEW_STATUSES = frozenset({200, 206, 304, 412, 416})

# Served as attachments by tests/urls_attachment.py; the name is part of the case.
ATTACHMENT_NAMES = {"K01": "report.pdf", "K03": 'a"b\\c.txt'}

# Where a case allows more than one status, what our view answers and why. Pinned by
# test_views.test_view_picks_the_documented_alternative so a change is a deliberate one.
CHOSEN_STATUS = {
    # ranges.py: a suffix longer than the file selects all of it; still 206 (players want 206).
    "B15": 206,
    # ranges.py: a huge first-pos is simply past the end: nothing satisfiable -> 416.
    "C05": 416,
    # ranges.py drops the unsatisfiable spec and serves the other one as a single part.
    "C07": 206,
    # RFC 9110 §14.2: an invalid Range header is ignored -> 200 with the whole file.
    "D01": 200,
    "D03": 200,
    "D05": 200,
    "D07": 200,
    "D09": 200,
    "D11": 200,
    "D13": 200,
    # Two parts 80+ bytes apart stay two parts (COALESCE_GAP = 80).
    "E01": 206,
    # 0-1 and 5-6 are < 80 bytes apart: coalesced into one part "bytes 0-6/10000".
    "E03": 206,
    # The empty list element is ignored (RFC 9110 §5.6.1.2).
    "E05": 206,
    # Overlapping parts are coalesced into "bytes 0-149/10000".
    "E07": 206,
    # 200 specs > FILES_APP_MAX_RANGES (100): the header is ignored -> 200 (CVE-2011-3192).
    "E09": 200,
    # The first and the last byte: far apart, so two parts.
    "E11": 206,
    # A later If-Modified-Since than Last-Modified: not modified.
    "F07": 304,
    # Range is defined for GET only (RFC 9110 §14.2): HEAD answers as if there were none.
    "H01": 200,
    # The view allows GET, HEAD and OPTIONS only.
    "H05": 405,
    # ranges.py: an empty representation answers 200 with an empty body, as nginx does.
    "I03": 200,
    "I05": 200,
    # Two parts 4 GiB apart: multipart.
    "L05": 206,
}


@dataclass(frozen=True)
class RangeCase:
    """One request and what the answer to it must look like."""

    id: str
    title: str
    method: str
    headers: dict[str, str]
    file_size: int
    expect_status: int
    accept_also: tuple[int, ...]
    expect_headers: dict[str, str | None]
    expect_body_range: tuple[int, int] | str | None
    expect_body_empty: bool
    expect_parts: tuple[tuple[int, int], ...] | None
    resource: str

    @property
    def resource_key(self) -> str:
        """Return which stored file the case runs against."""
        if self.id in ATTACHMENT_NAMES:
            return self.id
        return f"size{self.file_size}"

    @property
    def allowed_statuses(self) -> frozenset[int]:
        return frozenset({self.expect_status, *self.accept_also})


def load_cases() -> list[RangeCase]:
    """Return every case of tests/data/range_cases.json."""
    raw = json.loads(CASES_PATH.read_text(encoding="utf-8"))
    cases = []
    for item in raw["cases"]:
        body_range = item["expect_body_range"]
        parts = item["expect_parts"]
        cases.append(
            RangeCase(
                id=item["id"],
                title=item["title"],
                method=item["method"],
                headers=dict(item["headers"]),
                file_size=int(item["file_size"]),
                expect_status=int(item["expect_status"]),
                accept_also=tuple(int(s) for s in item["accept_also"]),
                expect_headers=dict(item["expect_headers"]),
                expect_body_range=tuple(body_range)
                if isinstance(body_range, list)
                else body_range,
                expect_body_empty=bool(item["expect_body_empty"]),
                expect_parts=tuple((a, b) for a, b in parts) if parts is not None else None,
                resource=item["resource"],
            )
        )
    return cases


CASES = load_cases()


@dataclass(frozen=True)
class Served:
    """What a checker needs to know about one stored file: its bytes and validators."""

    pk: int
    uuid: str
    name: str
    size: int
    etag: str
    last_modified: int  # Unix seconds, as sent in Last-Modified
    content_type: str
    path: str  # the URL path that serves it
    read: Callable[[int, int], bytes] = field(repr=False)  # bytes [start, stop)
    sha256: str = ""

    def data(self, first: int, last: int) -> bytes:
        """Return the bytes first..last inclusive, as Content-Range numbers them."""
        return self.read(first, last + 1)


def content(size: int) -> bytes:
    """Return the deterministic content of a test file of ``size`` bytes.

    Seeded random rather than a repeating pattern, so that a body read from the wrong
    offset can never look right; it also contains CR, LF and "--" for the multipart parser.
    """
    return random.Random(size).randbytes(size)


# The sparse 5 GiB file: zeros except these marks, written at the offsets where integer
# bugs live (2**31, 2**32) and at the very end, which also sets the object's size.
SPARSE_SIZE = 5 * GiB
SPARSE_MARKS = {
    0: b"first-ten!",
    2**31 - 4: b"across 2^31",
    2**32 - 6: b"across 2^32",
    SPARSE_SIZE - 9: b"the end.\n",
}


def sparse_read(start: int, stop: int) -> bytes:
    """Return bytes [start, stop) of the sparse 5 GiB file."""
    out = bytearray(stop - start)
    for offset, mark in SPARSE_MARKS.items():
        lo, hi = max(start, offset), min(stop, offset + len(mark))
        if lo < hi:
            out[lo - start : hi - start] = mark[lo - offset : hi - offset]
    return bytes(out)


def expand(value: str, served: Served) -> str:
    """Replace the {ETAG}, {WETAG}, {LM}... placeholders of a case with real values."""
    lm = served.last_modified
    day = 24 * 3600
    values = {
        "{ETAG}": served.etag,
        "{WETAG}": f"W/{served.etag}",
        "{LM}": email.utils.formatdate(lm, usegmt=True),
        "{LM_PLUS}": email.utils.formatdate(lm + day, usegmt=True),
        "{LM_MINUS}": email.utils.formatdate(lm - day, usegmt=True),
        "{LM_RFC850}": rfc850_date(lm),
        "{LM_ASCTIME}": time.asctime(time.gmtime(lm)),
    }
    for placeholder, replacement in values.items():
        value = value.replace(placeholder, replacement)
    return value


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc850_date(stamp: int) -> str:
    """Return the obsolete RFC 850 form of an HTTP-date (RFC 9110 §5.6.7)."""
    t = time.gmtime(stamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def request_headers(case: RangeCase, served: Served) -> dict[str, str]:
    """Return the case's request headers with placeholders filled in."""
    return {name: expand(value, served) for name, value in case.headers.items()}


class Headers:
    """Response headers looked up case-insensitively; a repeated header is an error."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            # Set-Cookie and Vary may repeat; none of the headers we judge may.
            assert key in ("set-cookie", "vary") or key not in self._values, (
                f"header {name!r} sent twice"
            )
            self._values[key] = value

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")


def parse_content_range(value: str | None, size: int) -> tuple[int, int]:
    """Return (first, last) of a satisfied Content-Range, checking it against ``size``."""
    assert value is not None, "a 206 needs a Content-Range"
    match = _CONTENT_RANGE.fullmatch(value)
    assert match is not None, f"bad Content-Range {value!r}"
    first, last, total = (int(g) for g in match.groups())
    assert total == size, f"Content-Range {value!r} does not end in /{size}"
    assert first <= last < size, f"Content-Range {value!r} is not inside the file"
    return first, last


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """Return (Content-Type, Content-Range, data) of each part of a multipart/byteranges body."""
    # The email parser needs the boundary from a header; give it a synthetic one.
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    assert message.is_multipart(), f"not a multipart body: {content_type!r}"
    assert not message.defects, message.defects
    assert not message.preamble, f"unexpected preamble {message.preamble!r}"
    assert not message.epilogue, f"unexpected epilogue {message.epilogue!r}"
    parts = []
    payload = message.get_payload()
    assert isinstance(payload, list)
    for part in payload:
        assert isinstance(part, email.message.Message)
        assert not part.defects, part.defects
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        parts.append((str(part["Content-Type"]), str(part["Content-Range"]), data))
    return parts


def served_ranges(
    headers: Headers, body: bytes, served: Served, *, head: bool
) -> list[tuple[int, int]]:
    """Check a 206's body against the bytes it claims; return the claimed (first, last) ranges."""
    content_type = headers.get("Content-Type") or ""
    if content_type.lower().startswith("multipart/byteranges"):
        assert headers.get("Content-Range") is None, "multipart 206 with a Content-Range"
        assert re.search(r";\s*boundary=", content_type), content_type
        if head:
            return []
        claimed = []
        for part_type, part_range, data in parse_multipart(content_type, body):
            first, last = parse_content_range(part_range, served.size)
            assert part_type == served.content_type, (part_type, served.content_type)
            assert data == served.data(first, last), f"part {part_range!r} has the wrong bytes"
            claimed.append((first, last))
        # RFC 9110 §15.3.7.2: a single part is sent without multipart.
        assert len(claimed) >= 2, "a multipart/byteranges body with fewer than two parts"
        return claimed
    first, last = parse_content_range(headers.get("Content-Range"), served.size)
    assert headers.get("Content-Length") == str(last - first + 1)
    if not head:
        assert body == served.data(first, last), "the body is not the bytes it claims"
    return [(first, last)]


def check_consistent(
    method: str, status: int, headers: Headers, body: bytes, served: Served
) -> list[tuple[int, int]] | None:
    """Check what must hold for any answer of a download view; return a 206's ranges."""
    head = method == "HEAD"
    length = headers.get("Content-Length")
    if head or status == 304:
        assert body == b"", f"{method} {status} carried a body of {len(body)} bytes"
    elif length is not None:
        assert length == str(len(body)), f"Content-Length {length} for {len(body)} bytes"
    if status in (200, 206, 416):
        assert headers.get("X-Content-Type-Options") == "nosniff"
    if status == 200:
        assert headers.get("Content-Range") is None
        assert headers.get("Accept-Ranges") == "bytes"
        assert length == str(served.size), f"Content-Length {length!r} of a 200"
        if not head:
            assert body == served.read(0, served.size), "a 200 must carry the whole file"
    elif status == 206:
        assert headers.get("Accept-Ranges") == "bytes"
        return served_ranges(headers, body, served, head=head)
    elif status == 304:
        assert headers.get("Content-Range") is None
        assert headers.get("ETag") == served.etag
        # RFC 9110 §8.6: a 304 may carry Content-Length only if it is the 200's length.
        assert length in (None, str(served.size)), f"Content-Length {length!r} on a 304"
    elif status == 416:
        assert headers.get("Content-Range") == f"bytes */{served.size}"
    elif status == 412:
        assert headers.get("Content-Range") is None
    elif status == 405:
        assert "GET" in (headers.get("Allow") or "")
        assert headers.get("Content-Range") is None
    return None


def check_response(
    case: RangeCase, served: Served, status: int, headers: Mapping[str, str] | Headers, body: bytes
) -> None:
    """Assert that (status, headers, body) is a correct answer to ``case``."""
    if not isinstance(headers, Headers):
        headers = Headers(headers.items())
    assert status in case.allowed_statuses, (
        f"{case.id}: status {status} not in {sorted(case.allowed_statuses)}"
    )
    claimed = check_consistent(case.method, status, headers, body, served)
    if status != case.expect_status:
        return  # an alternative the RFC permits: the generic checks above apply
    for name, expected in case.expect_headers.items():
        actual = headers.get(name)
        if expected is None:
            assert actual is None, f"{case.id}: {name}: {actual!r} should be absent"
        elif expected.startswith("re:"):
            # An absent header is matched as "", which patterns like "^(|bytes */0)$" allow.
            pattern = expand(expected[3:], served)
            assert re.search(pattern, actual or ""), f"{case.id}: {name}: {actual!r} !~ {pattern}"
        else:
            assert actual == expand(expected, served), f"{case.id}: {name}: {actual!r}"
    if case.expect_body_empty or case.expect_body_range == "EMPTY":
        assert body == b"", f"{case.id}: body of {len(body)} bytes should be empty"
    elif isinstance(case.expect_body_range, tuple):
        first, last = case.expect_body_range
        assert body == served.data(first, last), f"{case.id}: wrong body"
    if case.expect_parts is not None and case.method == "GET":
        assert claimed, f"{case.id}: expected parts {case.expect_parts}"
        check_parts_cover(case.expect_parts, claimed)


def check_parts_cover(
    requested: Iterable[tuple[int, int]], claimed: Iterable[tuple[int, int]]
) -> None:
    """Assert the claimed ranges cover every requested one and add only coalesced gaps."""
    requested, claimed = list(requested), list(claimed)
    for first, last in requested:
        assert any(a <= first and last <= b for a, b in claimed), (
            f"requested {first}-{last} is not in {claimed}"
        )
    low, high = min(a for a, _ in requested), max(b for _, b in requested)
    for a, b in claimed:
        assert low <= a and b <= high, f"claimed {a}-{b} is outside {low}-{high}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_served(key: str) -> Served:
    """Store the file a resource key names and return what the checker needs about it."""
    from django.core.files.base import ContentFile
    from django.db import models

    from files_app import largeobjects
    from files_app.models import StoredFile

    if key == f"size{SPARSE_SIZE}":
        # A sparse 5 GiB object: unwritten pages read back as zeros (PostgreSQL docs,
        # "Large Objects": "it is possible to write data beyond the current end").
        oid = largeobjects.create("default")
        for offset, mark in SPARSE_MARKS.items():
            largeobjects.write(oid, offset, mark, "default")
        stored = StoredFile(
            file=str(oid),
            name="big.bin",
            size=SPARSE_SIZE,
            sha256="5" * 64,
            content_type="application/octet-stream",
            public=True,
        )
        # StoredFile.save() would hash all 5 GiB; the database still checks the size.
        models.Model.save(stored)
        read: Callable[[int, int], bytes] = sparse_read
        digest = ""
    else:
        if key in ATTACHMENT_NAMES:
            name, data = ATTACHMENT_NAMES[key], content(10000)
        else:
            size = int(key.removeprefix("size"))
            name, data = f"file{size}.bin", content(size)
        stored = StoredFile(
            file=ContentFile(data, name=name), name=name, public=True, content_type=""
        )
        stored.save()
        digest = sha256_hex(data)
        assert stored.sha256 == digest

        def read(start: int, stop: int, data: bytes = data) -> bytes:
            return data[start:stop]

    return Served(
        pk=stored.pk,
        uuid=str(stored.uuid),
        name=stored.name,
        size=stored.size,
        etag=stored.etag,
        last_modified=int(stored.created.timestamp()),
        content_type=stored.content_type,
        path=case_path(stored, as_attachment=key in ATTACHMENT_NAMES),
        read=read,
        sha256=digest,
    )


def case_path(stored: Any, *, as_attachment: bool) -> str:
    """Return the URL path serving a StoredFile, through the attachment view if asked."""
    from django.urls import reverse

    if as_attachment:
        return reverse(
            "attachment",
            urlconf="tests.urls_attachment",
            kwargs={"uuid": stored.uuid, "filename": stored.download_name},
        )
    return str(stored.get_absolute_url())
