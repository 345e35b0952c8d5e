"""What to answer a GET or HEAD for a stored file: status, headers and the bytes of the body.

A sans-io core in the manner of whitenoise's ``responders.py``: it decides everything HTTP —
preconditions (RFC 9110 §13.2.2), If-Range, ranges, the multipart layout, status, headers,
the byte plan — from the method, the request's headers and the file's metadata, and reads
no byte itself. It imports nothing from Django: the views are thin adapters over it, and
the storage streams the plan it returns.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import quote

from files_app import mediatypes, ranges

Segment = bytes | ranges.ByteRange
Headers = Callable[[str], str | None]

# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag, as Django's parse_etags reads it.
_ETAG_RE = re.compile(r'\A((?:W/)?"[^"]*")\Z')
DEFAULT_CONTENT_TYPE = "application/octet-stream"  # a file whose type is not known
UNSATISFIABLE_BODY = b"Range Not Satisfiable: no requested range overlaps the file.\n"


@dataclass(frozen=True)
class FileInfo:
    """What the responder needs to know about a file; no byte of it."""

    size: int
    filename: str
    content_type: str = DEFAULT_CONTENT_TYPE
    etag: str | None = None  # strong and quoted
    last_modified: int | None = None  # Unix seconds
    as_attachment: bool = False
    cache_control: str | None = None


@dataclass
class Plan:
    """The answer: a status, headers in order, and the body as literal bytes and ranges."""

    status: int
    headers: list[tuple[str, str]]
    body: list[Segment] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """Return the value of a header of the plan, or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)


def starts_a_download(method: str, plan: Plan) -> bool:
    """Return whether the answer ``plan`` starts a download, as a share link's download
    limit counts them: a GET answered with the whole file (200) or with ranges from its
    first byte (206). Other ranges of the same download (a player's seeks, a resume), HEAD,
    304 and errors count for nothing."""
    if method != "GET":
        return False
    if plan.status == 200:
        return True
    first = next((part for part in plan.body if isinstance(part, ranges.ByteRange)), None)
    return plan.status == 206 and first is not None and first.start == 0


def literal_bytes(segments: Iterable[Segment]) -> list[bytes]:
    """Return the literal parts of a plan's body (all of it for an answer that reads
    nothing from the file: HEAD, 304, 412, 416)."""
    return [segment for segment in segments if isinstance(segment, bytes)]


def http_date(seconds: int) -> str:
    """Return an IMF-fixdate (RFC 9110 §5.6.7)."""
    return formatdate(seconds, usegmt=True)


def content_disposition(filename: str, *, as_attachment: bool) -> str:
    """Return a Content-Disposition value (RFC 6266) that no file name can break out of."""
    disposition = "attachment" if as_attachment else "inline"
    # An ASCII fallback for old clients: control characters dropped, quote and backslash
    # escaped as a quoted-string (RFC 9110 §5.6.4); RFC 8187 filename* carries the rest.
    fallback = "".join(
        ch if " " <= ch <= "~" else "_" for ch in filename if ch not in "\r\n\x7f"
    ).strip()
    fallback = fallback.replace("\\", "\\\\").replace('"', '\\"') or "download"
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=utf-8''{quote(filename, safe='')}"
    return value


def _etags(value: str | None) -> list[str]:
    if not value:
        return []
    if value.strip() == "*":
        return ["*"]
    matches = (_ETAG_RE.match(tag.strip()) for tag in value.split(","))
    return [match[1] for match in matches if match]


def _date(value: str | None) -> int | None:
    return ranges.parse_http_date(value.strip()) if value else None


def _precondition(method: str, header: Headers, info: FileInfo) -> int | None:
    """Return 412 or 304 if a precondition says so (RFC 9110 §13.2.2), else None."""
    if_match = _etags(header("If-Match"))
    if if_match:
        # §13.1.1: strong comparison (a weak tag matches nothing); "*" matches any current
        # representation.
        strong = info.etag is not None and not info.etag.startswith("W/")
        if not info.etag or (if_match != ["*"] and not (strong and info.etag in if_match)):
            return 412
    else:
        since = _date(header("If-Unmodified-Since"))
        if since is not None and not (info.last_modified and info.last_modified <= since):
            return 412
    if_none_match = _etags(header("If-None-Match"))
    if if_none_match:
        # §13.1.2: weak comparison.
        tags = {tag.removeprefix("W/") for tag in if_none_match}
        if info.etag and (if_none_match == ["*"] or info.etag.removeprefix("W/") in tags):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        since = _date(header("If-Modified-Since"))
        if since is not None and info.last_modified and info.last_modified <= since:
            return 304
    return None


