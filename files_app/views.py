"""Views that serve large objects over HTTP with Range and conditional-request support."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.core.files.storage import Storage
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Model, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseGone,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from files_app import mediatypes, ranges
from files_app.conf import app_settings
from files_app.fields import default_large_object_storage
from files_app.models import StoredFile
from files_app.sharing import LinkState, read_share_token
from files_app.storage import (
    LargeObjectFile,
    LargeObjectIO,
    LargeObjectStorage,
    SizeMismatch,
    oid_from_name,
    unsign_oid,
)

__all__ = [
    "LargeObjectResponse",
    "LargeObjectView",
    "SharedFileView",
    "StorageFileView",
    "StoredFileView",
    "content_disposition",
]

logger = logging.getLogger("files_app")

Segment = bytes | ranges.ByteRange


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


class LargeObjectResponse(StreamingHttpResponse):
    """A streamed large-object body whose headers the view has already set exactly.

    It reports a Content-Encoding so that GZipMiddleware leaves it alone: compressing a
    206 would keep a wrong Content-Range and weaken the ETag (docs/design.md, "HTTP").
    """

    def has_header(self, header: str) -> bool:
        if header.lower() == "content-encoding":
            return True
        return super().has_header(header)

    __contains__ = has_header


Piece = bytes | tuple[int, int]


def _plan_reads(segments: Sequence[Segment], chunk: int) -> Iterator[Piece]:
    """Split the body into literal bytes and ``(offset, length)`` reads of ``chunk`` at most.

    Lazily: a body of many gigabytes in small chunks is many pieces.
    """
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
            continue
        for offset in range(segment.start, segment.stop, chunk):
            yield (offset, min(chunk, segment.stop - offset))


def _reads(segments: Sequence[Segment], chunk: int) -> Iterator[tuple[int, int]]:
    return (item for item in _plan_reads(segments, chunk) if not isinstance(item, bytes))


def _checked(data: bytes | None, item: tuple[int, int]) -> bytes:
    if data is None or len(data) != item[1]:
        ended = item[0] + len(data or b"")
        raise OSError(f"The large object ended early at byte {ended}.")
    return data


def _body_iter(
    raw: LargeObjectIO, segments: Sequence[Segment], chunk: int, first: bytes
) -> Generator[bytes, None, None]:
    """Yield the body: ``first`` is the first read, already done; the rest read ahead."""
    rest = raw.read_pieces(itertools.islice(_reads(segments, chunk), 1, None))
    done = 0
    try:
        for item in _plan_reads(segments, chunk):
            if isinstance(item, bytes):
                yield item
                continue
            data = first if done == 0 else next(rest, None)
            done += 1
            yield _checked(data, item)
    finally:
        rest.close()


def _next_chunk(body: Iterator[bytes]) -> bytes | None:
    return next(body, None)


async def _body_aiter(
    raw: LargeObjectIO, segments: Sequence[Segment], chunk: int, first: bytes
) -> AsyncIterator[bytes]:
    """:func:`_body_iter` for ASGI, each read started in the request's thread before the
    previous chunk is sent. (Under ASGI a sync iterator would be read whole into memory
    before sending.) A body of one read needs no thread at all.
    """
    total = sum(
        -(-(segment.stop - segment.start) // chunk)
        for segment in segments
        if not isinstance(segment, bytes)
    )
    rest = raw.read_pieces(itertools.islice(_reads(segments, chunk), 1, None))
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    pending: asyncio.Future[bytes | None] | None = None
    done = 0
    try:
        for item in _plan_reads(segments, chunk):
            if isinstance(item, bytes):
                yield item
                continue
            if done == 0:
                data: bytes | None = first
            else:
                pending = pending or asyncio.ensure_future(step(rest))
                data, pending = await pending, None
            done += 1
            if done < total:
                pending = asyncio.ensure_future(step(rest))
            yield _checked(data, item)
    finally:
        if pending is not None:
            with suppress(Exception):
                await pending
        if inspect.getgeneratorstate(rest) == inspect.GEN_SUSPENDED:
            await sync_to_async(rest.close, thread_sensitive=True)()
        else:
            rest.close()


class LargeObjectView(View):
    """Serve one large object with GET and HEAD: 200, 206, 304, 412 and 416."""

    http_method_names = ["get", "head", "options"]
    #: Send ``Content-Disposition: attachment`` rather than ``inline``.
    as_attachment = False
    #: The ``Cache-Control`` header; None sends none.
    cache_control: str | None = "private, no-cache"
    #: Bytes read from the database per query while streaming.
    chunk_size: int | None = None
    #: How many ranges one request may ask for before the Range header is ignored.
    max_ranges: int | None = None

    object: Any

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponseBase]:
        view = super().as_view(**initkwargs)
        # A view that only reads changes no state for CSRF to protect, and must answer
        # POST & co. with 405 + Allow (RFC 9110 §15.5.6), not CsrfViewMiddleware's 403.
        methods = initkwargs.get("http_method_names", cls.http_method_names)
        if set(methods) <= {"get", "head", "options", "trace"}:
            view = csrf_exempt(view)
        return view

    def get_object(self) -> Any:
        """Return the object whose file is served; raise Http404 if there is none."""
        return None

    def get_file(self) -> LargeObjectFile:
        """Return the opened large object to serve."""
        raise NotImplementedError("LargeObjectView subclasses must implement get_file().")

    def get_filename(self) -> str:
        """Return the file name for Content-Disposition."""
        return str(self.file.name).rsplit("/", 1)[-1]

    def get_content_type(self) -> str:
        """Return the Content-Type of the file."""
        return "application/octet-stream"

    def get_etag(self) -> str | None:
        """Return a strong ETag (quoted) for the file's content, or None."""
        return None

    def get_last_modified(self) -> datetime | None:
        """Return when the file's content last changed, or None."""
        return None

    def get_as_attachment(self) -> bool:
        """Return whether to send the file as an attachment rather than inline.

        Only types a browser shows without running anything (images other than SVG, audio,
        video, PDF, plain text) are ever inline.
        """
        media_type = mediatypes.parse(self.get_content_type())
        return self.as_attachment or not mediatypes.is_passive(media_type)

    def get_cache_control(self) -> str | None:
        """Return the Cache-Control header value."""
        return self.cache_control

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.object = self.get_object()
        try:
            self.file = self.get_file()
            size = self.file.size
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc
        etag = self.get_etag()
        modified = self.get_last_modified()
        last_modified = int(modified.timestamp()) if modified else None
        try:
            return self._respond(request, size, etag, last_modified)
        except SizeMismatch as exc:
            # The object is not the size we were told: something changed the row or the
            # object behind the app's back. Serve what the object holds, without the
            # validators, which describe other bytes.
            logger.error("%s; serving its actual size.", exc)
            self.file = LargeObjectFile(str(self.file.name), exc.oid, self.file._storage)
            try:
                size = self.file.size
            except FileNotFoundError as missing:
                raise Http404("The file's data is missing.") from missing
            return self._respond(request, size, None, None)

    def _respond(
        self, request: HttpRequest, size: int, etag: str | None, last_modified: int | None
    ) -> HttpResponseBase:
        headers = self._validator_headers(etag, last_modified)
        # RFC 9110 §13.2.2: preconditions first (412, 304), then Range.
        base = HttpResponse(headers=headers)
        conditional = get_conditional_response(
            request, etag=etag, last_modified=last_modified, response=base
        )
        if conditional is not base:
            assert conditional is not None
            if conditional.status_code == 304:
                self._check_size()
                # RFC 9110 §8.6: a 304 may only state the 200's length; without this,
                # CommonMiddleware would add a wrong "Content-Length: 0".
                conditional.headers["Content-Length"] = str(size)
            return conditional

        range_header = request.headers.get("Range") if request.method == "GET" else None
        if range_header is not None and not ranges.if_range_allows_partial(
            request.headers.get("If-Range"), etag=etag, last_modified=last_modified
        ):
            range_header = None  # §13.1.5: a failed If-Range means "send it all"
        result = ranges.resolve_ranges(
            range_header, size, max_ranges=self.max_ranges or app_settings.MAX_RANGES
        )
        # Parsed, not matched on the raw string: however a type is spelled, HTML is HTML
        # and runs in no page of ours; one that does not parse is served as bytes.
        media_type = mediatypes.parse(self.get_content_type())
        content_type = str(media_type) if media_type else "application/octet-stream"
        headers["Content-Disposition"] = content_disposition(
            self.get_filename(),
            as_attachment=self.get_as_attachment() or not mediatypes.is_passive(media_type),
        )
        if not mediatypes.is_passive(media_type):
            headers["Content-Security-Policy"] = "sandbox"

        if result.decision is ranges.RangeDecision.UNSATISFIABLE:
            self._check_size()
            headers["Content-Range"] = ranges.unsatisfied_content_range(size)
            headers["Content-Type"] = "text/plain; charset=utf-8"
            return HttpResponse(
                b"Range Not Satisfiable: no requested range overlaps the file.\n",
                status=416,
                headers=headers,
            )
        status, segments = self._plan_body(result, size, content_type, headers)
        if request.method == "HEAD":
            segments = []
        return self._stream(request, status, headers, segments)

    def _plan_body(
        self,
        result: ranges.RangeResult,
        size: int,
        content_type: str,
        headers: dict[str, str],
    ) -> tuple[int, list[Segment]]:
        """Set the body's headers; return the status and what the body is made of."""
        segments: list[Segment]
        if result.decision is ranges.RangeDecision.FULL:
            status, length = 200, size
            headers["Content-Type"] = content_type
            segments = [ranges.ByteRange(0, size)] if size else []
        elif len(result.ranges) == 1:
            (byte_range,) = result.ranges
            status, length = 206, byte_range.length
            headers["Content-Type"] = content_type
            headers["Content-Range"] = byte_range.content_range(size)
            segments = [byte_range]
        else:
            # RFC 9110 §14.6: several ranges go in a multipart/byteranges body.
            status = 206
            boundary = ranges.multipart_boundary()
            parts, closing, length = ranges.multipart_plan(
                result.ranges, size, content_type, boundary
            )
            headers["Content-Type"] = ranges.multipart_content_type(boundary)
            segments = []
            for part in parts:
                segments += [part.header, part.range, b"\r\n"]
            segments.append(closing)
        headers["Content-Length"] = str(length)
        return status, segments

    def _validator_headers(self, etag: str | None, last_modified: int | None) -> dict[str, str]:
        headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
        if etag:
            headers["ETag"] = etag
        if last_modified is not None:
            headers["Last-Modified"] = http_date(last_modified)
        if cache_control := self.get_cache_control():
            headers["Cache-Control"] = cache_control
        return headers

    def _check_size(self) -> None:
        try:
            self.file.raw.check_size()
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc

    def _stream(
        self,
        request: HttpRequest,
        status: int,
        headers: dict[str, str],
        segments: Sequence[Segment],
    ) -> LargeObjectResponse:
        raw = self.file.raw
        self.file.close()  # reads go by offset; no descriptor or cursor stays open
        chunk = self.chunk_size or app_settings.CHUNK_SIZE
        first = next(_reads(segments, chunk), None)
        try:
            # The first read happens now, so that a missing object is a 404, not a
            # broken body, and the size we announce is checked in the same query; a
            # response without a read checks the size alone.
            if first is not None:
                data = raw.read_first(*first)
            else:
                raw.check_size()
        except FileNotFoundError as exc:
            raise Http404("The file's data is missing.") from exc
        if first is None:
            literal = [segment for segment in segments if isinstance(segment, bytes)]
            return LargeObjectResponse(literal, status=status, headers=headers)
        if isinstance(request, ASGIRequest):
            body: Iterator[bytes] | AsyncIterator[bytes] = _body_aiter(raw, segments, chunk, data)
        else:
            body = _body_iter(raw, segments, chunk, data)
        return LargeObjectResponse(body, status=status, headers=headers)


