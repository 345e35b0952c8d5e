"""Tests for files_app.ranges: Range parsing and resolution, If-Range, multipart layout."""

from __future__ import annotations

import calendar
import email.parser
import email.policy
import email.utils
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from files_app.ranges import (
    COALESCE_GAP,
    ByteRange,
    MultipartPart,
    RangeDecision,
    RangeResult,
    if_range_allows_partial,
    multipart_boundary,
    multipart_content_type,
    multipart_plan,
    parse_range_header,
    resolve_ranges,
    unsatisfied_content_range,
)

FULL = RangeDecision.FULL
PARTIAL = RangeDecision.PARTIAL
UNSAT = RangeDecision.UNSATISFIABLE
HUGE = 99999999999999999999
GIB5 = 5 * 2**30
Spec = tuple[int | None, int | None]
CASES_FILE = Path(__file__).parent / "data" / "range_cases.json"
no_db = settings(database=None, deadline=None)  # keep .hypothesis/ out of the tree


def spans(result: RangeResult) -> list[tuple[int, int]]:
    return [(r.start, r.stop) for r in result.ranges]


# --------------------------------------------------------------------------- ByteRange


def test_byte_range_length_and_content_range() -> None:
    rng = ByteRange(0, 500)
    assert rng.length == 500
    assert rng.content_range(10000) == "bytes 0-499/10000"
    assert ByteRange(9999, 10000).content_range(10000) == "bytes 9999-9999/10000"


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (6, 5)])
def test_byte_range_rejects_empty_or_negative(start: int, stop: int) -> None:
    with pytest.raises(ValueError):
        ByteRange(start, stop)


def test_unsatisfied_content_range() -> None:
    assert unsatisfied_content_range(10000) == "bytes */10000"
    assert unsatisfied_content_range(0) == "bytes */0"


# --------------------------------------------------------------------------- parsing

VALID_HEADERS = [
    ("bytes=0-0", [(0, 0)]),
    ("bytes=0-499", [(0, 499)]),
    ("bytes=5-5", [(5, 5)]),
    ("bytes=9999-", [(9999, None)]),
    ("bytes=-1", [(None, 1)]),
    ("bytes=-0", [(None, 0)]),
    ("bytes=000-001", [(0, 1)]),
    ("BYTES=0-1", [(0, 1)]),
    ("Bytes=0-1", [(0, 1)]),
    ("bYtEs=0-1", [(0, 1)]),
    ("bytes=0-99,5000-5099", [(0, 99), (5000, 5099)]),
    ("bytes=5000-5099,0-99", [(5000, 5099), (0, 99)]),
    ("bytes=0-1,0-1", [(0, 1), (0, 1)]),
    ("bytes=0-0,-1", [(0, 0), (None, 1)]),
    # OWS around '=' contents, around commas and elements.
    ("bytes= 0-1 , 5-6", [(0, 1), (5, 6)]),
    ("bytes=\t0-1\t,\t5-6\t", [(0, 1), (5, 6)]),
    (" bytes = 0-1 ", [(0, 1)]),
    # Empty list elements are skipped (RFC 9110 §5.6.1).
    ("bytes=0-1,,5-6", [(0, 1), (5, 6)]),
    ("bytes=,0-1", [(0, 1)]),
    ("bytes=0-1,", [(0, 1)]),
    ("bytes=, ,0-1, ,", [(0, 1)]),
    # Huge numbers and offsets past 2^31 / 2^32.
    ("bytes=99999999999999999999-", [(HUGE, None)]),
    ("bytes=-99999999999999999999", [(None, HUGE)]),
    ("bytes=0-99999999999999999999", [(0, HUGE)]),
    ("bytes=2147483640-2147483655", [(2147483640, 2147483655)]),
    ("bytes=0-9,4294967290-4294967299", [(0, 9), (4294967290, 4294967299)]),
]