def plan_response(
    method: str,
    header: Headers,
    info: FileInfo,
    *,
    max_ranges: int = 100,
    boundary: Callable[[], str] = ranges.multipart_boundary,
) -> Plan:
    """Return the answer to ``method`` (GET or HEAD) with the request's ``header`` getter."""
    validators: list[tuple[str, str]] = []
    if info.etag:
        validators.append(("ETag", info.etag))
    if info.last_modified is not None:
        validators.append(("Last-Modified", http_date(info.last_modified)))
    if info.cache_control:
        validators.append(("Cache-Control", info.cache_control))

    precondition = _precondition(method, header, info)
    if precondition == 412:
        return Plan(412, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "0")])
    if precondition == 304:
        # RFC 9110 §15.4.5: the validators a 200 would carry. No Content-Length (§8.6
        # allows the 200's, but uvicorn's httptools server then waits for that many bytes
        # of body and drops the connection).
        return Plan(304, validators)

    headers = [("Accept-Ranges", "bytes"), ("X-Content-Type-Options", "nosniff"), *validators]
    range_header = header("Range") if method == "GET" else None
    if range_header is not None and not ranges.if_range_allows_partial(
        header("If-Range"), etag=info.etag, last_modified=info.last_modified
    ):
        range_header = None  # §13.1.5: a failed If-Range means "send it all"
    result = ranges.resolve_ranges(range_header, info.size, max_ranges=max_ranges)

    # Parsed, not matched on the raw string: however a type is spelled, HTML is HTML and
    # runs in no page of ours; one that does not parse is served as bytes.
    media_type = mediatypes.parse(info.content_type)
    content_type = str(media_type) if media_type else "application/octet-stream"
    passive = mediatypes.is_passive(media_type)
    disposition = content_disposition(
        info.filename, as_attachment=info.as_attachment or not passive
    )
    headers.append(("Content-Disposition", disposition))
    if not passive:
        headers.append(("Content-Security-Policy", "sandbox"))

    if result.decision is ranges.RangeDecision.UNSATISFIABLE:
        headers += [
            ("Content-Range", ranges.unsatisfied_content_range(info.size)),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(UNSATISFIABLE_BODY))),
        ]
        return Plan(416, headers, [UNSATISFIABLE_BODY] if method == "GET" else [])
    status, body, length = _layout(result, info.size, content_type, headers, boundary)
    headers.append(("Content-Length", str(length)))
    return Plan(status, headers, body if method == "GET" else [])


def _layout(
    result: ranges.RangeResult,
    size: int,
    content_type: str,
    headers: list[tuple[str, str]],
    boundary: Callable[[], str],
) -> tuple[int, list[Segment], int]:
    if result.decision is ranges.RangeDecision.FULL:
        headers.append(("Content-Type", content_type))
        return 200, [ranges.ByteRange(0, size)] if size else [], size
    if len(result.ranges) == 1:
        (byte_range,) = result.ranges
        headers.append(("Content-Type", content_type))
        headers.append(("Content-Range", byte_range.content_range(size)))
        return 206, [byte_range], byte_range.length
    # RFC 9110 §14.6: several ranges go in a multipart/byteranges body.
    mark = boundary()
    parts, closing, length = ranges.multipart_plan(result.ranges, size, content_type, mark)
    headers.append(("Content-Type", ranges.multipart_content_type(mark)))
    body: list[Segment] = []
    for part in parts:
        body += [part.header, part.range, b"\r\n"]
    body.append(closing)
    return 206, body, length


def reads(body: Sequence[Segment]) -> list[ranges.ByteRange]:
    """Return the ranges of the file a body reads, in order."""
    return [segment for segment in body if isinstance(segment, ranges.ByteRange)]
