"""HTTP byte-range handling (RFC 9110 §14): parse, resolve, If-Range, multipart layout.

Pure standard library, no Django. Ranges are half-open (``start`` inclusive, ``stop``
exclusive) internally; the inclusive ``first-last`` form only appears on the wire.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import calendar
import datetime
import enum
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Ranges separated by fewer than this many bytes are merged into one (RFC 9110 §15.3.7.2
# allows coalescing). Roughly the overhead of one multipart part header, so sending the gap
# is never more expensive than a separate part.
COALESCE_GAP = 80

_OWS = " \t"  # RFC 9110 §5.6.3: OWS = *( SP / HTAB )
# RFC 9110 §14.1.1: int-range = first-pos "-" [ last-pos ]; suffix-range = "-" suffix-length;
# every position is 1*DIGIT, ASCII only (no sign, underscore, inner whitespace, other digits).
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)")
# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE.
_ETAG_RE = re.compile(r'"[\x21\x23-\x7e\x80-\xff]*"')
# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_INT_DIGITS = 4000  # below CPython's int-from-str digit limit (sys.get_int_max_str_digits)


class _TooMany:
    """Mark a Range header with more elements than allowed."""


_TOO_MANY = _TooMany()

Spec = tuple[int | None, int | None]


@dataclass(frozen=True)
class ByteRange:
    """Hold one satisfiable byte range as half-open offsets [start, stop)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"invalid byte range [{self.start}, {self.stop})")

    @property
    def length(self) -> int:
        """Return the number of bytes in the range."""
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        """Return the Content-Range value for this range of a `size`-byte body (§14.4)."""
        return f"bytes {self.start}-{self.stop - 1}/{size}"


def unsatisfied_content_range(size: int) -> str:
    """Return the Content-Range value for a 416 response (§14.4, §15.5.17)."""
    return f"bytes */{size}"


def _to_int(digits: str) -> int:
    """Convert an ASCII digit string of any length to int without hitting the digit limit."""
    digits = digits.lstrip("0") or "0"
    if len(digits) <= _INT_DIGITS:
        return int(digits)
    half = len(digits) // 2
    scale: int = 10**half
    return _to_int(digits[:-half]) * scale + _to_int(digits[-half:])


def _parse(value: str, limit: int | None) -> list[Spec] | _TooMany | None:
    """Parse a Range value into specs; _TOO_MANY once more than `limit` elements are seen."""
    unit, eq, range_set = value.partition("=")
    unit = unit.strip(_OWS)
    # §14.1: range units are compared case-insensitively; §14.1.1 ranges-specifier.
    if not eq or not unit.isascii() or unit.lower() != "bytes":
        return None
    specs: list[Spec] = []
    for raw in range_set.split(","):
        element = raw.strip(_OWS)
        if not element:
            continue  # §5.6.1.2: recipients ignore empty list elements
        if limit is not None and len(specs) >= limit:
            return _TOO_MANY
        match = _SPEC_RE.fullmatch(element)
        if match is None:
            return None
        first_s, last_s = match.groups()
        if first_s:
            first = _to_int(first_s)
            last = _to_int(last_s) if last_s else None
            if last is not None and last < first:
                return None  # §14.1.1: last-pos < first-pos makes the range-spec invalid
            specs.append((first, last))
        elif last_s:
            specs.append((None, _to_int(last_s)))
        else:
            return None  # a bare "-"
    return specs or None  # §14.1.1: range-set = 1#range-spec


def parse_range_header(value: str) -> list[tuple[int | None, int | None]] | None:
    """Parse a Range header into (first, last) specs, or None if it is not a bytes range-set."""
    result = _parse(value, None)
    return result if isinstance(result, list) else None


class RangeDecision(enum.Enum):
    """Say how to answer a request: 200 full, 206 partial, or 416 unsatisfiable."""

    FULL = "full"
    PARTIAL = "partial"
    UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True)