class StoredFileView(LargeObjectView):
    """Serve a :class:`StoredFile` by UUID to whoever may see it.

    Public files are served to anyone. Private files go to their owner and to users with
    the ``files_app.view_storedfile`` permission; everyone else gets 404, so a private
    file's existence does not leak.
    """

    model: type[StoredFile] = StoredFile
    object: StoredFile

    def get_queryset(self) -> QuerySet[StoredFile]:
        """Return the stored files the current user may download."""
        queryset = self.model._default_manager.all()
        user = self.request.user
        if user.has_perm("files_app.view_storedfile"):
            return queryset
        visible = Q(public=True)
        if user.is_authenticated:
            visible |= Q(owner=user)
        return queryset.filter(visible)

    def get_object(self) -> StoredFile:
        return get_object_or_404(self.get_queryset(), uuid=self.kwargs["uuid"])

    def get_file(self) -> LargeObjectFile:
        file = self.object.file
        oid = oid_from_name(file.name) if file else None
        storage = file.storage
        if oid is None or not isinstance(storage, LargeObjectStorage):
            raise FileNotFoundError(f"{self.object!r} has no file.")
        # The row knows the size: no query for it. Whether the object still exists shows
        # when the response reads it (see _stream).
        return LargeObjectFile(str(file.name), oid, storage, size=self.object.size)

    def get_filename(self) -> str:
        return str(self.object.download_name)

    def get_content_type(self) -> str:
        return self.object.content_type or "application/octet-stream"

    def get_etag(self) -> str | None:
        return self.object.etag

    def get_last_modified(self) -> datetime | None:
        # Not "created": replacing the file keeps the row's creation time, and a date
        # that did not change with the content would make If-Range splice two files.
        return self.object.updated

    def get_cache_control(self) -> str | None:
        if self.object.public:
            return "public, max-age=300"
        return "private, no-cache"