@pytest.mark.parametrize(("header", "expected"), VALID_HEADERS)
def test_parse_valid_header(header: str, expected: list[Spec]) -> None:
    assert parse_range_header(header) == expected


def test_parse_numbers_longer_than_the_int_digit_limit() -> None:
    digits = "9" * 5000
    assert parse_range_header(f"bytes=0-{digits}") == [(0, 10**5000 - 1)]
    assert parse_range_header("bytes=" + "0" * 5000 + "7-") == [(7, None)]
    assert parse_range_header(f"bytes={digits}-" + "9" * 4999) is None  # last < first


INVALID_HEADERS = [
    "",
    " ",
    "bytes",
    "bytes=",
    "bytes= ",
    "bytes=,",
    "bytes=, ,",
    "bytes 0-5",
    "=0-5",
    "byte=0-5",
    "bits=0-5",
    "items=0-5",
    "bytesx=0-1",
    "byte\u017f=0-1",  # LATIN SMALL LETTER LONG S
    "bytes\u00a0=0-1",  # NBSP is not OWS
    "bytes==0-1",
    "bytes=5-2",
    "bytes=0-1,5-2",
    "bytes=-5,5-2",
    "bytes=1-2-3",
    "bytes=0x10-0x20",
    "bytes=--5",
    "bytes=-",
    "bytes=-5-",
    "bytes=+5-6",
    "bytes=5-+6",
    "bytes=-+5",
    "bytes=-5-6",
    "bytes=1_0-20",
    "bytes=1 0-20",
    "bytes=5 -10",
    "bytes=5- 10",
    "bytes=- 5",
    "bytes=\uff15-6",  # FULLWIDTH DIGIT FIVE
    "bytes=\u0663-6",  # ARABIC-INDIC DIGIT THREE
    "bytes=0-\u0663",
    "bytes=-\u0663",
    "bytes=1.5-2",
    "bytes=1e3-",
    "bytes=a-b",
    "bytes=0-1;x",
    "bytes=0-1,x",
    "bytes=0-1 5-6",
    "bytes=0-1\n",
    "bytes=0-1\r\n,5-6",
    "bytes=0-1,\x0b5-6",
    "bytes=\u00a00-1",
]


@pytest.mark.parametrize("header", INVALID_HEADERS)
def test_parse_invalid_header(header: str) -> None:
    assert parse_range_header(header) is None


@pytest.mark.parametrize("header", INVALID_HEADERS)
def test_resolve_invalid_header_serves_full(header: str) -> None:
    assert resolve_ranges(header, 10000) == RangeResult(FULL, ())


def test_parse_has_no_element_cap() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(200))
    specs = parse_range_header(header)
    assert specs is not None
    assert len(specs) == 200


# --------------------------------------------------------------------------- resolution

