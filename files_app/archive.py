"""A selection of stored files as one ZIP, streamed in constant memory (issue 25, point 5).

The archive is framed by zipstream-ng (bench/zip_libraries.py: one pass over the bytes,
CRC-32 computed as they go and written after them, the archive's length known before the
first byte; stream-zip needs the CRC-32 before a stored member, i.e. a second read of every
file, or holds the member in memory). Members are stored, not recompressed, ZIP64 where a
member or the archive passes 4 GiB. Each member's bytes are read while the archive is sent,
one ``FILES_APP_CHUNK_SIZE`` at a time, from its large object or the storage ``files_move``
took it to; under ASGI the response is an async iterator that reads in Django's sync thread
one chunk at a time (a sync iterator would make Django read the whole archive into memory
first).

Public API: :func:`zip_response`, :func:`zip_stream`, :func:`member_names` and
:class:`ArchiveError` (docs/reference.md, "Public API").
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from zipstream import ZipStream  # type: ignore[import-untyped]

from files_app import responder
from files_app.conf import app_settings
from files_app.models import StoredFile

__all__ = ["ArchiveError", "member_names", "zip_response", "zip_stream"]

logger = logging.getLogger(__name__)

# Characters no member name may hold: path separators (a member must not land outside the
# folder it is unpacked in), control characters, and those Windows refuses in file names.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_LONGEST = 200  # characters: well inside every file system's 255 bytes once unpacked


def member_names(names: Iterable[str]) -> list[str]:
    """Return a safe, unique member name for each of ``names``, in order.

    Safe: a bare file name — no folder, no ``..``, no control or Windows-reserved character,
    not empty, at most 200 characters (the extension kept). Unique without regard to case
    (as Windows and macOS see names): a repeated name gets `` (2)``, `` (3)``… before its
    extension.
    """
    taken: set[str] = set()
    result = []
    for name in names:
        safe = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip().strip(".")
        safe = safe or "file"
        stem, dot, extension = safe.rpartition(".")
        if not stem:
            stem, dot, extension = safe, "", ""
        extension = extension[:20]
        stem = stem[: _LONGEST - len(dot + extension) - 6]  # room for " (NNN)"
        candidate, number = f"{stem}{dot}{extension}", 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{stem} ({number}){dot}{extension}"
        taken.add(candidate.casefold())
        result.append(candidate)
    return result


class ArchiveError(Exception):
    """A member's bytes are not what its row says (missing, or another size): the archive
    being sent stops, rather than carry a member that is not the file."""


def _member_bytes(stored: StoredFile) -> Iterator[bytes]:
    """Yield ``stored``'s bytes a chunk at a time, opened only when the archive reaches it."""
    sent = 0
    try:
        with stored.open_content() as opened:
            for chunk in opened.chunks(app_settings.CHUNK_SIZE):
                sent += len(chunk)
                yield chunk
    except FileNotFoundError as exc:
        raise ArchiveError(f"{stored!r} has no data: {exc}") from exc
    if sent != stored.size:
        raise ArchiveError(f"{stored!r} holds {sent} bytes, not {stored.size}.")


def zip_stream(files: Sequence[StoredFile]) -> ZipStream:
    """Return a ZIP of ``files`` (stored, ZIP64 where needed) that writes itself as it is
    iterated, reading each file as it goes; ``len()`` of it is the archive's size."""
    stream = ZipStream(sized=True)
    names = member_names(stored.download_name for stored in files)
    for stored, name in zip(files, names, strict=True):
        stream.add(_member_bytes(stored), name, size=stored.size)
    return stream


def _next(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)


async def _read_in_sync_thread(stream: Iterable[bytes]) -> AsyncIterator[bytes]:
    iterator = iter(stream)
    step = sync_to_async(_next, thread_sensitive=True)
    while (chunk := await step(iterator)) is not None:
        yield chunk


def zip_response(
    request: HttpRequest, files: Iterable[StoredFile], filename: str = "files.zip"
) -> StreamingHttpResponse:
    """Return a response that streams ``files`` as one ZIP named ``filename``, with its
    ``Content-Length``; the caller decides who may download which files."""
    chosen = list(files)
    stream = zip_stream(chosen)
    content: Iterable[bytes] | AsyncIterator[bytes] = (
        _read_in_sync_thread(stream) if isinstance(request, ASGIRequest) else iter(stream)
    )
    response = StreamingHttpResponse(content, content_type="application/zip")
    response["Content-Length"] = str(len(stream))
    response["Content-Disposition"] = responder.content_disposition(filename, as_attachment=True)
    response["Cache-Control"] = "private, no-store"
    who = getattr(request, "user", None)
    logger.info("A ZIP of %d files, %d bytes, for %s.", len(chosen), len(stream), who)
    return response