class RangeResult:
    """Hold the decision and, for PARTIAL, the coalesced ranges in the order asked for."""

    decision: RangeDecision
    ranges: tuple[ByteRange, ...] = ()


_FULL = RangeResult(RangeDecision.FULL)


def _satisfiable(spec: Spec, size: int) -> ByteRange | None:
    """Resolve one spec against `size` (§14.1.1, §14.1.2); return None if unsatisfiable."""
    first, last = spec
    if first is None:
        assert last is not None
        if last == 0:
            return None  # suffix-length 0 selects nothing
        # A suffix longer than the representation selects all of it.
        return ByteRange(max(0, size - last), size)
    if first >= size:
        return None
    stop = size if last is None or last >= size else last + 1  # clip last-pos to size-1
    return ByteRange(first, stop)


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Merge overlapping, adjacent and nearly adjacent ranges (§15.3.7.2).

    The result keeps the order of the request: RFC 9110 §14.6 says the parts SHOULD come
    in the order of the Range header, except for ranges coalesced into others. A merged
    range takes the place of the first of its members in the header.
    """
    order = sorted(range(len(ranges)), key=lambda i: ranges[i].start)
    merged: list[ByteRange] = []
    first_seen: list[int] = []  # per merged range: the smallest header index among its members
    for index in order:
        rng = ranges[index]
        if merged and rng.start - merged[-1].stop < COALESCE_GAP:
            last = merged[-1]
            merged[-1] = ByteRange(last.start, max(last.stop, rng.stop))
            first_seen[-1] = min(first_seen[-1], index)
        else:
            merged.append(rng)
            first_seen.append(index)
    return [rng for _, rng in sorted(zip(first_seen, merged, strict=True), key=lambda p: p[0])]


def resolve_ranges(value: str | None, size: int, *, max_ranges: int = 100) -> RangeResult:
    """Decide how to answer a Range header for a representation of `size` bytes."""
    if size < 0:
        raise ValueError("size must be >= 0")
    if value is None:
        return _FULL
    specs = _parse(value, max(max_ranges, 0))
    # §14.2: a server MAY ignore an invalid Range header. More than max_ranges specs is
    # treated the same way (cheap guard against the "Apache Killer", CVE-2011-3192).
    if not isinstance(specs, list):
        return _FULL
    # Choice for an empty representation: nothing is satisfiable, but answer 200 with an
    # empty body (as nginx does) rather than 416; range-cases I03/I05 allow both.
    if size == 0:
        return _FULL
    found = [r for r in (_satisfiable(s, size) for s in specs) if r is not None]
    if not found:
        return RangeResult(RangeDecision.UNSATISFIABLE)  # §15.5.17: 416
    ranges = _coalesce(found)
    # §14.2: a server MAY ignore a Range whose ranges add up to more than the whole body.
    if sum(r.length for r in ranges) > size:  # pragma: no cover - impossible once coalesced
        return _FULL
    # Even a single range spanning the whole file stays 206: players treat a 200 answer to
    # "bytes=0-" as "not seekable".
    return RangeResult(RangeDecision.PARTIAL, tuple(ranges))


# RFC 9110 §5.6.7: HTTP-date = IMF-fixdate / obs-date (rfc850-date / asctime-date).
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MON = "(?P<mon>" + "|".join(_MONTHS) + ")"
_TIME = "(?P<hour>[0-9]{2}):(?P<min>[0-9]{2}):(?P<sec>[0-9]{2})"
_DATE_RES = (
    re.compile(rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MON} (?P<year>[0-9]{{4}}) {_TIME} GMT"),
    re.compile(rf"{_LONG_DAY}, (?P<day>[0-9]{{2}})-{_MON}-(?P<year>[0-9]{{2}}) {_TIME} GMT"),
    re.compile(rf"{_DAY} {_MON} (?P<day>[ 0-9][0-9]) {_TIME} (?P<year>[0-9]{{4}})"),
)


def parse_http_date(value: str) -> int | None:
    """Parse an HTTP-date in any of the three formats into Unix seconds, or None."""
    for pattern in _DATE_RES:
        match = pattern.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    year = int(match["year"])
    if len(match["year"]) == 2:
        # §5.6.7: a two-digit year more than 50 years in the future is in the past century.
        now = time.gmtime().tm_year
        year = now + 50 - (now + 50 - year) % 100
    fields = (int(match["day"].lstrip()), int(match["hour"]), int(match["min"]))
    try:
        moment = datetime.datetime(
            year, _MONTHS.index(match["mon"]) + 1, *fields, int(match["sec"])
        )
    except ValueError:
        return None  # e.g. Feb 30 or 25:00:00
    return calendar.timegm(moment.timetuple())


def if_range_allows_partial(
    if_range: str | None, *, etag: str | None, last_modified: int | None
) -> bool:
    """Return whether an If-Range header lets a Range apply (RFC 9110 §13.1.5)."""
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    if value.startswith("W/"):
        return False  # §13.1.5: a weak entity-tag never matches (strong comparison)
    if value.startswith('"'):
        # §8.8.3.2 strong comparison: both tags strong and character-for-character equal.
        return (
            _ETAG_RE.fullmatch(value) is not None
            and etag is not None
            and not etag.startswith("W/")
            and value == etag
        )
    # §13.1.5: an HTTP-date matches only if it exactly equals Last-Modified.
    stamp = parse_http_date(value)
    return stamp is not None and last_modified is not None and stamp == last_modified


def multipart_boundary() -> str:
    """Return a fresh random multipart boundary (hex only, valid per RFC 2046)."""
    return secrets.token_hex(16)


def _check_boundary(boundary: str) -> None:
    if _BOUNDARY_RE.fullmatch(boundary) is None:
        raise ValueError(f"invalid multipart boundary {boundary!r}")


def multipart_content_type(boundary: str) -> str:
    """Return the Content-Type value of a multipart/byteranges body (§14.6)."""
    _check_boundary(boundary)
    if _TOKEN_RE.fullmatch(boundary) is None:
        boundary = f'"{boundary}"'  # §5.6.6: a parameter value that is not a token is quoted
    return f"multipart/byteranges; boundary={boundary}"


@dataclass(frozen=True)
class MultipartPart:
    """Hold one body part: its header bytes and the range whose data follows it."""

    header: bytes
    range: ByteRange


def multipart_plan(
    ranges: Sequence[ByteRange], size: int, content_type: str, boundary: str
) -> tuple[list[MultipartPart], bytes, int]:
    """Lay out a multipart/byteranges body: the parts, the closing delimiter, and the exact Content-Length."""  # noqa: E501
    _check_boundary(boundary)
    if not ranges:
        raise ValueError("a multipart/byteranges body needs at least one range")
    # No header injection: drop CR, LF and other control characters from the media type.
    ctype = "".join(ch for ch in content_type if ch == "\t" or ch >= " " and ch != "\x7f")
    ctype = ctype.strip(_OWS)
    ctype = ctype or "application/octet-stream"
    parts: list[MultipartPart] = []
    length = 0
    for rng in ranges:
        if rng.stop > size:
            raise ValueError(f"range {rng} exceeds size {size}")
        # §14.6: each part carries Content-Type and Content-Range; RFC 2046 §5.1.1 layout:
        # "--boundary" CRLF headers CRLF data, and the CRLF before the next delimiter.
        header = (
            f"--{boundary}\r\nContent-Type: {ctype}\r\n"
            f"Content-Range: {rng.content_range(size)}\r\n\r\n"
        ).encode("latin-1", "replace")
        parts.append(MultipartPart(header, rng))
        length += len(header) + rng.length + 2
    closing = f"--{boundary}--\r\n".encode("ascii")
    return parts, closing, length + len(closing)