RESOLVE_CASES = [
    (None, 10000, FULL, []),
    ("bytes=0-0", 10000, PARTIAL, [(0, 1)]),
    ("bytes=0-499", 10000, PARTIAL, [(0, 500)]),
    ("bytes=9999-9999", 10000, PARTIAL, [(9999, 10000)]),
    ("bytes=9999-", 10000, PARTIAL, [(9999, 10000)]),
    ("bytes=-1", 10000, PARTIAL, [(9999, 10000)]),
    ("bytes=-20000", 10000, PARTIAL, [(0, 10000)]),
    ("bytes=9990-20000", 10000, PARTIAL, [(9990, 10000)]),
    ("bytes=-99999999999999999999", 10000, PARTIAL, [(0, 10000)]),
    ("bytes=0-99999999999999999999", 10000, PARTIAL, [(0, 10000)]),
    ("bytes=000-001", 10000, PARTIAL, [(0, 2)]),
    ("bytes=0-", 10000, PARTIAL, [(0, 10000)]),  # 206, never 200: players need it
    ("bytes=0-9999", 10000, PARTIAL, [(0, 10000)]),
    ("BYTES=0-0", 10000, PARTIAL, [(0, 1)]),
    ("bytes=10000-", 10000, UNSAT, []),
    ("bytes=10000-10000", 10000, UNSAT, []),
    ("bytes=20000-30000", 10000, UNSAT, []),
    ("bytes=99999999999999999999-", 10000, UNSAT, []),
    ("bytes=-0", 10000, UNSAT, []),
    ("bytes=-0,-0,10000-", 10000, UNSAT, []),
    ("bytes=0-1,20000-30000", 10000, PARTIAL, [(0, 2)]),
    ("bytes=-0,0-0", 10000, PARTIAL, [(0, 1)]),
    # Multiple ranges in the order asked for (RFC 9110 §14.6); far apart ones stay separate.
    ("bytes=0-99,5000-5099", 10000, PARTIAL, [(0, 100), (5000, 5100)]),
    ("bytes=5000-5099,0-99", 10000, PARTIAL, [(5000, 5100), (0, 100)]),
    ("bytes=9000-9099,0-99,5000-5099", 10000, PARTIAL, [(9000, 9100), (0, 100), (5000, 5100)]),
    ("bytes=0-99,,5000-5099", 10000, PARTIAL, [(0, 100), (5000, 5100)]),
    ("bytes=0-0,-1", 10000, PARTIAL, [(0, 1), (9999, 10000)]),
    # Coalescing: overlap, containment, adjacency, small gaps, chains, out of order.
    ("bytes=0-99,50-149", 10000, PARTIAL, [(0, 150)]),
    ("bytes=0-999,10-20", 10000, PARTIAL, [(0, 1000)]),
    ("bytes=0-99,100-199", 10000, PARTIAL, [(0, 200)]),
    ("bytes= 0-1 , 5-6", 10000, PARTIAL, [(0, 7)]),
    ("bytes=0-0,50-50,100-100", 10000, PARTIAL, [(0, 101)]),
    ("bytes=200-299,0-99,100-199", 10000, PARTIAL, [(0, 300)]),
    ("bytes=-500,9000-", 10000, PARTIAL, [(9000, 10000)]),
    # A coalesced range takes the place of its first member in the header.
    ("bytes=5000-5099,0-99,5050-5199", 10000, PARTIAL, [(5000, 5200), (0, 100)]),
    ("bytes=0-99,5050-5199,5000-5099", 10000, PARTIAL, [(0, 100), (5000, 5200)]),
    (
        "bytes=9000-9099,5050-5199,0-99,5000-5099",
        10000,
        PARTIAL,
        [(9000, 9100), (5000, 5200), (0, 100)],
    ),
    (f"bytes=0-0,{COALESCE_GAP}-{COALESCE_GAP}", 10000, PARTIAL, [(0, COALESCE_GAP + 1)]),
    (
        f"bytes=0-0,{COALESCE_GAP + 1}-{COALESCE_GAP + 1}",
        10000,
        PARTIAL,
        [(0, 1), (COALESCE_GAP + 1, COALESCE_GAP + 2)],
    ),
    # Empty representation: nothing is satisfiable; we answer 200 (nginx), not 416.
    (None, 0, FULL, []),
    ("bytes=0-", 0, FULL, []),
    ("bytes=-0", 0, FULL, []),
    ("bytes=-5", 0, FULL, []),
    ("bytes=0-0", 0, FULL, []),
    # One-byte representation.
    ("bytes=0-0", 1, PARTIAL, [(0, 1)]),
    ("bytes=0-", 1, PARTIAL, [(0, 1)]),
    ("bytes=-1", 1, PARTIAL, [(0, 1)]),
    ("bytes=-2", 1, PARTIAL, [(0, 1)]),
    ("bytes=0-5", 1, PARTIAL, [(0, 1)]),
    ("bytes=1-", 1, UNSAT, []),
    ("bytes=-0", 1, UNSAT, []),
    # Offsets past 2^31 and 2^32.
    ("bytes=2147483640-2147483655", GIB5, PARTIAL, [(2147483640, 2147483656)]),
    (
        "bytes=0-9,4294967290-4294967299",
        GIB5,
        PARTIAL,
        [(0, 10), (4294967290, 4294967300)],
    ),
    ("bytes=4294967296-", GIB5, PARTIAL, [(4294967296, GIB5)]),
    ("bytes=-4294967296", GIB5, PARTIAL, [(GIB5 - 2**32, GIB5)]),
    (f"bytes={GIB5}-", GIB5, UNSAT, []),
]