class SharedFileView(StoredFileView):
    """Serve a stored file, private or not, to anyone holding an unexpired share link.

    A tampered link is 404 and an expired one 410; neither says anything about the file.
    """

    def get_object(self) -> StoredFile:
        state, file_uuid = read_share_token(self.kwargs["token"])
        if state is LinkState.EXPIRED:
            raise LinkExpired()
        if state is not LinkState.VALID:
            raise Http404("Invalid share link.")
        return get_object_or_404(self.model._default_manager.all(), uuid=file_uuid)

    def get_cache_control(self) -> str | None:
        return "private, no-cache"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return super().dispatch(request, *args, **kwargs)
        except LinkExpired:
            return HttpResponseGone(
                "This share link has expired.\n", content_type="text/plain; charset=utf-8"
            )


class LinkExpired(Exception):
    """A share link's time is up."""


class StorageFileView(LargeObjectView):
    """Serve a file of a :class:`LargeObjectStorage` from the signed URL its ``url()`` made."""

    storage: Storage | None = None

    def get_storage(self) -> LargeObjectStorage:
        """Return the storage whose objects this view serves."""
        storage = self.storage or default_large_object_storage()
        assert isinstance(storage, LargeObjectStorage)
        return storage

    def get_object(self) -> Model | None:
        self.oid = unsign_oid(self.kwargs["token"])
        if self.oid is None:
            raise Http404("Invalid file link.")
        return None

    def get_file(self) -> LargeObjectFile:
        opened = self.get_storage().open(str(self.oid), "rb")
        assert isinstance(opened, LargeObjectFile)
        return opened

    def get_filename(self) -> str:
        return str(self.kwargs.get("filename") or self.oid)

    def get_content_type(self) -> str:
        import mimetypes

        guessed, _ = mimetypes.guess_type(self.get_filename())
        return guessed or "application/octet-stream"

    def get_etag(self) -> str | None:
        # OIDs can be reused after an unlink; the creation time tells two objects apart.
        storage = self.get_storage()
        try:
            created = storage.get_created_time(str(self.oid)).timestamp()
        except NotImplementedError:
            return None
        return f'"lo-{self.oid}-{created:.3f}"'

    def get_last_modified(self) -> datetime | None:
        try:
            return self.get_storage().get_created_time(str(self.oid))
        except NotImplementedError:
            return None