@pytest.mark.parametrize(("header", "size", "decision", "expected"), RESOLVE_CASES)
def test_resolve(
    header: str | None, size: int, decision: RangeDecision, expected: list[tuple[int, int]]
) -> None:
    result = resolve_ranges(header, size)
    assert result.decision is decision
    assert spans(result) == expected


def test_resolve_rejects_negative_size() -> None:
    with pytest.raises(ValueError):
        resolve_ranges("bytes=0-0", -1)


def _spread(count: int, step: int = 1000) -> str:
    return "bytes=" + ",".join(f"{i * step}-{i * step}" for i in range(count))


def test_resolve_200_element_header_serves_full() -> None:
    header = "bytes=" + ",".join(f"{i * 50}-{i * 50}" for i in range(200))
    assert resolve_ranges(header, 10000).decision is FULL


def test_resolve_exactly_max_ranges_is_allowed() -> None:
    result = resolve_ranges(_spread(100), 100 * 1000)
    assert result.decision is PARTIAL
    assert len(result.ranges) == 100


def test_resolve_one_more_than_max_ranges_serves_full() -> None:
    assert resolve_ranges(_spread(101), 101 * 1000).decision is FULL


def test_resolve_counts_specs_before_coalescing() -> None:
    header = "bytes=" + ",".join(["0-0"] * 101)
    assert resolve_ranges(header, 10).decision is FULL
    assert spans(resolve_ranges("bytes=" + ",".join(["0-0"] * 100), 10)) == [(0, 1)]


def test_resolve_bails_out_before_reading_past_the_cap() -> None:
    # Garbage after the cap is never looked at; the answer is FULL either way.
    assert resolve_ranges(_spread(101) + ",garbage", 10**6).decision is FULL


def test_resolve_empty_elements_do_not_count_towards_the_cap() -> None:
    header = _spread(100) + "," * 500
    assert resolve_ranges(header, 100 * 1000).decision is PARTIAL


@pytest.mark.parametrize(
    ("max_ranges", "decision"), [(0, FULL), (-1, FULL), (1, FULL), (2, PARTIAL)]
)
def test_resolve_custom_max_ranges(max_ranges: int, decision: RangeDecision) -> None:
    assert resolve_ranges("bytes=0-0,500-500", 1000, max_ranges=max_ranges).decision is decision


# --------------------------------------------------------------------------- If-Range

ETAG = '"abc123"'
LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf_date(ts: int) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def rfc850_date(ts: int) -> str:
    t = time.gmtime(ts)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def asctime_date(ts: int) -> str:
    return time.asctime(time.gmtime(ts))


def test_date_formatters_match_rfc_examples() -> None:
    assert imf_date(LM) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert rfc850_date(LM) == "Sunday, 06-Nov-94 08:49:37 GMT"
    assert asctime_date(LM) == "Sun Nov  6 08:49:37 1994"


def test_if_range_absent_allows_partial() -> None:
    assert if_range_allows_partial(None, etag=ETAG, last_modified=LM)
    assert if_range_allows_partial(None, etag=None, last_modified=None)


@pytest.mark.parametrize(
    ("if_range", "etag", "allowed"),
    [
        (ETAG, ETAG, True),
        (f" {ETAG}\t", ETAG, True),
        ('""', '""', True),
        (f"W/{ETAG}", ETAG, False),  # weak tag in the header
        (ETAG, f"W/{ETAG}", False),  # weak current ETag
        (f"W/{ETAG}", f"W/{ETAG}", False),
        (ETAG, None, False),
        ('"other"', ETAG, False),
        ('"abc123', '"abc123', False),  # unterminated
        ('"ab"c"', '"ab"c"', False),  # DQUOTE inside the opaque tag
        (f"{ETAG}, {ETAG}", ETAG, False),  # a list is not an entity-tag
        ('"abc\u20ac"', '"abc\u20ac"', False),
    ],
)
def test_if_range_entity_tag(if_range: str, etag: str | None, allowed: bool) -> None:
    assert if_range_allows_partial(if_range, etag=etag, last_modified=LM) is allowed


@pytest.mark.parametrize("fmt", [imf_date, rfc850_date, asctime_date])
@pytest.mark.parametrize(("offset", "allowed"), [(0, True), (1, False), (-1, False)])
def test_if_range_date(fmt: Callable[[int], str], offset: int, allowed: bool) -> None:
    header = fmt(LM + offset)
    assert if_range_allows_partial(header, etag=ETAG, last_modified=LM) is allowed


def test_if_range_date_without_last_modified_never_matches() -> None:
    assert not if_range_allows_partial(imf_date(LM), etag=ETAG, last_modified=None)


@pytest.mark.parametrize(
    ("years_ago", "allowed"),
    [(0, True), (1, True), (30, True), (49, True), (-50, True), (50, False), (-51, False)],
)
def test_if_range_rfc850_two_digit_year_is_within_50_years(years_ago: int, allowed: bool) -> None:
    # RFC 9110 §5.6.7: a two-digit year "more than 50 years in the future" is in the past.
    stamp = calendar.timegm((time.gmtime().tm_year - years_ago, 1, 15, 12, 0, 0))
    header = rfc850_date(stamp)
    assert if_range_allows_partial(header, etag=None, last_modified=stamp) is allowed


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not-a-validator",
        "yesterday-ish",
        "0",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 1994 08:61:37 GMT",
        "Sun, 06 Nov 1994 08:49:60 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT\n",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 1994 GMT",
        "W/",
        "\x00",
    ],
)
def test_if_range_garbage_never_matches(garbage: str) -> None:
    assert not if_range_allows_partial(garbage, etag=ETAG, last_modified=LM)


# --------------------------------------------------------------------------- multipart


def assemble(parts: list[MultipartPart], closing: bytes, data: bytes) -> bytes:
    chunks = []
    for part in parts:
        chunks += [part.header, data[part.range.start : part.range.stop], b"\r\n"]
    return b"".join([*chunks, closing])


def split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Parse a multipart/byteranges body strictly, driven by each part's Content-Range."""
    delimiter = b"--" + boundary.encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while True:
        assert body.startswith(delimiter, pos)
        pos += len(delimiter)
        if body[pos:] == b"--\r\n":
            return parts
        assert body.startswith(b"\r\n", pos)
        end = body.index(b"\r\n\r\n", pos)
        lines = body[pos + 2 : end].decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert len(headers) == len(lines) == 2
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers["Content-Range"])
        assert match is not None
        length = int(match[2]) - int(match[1]) + 1
        pos = end + 4
        parts.append((headers, body[pos : pos + length]))
        pos += length
        assert body.startswith(b"\r\n", pos)
        pos += 2


def test_multipart_boundary_is_random_hex() -> None:
    first, second = multipart_boundary(), multipart_boundary()
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_multipart_content_type() -> None:
    boundary = multipart_boundary()
    value = multipart_content_type(boundary)
    assert value == f"multipart/byteranges; boundary={boundary}"
    assert re.fullmatch(
        r"multipart/byteranges; ?boundary=\"?[0-9A-Za-z'()+_,./:=?-]{1,70}\"?", value
    )


def test_multipart_content_type_quotes_non_token_boundary() -> None:
    assert multipart_content_type("a:b") == 'multipart/byteranges; boundary="a:b"'
    assert multipart_content_type("a b") == 'multipart/byteranges; boundary="a b"'


@pytest.mark.parametrize("boundary", ["", "a" * 71, "trailing ", "x\r\nX-Evil: 1", 'q"uote'])
def test_multipart_rejects_invalid_boundary(boundary: str) -> None:
    with pytest.raises(ValueError):
        multipart_content_type(boundary)
    with pytest.raises(ValueError):
        multipart_plan([ByteRange(0, 1)], 10, "text/plain", boundary)


def test_multipart_rejects_no_ranges_or_range_past_size() -> None:
    with pytest.raises(ValueError):
        multipart_plan([], 10, "text/plain", "b")
    with pytest.raises(ValueError):
        multipart_plan([ByteRange(5, 11)], 10, "text/plain", "b")


def test_multipart_body_round_trips_through_email_parser() -> None:
    data = bytes(range(256)) * 40
    size = len(data)
    ranges = [ByteRange(0, 300), ByteRange(1000, 2000), ByteRange(10000, size)]
    boundary = multipart_boundary()
    parts, closing, content_length = multipart_plan(ranges, size, "video/mp4", boundary)
    body = assemble(parts, closing, data)
    assert len(body) == content_length
    first_header = f"--{boundary}\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-299/{size}"
    assert parts[0].header == f"{first_header}\r\n\r\n".encode()
    assert closing == f"--{boundary}--\r\n".encode()
    assert body.endswith(b"\r\n" + closing)

    head = f"Content-Type: {multipart_content_type(boundary)}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    assert message.is_multipart()
    assert not message.defects
    got = list(message.iter_parts())
    assert len(got) == len(ranges)
    for part, rng in zip(got, ranges, strict=True):
        assert part["Content-Type"] == "video/mp4"
        assert part["Content-Range"] == rng.content_range(size)
        assert part.get_payload(decode=True) == data[rng.start : rng.stop]

    parsed = split_multipart(body, boundary)
    assert [payload for _, payload in parsed] == [data[r.start : r.stop] for r in ranges]


def test_multipart_single_part() -> None:
    data = b"0123456789"
    parts, closing, content_length = multipart_plan([ByteRange(2, 5)], 10, "text/plain", "b")
    body = assemble(parts, closing, data)
    assert body == (
        b"--b\r\nContent-Type: text/plain\r\nContent-Range: bytes 2-4/10\r\n\r\n234\r\n--b--\r\n"
    )
    assert content_length == len(body)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/plain\r\nX-Evil: 1", "text/plainX-Evil: 1"),
        ("text/plain\nSet-Cookie: a=b", "text/plainSet-Cookie: a=b"),
        ("text/plain;\tcharset=utf-8", "text/plain;\tcharset=utf-8"),
        ("text/plain\x00\x7f", "text/plain"),
        ("", "application/octet-stream"),
        ("\r\n", "application/octet-stream"),
        (" \t", "application/octet-stream"),
        ("text/\u20ac", "text/?"),
    ],
)
def test_multipart_content_type_line_cannot_be_injected(content_type: str, expected: str) -> None:
    parts, _, _ = multipart_plan([ByteRange(0, 1)], 1, content_type, "b")
    header = parts[0].header
    assert header.count(b"\r\n") == 4
    assert header.split(b"\r\n")[1] == b"Content-Type: " + expected.encode("latin-1")


# --------------------------------------------------------------------------- RFC 9110 case file


def _load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]
    return cases


def _range_cases() -> list[dict[str, Any]]:
    return [
        case
        for case in _load_cases()
        if case["method"] == "GET"
        and case["headers"]
        and set(case["headers"]) <= {"Range", "If-Range"}
    ]


def test_case_file_is_complete() -> None:
    assert len(_load_cases()) == 61
    assert len(_range_cases()) == 38


def _expand(value: str) -> str:
    day = 86400
    return (
        value.replace("{ETAG}", ETAG)
        .replace("{WETAG}", f"W/{ETAG}")
        .replace("{LM_PLUS}", imf_date(LM + day))
        .replace("{LM_MINUS}", imf_date(LM - day))
        .replace("{LM_RFC850}", rfc850_date(LM))
        .replace("{LM_ASCTIME}", asctime_date(LM))
        .replace("{LM}", imf_date(LM))
    )


def _covers(ranges: list[tuple[int, int]], wanted: list[tuple[int, int]]) -> bool:
    """Whether half-open `ranges` cover exactly the `wanted` bytes, up to small-gap coalescing."""
    requested = {b for start, stop in wanted for b in range(start, stop)}
    covered = {b for start, stop in ranges for b in range(start, stop)}
    return requested <= covered and all(
        any(b - g in requested for g in range(1, COALESCE_GAP))
        and any(b + g in requested for g in range(1, COALESCE_GAP))
        for b in covered - requested
    )


@pytest.mark.parametrize("case", _range_cases(), ids=lambda case: str(case["id"]))
def test_rfc9110_case_file(case: dict[str, Any]) -> None:
    headers = case["headers"]
    size = case["file_size"]
    if_range = headers.get("If-Range")
    allowed = if_range_allows_partial(
        None if if_range is None else _expand(if_range), etag=ETAG, last_modified=LM
    )
    result = resolve_ranges(headers.get("Range"), size) if allowed else RangeResult(FULL)
    status = {FULL: 200, PARTIAL: 206, UNSAT: 416}[result.decision]
    accepted = [case["expect_status"], *case["accept_also"]]
    assert status in accepted
    if status != 206:
        return
    parts = case["expect_parts"]
    body_range = case["expect_body_range"]
    wanted = [(a, b + 1) for a, b in (parts or [body_range])]
    if not parts:
        assert spans(result) == wanted
    assert _covers(spans(result), wanted)


# --------------------------------------------------------------------------- properties

# Positions near small sizes so that ranges overlap, touch and fall off the end.
positions = st.integers(0, 500)
specs: st.SearchStrategy[Spec] = st.one_of(
    st.tuples(positions, positions).map(lambda t: (min(t), max(t))),
    st.tuples(positions, st.none()),
    st.tuples(st.none(), positions),
)
separators = st.sampled_from([",", ", ", " ,", ",,", "\t,\t"])
prefixes = st.sampled_from(["bytes=", "BYTES=", "Bytes = ", "bytes", "=", " bytes=", ""])


def render(spec: Spec) -> str:
    first, last = spec
    return f"{'' if first is None else first}-{'' if last is None else last}"


@st.composite
def spec_headers(draw: st.DrawFn) -> tuple[str, list[Spec]]:
    chosen = draw(st.lists(specs, min_size=1, max_size=12))
    sep = draw(separators)
    prefix = draw(st.sampled_from(["bytes=", "BYTES=", "bytes= ", "Bytes ="]))
    return prefix + sep.join(render(s) for s in chosen), chosen


near_valid = st.one_of(
    st.builds(str.__add__, prefixes, st.text(alphabet="0123456789-, \t=", max_size=60)),
    st.builds(
        lambda prefix, elements, sep: prefix + sep.join(elements),
        prefixes,
        st.lists(
            st.one_of(
                st.from_regex(r"[0-9]{0,4}-[0-9]{0,4}", fullmatch=True),
                st.sampled_from(["", " ", "-", "--1", "1--", "x", "0x1-2", "\uff15-6"]),
            ),
            max_size=10,
        ),
        separators,
    ),
)
sizes = st.integers(0, 600)


def check_partial_invariants(result: RangeResult, size: int) -> None:
    if result.decision is not PARTIAL:
        assert result.ranges == ()
        return
    assert result.ranges
    for rng in result.ranges:
        assert 0 <= rng.start < rng.stop <= size
    ordered = sorted(result.ranges, key=lambda rng: rng.start)
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert after.start - before.stop >= COALESCE_GAP  # disjoint, not mergeable


@no_db
@given(st.text(), st.integers(0, 2**64))
def test_property_arbitrary_text_never_raises(header: str, size: int) -> None:
    specs_ = parse_range_header(header)
    assert specs_ is None or isinstance(specs_, list)
    check_partial_invariants(resolve_ranges(header, size), size)


@no_db
@given(near_valid, sizes)
def test_property_near_valid_headers_never_raise(header: str, size: int) -> None:
    specs_ = parse_range_header(header)
    assert specs_ is None or specs_
    check_partial_invariants(resolve_ranges(header, size), size)


def requested_bytes(chosen: list[Spec], size: int) -> set[int]:
    wanted: set[int] = set()
    for first, last in chosen:
        if first is None:
            assert last is not None
            wanted.update(range(max(0, size - last), size) if last else ())
        elif first < size:
            wanted.update(range(first, size if last is None else min(last + 1, size)))
    return wanted


@no_db
@given(spec_headers(), sizes)
def test_property_resolution_covers_exactly_the_requested_bytes(
    header_and_specs: tuple[str, list[Spec]], size: int
) -> None:
    header, chosen = header_and_specs
    assert parse_range_header(header) == chosen
    result = resolve_ranges(header, size)
    check_partial_invariants(result, size)
    wanted = requested_bytes(chosen, size)
    if size == 0:
        assert result.decision is FULL
        return
    if not wanted:
        assert result.decision is UNSAT
        return
    assert result.decision is PARTIAL
    covered = {b for r in result.ranges for b in range(r.start, r.stop)}
    assert wanted <= covered
    # Every extra byte lies in a gap shorter than COALESCE_GAP between requested bytes.
    for rng in result.ranges:
        assert rng.start in wanted
        assert rng.stop - 1 in wanted
        run = 0
        for b in range(rng.start, rng.stop):
            run = 0 if b in wanted else run + 1
            assert run < COALESCE_GAP
    # RFC 9110 §14.6: parts come in the order of the first spec each one contains.
    firsts = []
    for rng in result.ranges:
        members = [
            index
            for index, spec in enumerate(chosen)
            if requested_bytes([spec], size) & set(range(rng.start, rng.stop))
        ]
        firsts.append(min(members))
    assert firsts == sorted(firsts)


@no_db
@given(
    st.binary(min_size=1, max_size=3000),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 3000)), min_size=1, max_size=8),
    st.text(max_size=40),
)
def test_property_multipart_length_matches_body(
    data: bytes, raw: list[tuple[int, int]], content_type: str
) -> None:
    size = len(data)
    ranges = []
    for offset, length in raw:
        start = offset % size
        ranges.append(ByteRange(start, min(size, start + length)))
    boundary = multipart_boundary()
    parts, closing, content_length = multipart_plan(ranges, size, content_type, boundary)
    body = assemble(parts, closing, data)
    assert len(body) == content_length
    parsed = split_multipart(body, boundary)
    assert len(parsed) == len(ranges)
    for (headers, payload), rng in zip(parsed, ranges, strict=True):
        assert headers["Content-Range"] == rng.content_range(size)
        assert payload == data[rng.start : rng.stop]


@no_db
@given(spec_headers(), st.integers(1, 600), st.data())
def test_property_resolved_ranges_lay_out_as_multipart(
    header_and_specs: tuple[str, list[Spec]],
    size: int,
    draw: st.DataObject,
) -> None:
    result = resolve_ranges(header_and_specs[0], size)
    if result.decision is not PARTIAL:
        return
    data = draw.draw(st.binary(min_size=size, max_size=size))
    boundary = multipart_boundary()
    parts, closing, content_length = multipart_plan(result.ranges, size, "a/b", boundary)
    body = assemble(parts, closing, data)
    assert len(body) == content_length
    assert [p for _, p in split_multipart(body, boundary)] == [
        data[r.start : r.stop] for r in result.ranges
    ]
