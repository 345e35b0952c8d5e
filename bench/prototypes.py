"""Bench-only prototypes of changes proposed to files_app, measured next to the real views.

Nothing here is used by files_app or minicloud; ``bench/urls.py`` mounts these views under
``/lean/``, ``/readahead/``, ``/sink/`` and ``/upload-*/`` so that ``bench/run.py`` can
measure them against the real ones in the same run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.files.uploadhandler import FileUploadHandler
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from files_app.conf import app_settings
from files_app.models import StoredFile
from files_app.sniff import SNIFF_BYTES
from files_app.storage import LargeObjectFile, LargeObjectStorage, oid_from_name
from files_app.uploadhandler import LargeObjectUploadedFile, LargeObjectUploadHandler
from files_app.views import LargeObjectResponse, Segment, StoredFileView


class LeanStoredFileView(StoredFileView):
    """:class:`StoredFileView` that trusts the row instead of asking PostgreSQL twice more.

    Per request, ``StoredFileView`` runs four queries before and while sending a 64 KiB
    range: the ``StoredFile`` row, ``lo.exists()`` (in ``storage.open()``), ``lo.size()``
    (``lo_open`` + ``lo_lseek64``) and the ``lo_get`` itself. The row already holds the size,
    so this view runs two: the row and the ``lo_get``. (A production version should read
    the first chunk before returning the response, so that a missing large object is still
    a 404 rather than a broken body; that read is needed anyway and costs no extra query.)
    """

    def get_file(self) -> LargeObjectFile:
        file = self.object.file
        oid = oid_from_name(file.name) if file else None
        if oid is None:
            raise FileNotFoundError(f"{self.object!r} has no file.")
        storage = file.storage
        assert isinstance(storage, LargeObjectStorage)
        opened = LargeObjectFile(str(file.name), oid, storage)
        opened.raw._size = self.object.size
        return opened


async def _read_ahead_aiter(
    read: Callable[[int, int], bytes], segments: Sequence[Segment], chunk: int
) -> AsyncIterator[bytes]:
    """``views._segments_aiter`` with the next read already running while a chunk is sent."""
    aread = sync_to_async(read, thread_sensitive=True)
    pending: asyncio.Future[bytes] | None = None
    try:
        for segment in segments:
            if isinstance(segment, bytes):
                yield segment
                continue
            offset, stop = segment.start, segment.stop
            if offset < stop:
                pending = asyncio.ensure_future(aread(offset, min(chunk, stop - offset)))
            while offset < stop:
                assert pending is not None
                data = await pending
                pending = None
                if not data:
                    raise OSError(f"The large object ended early at byte {offset}.")
                offset += len(data)
                if offset < stop:
                    pending = asyncio.ensure_future(aread(offset, min(chunk, stop - offset)))
                yield data
    finally:
        if pending is not None:
            pending.cancel()


def _read_ahead_iter(
    oid: int, using: str, segments: Sequence[Segment], chunk: int
) -> Iterator[bytes]:
    """``views._segments_iter`` with the next ``lo_get`` already sent (psycopg 3 pipeline).

    While the WSGI server writes chunk n to the client, PostgreSQL is already reading
    chunk n+1: the query goes out before chunk n is yielded, and its result is fetched only
    when it is needed. At most two chunks are in flight.
    """
    items: list[bytes | tuple[int, int]] = []
    for segment in segments:
        if isinstance(segment, bytes):
            items.append(segment)
            continue
        offset = segment.start
        while offset < segment.stop:
            length = min(chunk, segment.stop - offset)
            items.append((offset, length))
            offset += length
    reads = [index for index, item in enumerate(items) if not isinstance(item, bytes)]
    import psycopg

    connection = connections[using]
    connection.ensure_connection()
    conn = connection.connection
    sql = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"
    inflight: dict[int, Any] = {}
    sent = 0
    with conn.pipeline():

        def send_ahead() -> None:
            nonlocal sent
            while sent < len(reads) and len(inflight) < 2:
                index = reads[sent]
                offset, length = items[index]
                # Django's cursors bind client-side, which allows no binary results.
                cursor = psycopg.Cursor(conn)
                cursor.format = psycopg.pq.Format.BINARY
                cursor.execute(sql, (oid, offset, length))
                inflight[index] = cursor
                sent += 1

        send_ahead()
        for index, item in enumerate(items):
            if isinstance(item, bytes):
                yield item
                continue
            cursor = inflight.pop(index)
            data = bytes(cursor.fetchone()[0])
            cursor.close()
            send_ahead()
            if len(data) != item[1]:
                raise OSError(f"The large object ended early at byte {item[0] + len(data)}.")
            yield data


class ReadAheadStoredFileView(StoredFileView):
    """:class:`StoredFileView` whose body reads chunk n+1 while chunk n is being sent.

    Under WSGI (psycopg 3) the next ``lo_get`` is sent in pipeline mode before the current
    chunk is yielded (``_read_ahead_iter``). Under ASGI, ``_segments_aiter`` awaits each
    ``lo_get`` (in a worker thread) only after the previous chunk went out; here the next
    read is started before yielding (``_read_ahead_aiter``). At most one chunk is read
    ahead, so memory stays bounded.
    """

    def _stream(
        self,
        request: HttpRequest,
        status: int,
        headers: dict[str, str],
        segments: Sequence[Segment],
    ) -> LargeObjectResponse:
        raw = self.file.raw
        chunk = self.chunk_size or app_settings.CHUNK_SIZE
        body: Iterator[bytes] | AsyncIterator[bytes]
        if isinstance(request, ASGIRequest):
            self.file.close()
            body = _read_ahead_aiter(raw.read_at, segments, chunk)
        elif connections[raw.using].vendor == "postgresql" and _is_psycopg3():
            self.file.close()
            body = _read_ahead_iter(raw.oid, raw.using, segments, chunk)
        else:
            return super()._stream(request, status, headers, segments)
        return LargeObjectResponse(body, status=status, headers=headers)


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    return bool(is_psycopg3)


class DiscardingUploadHandler(FileUploadHandler):
    """Parse uploads as Django does for the admin, and throw the data away."""

    chunk_size = app_settings.CHUNK_SIZE

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        return None

    def file_complete(self, file_size: int) -> None:
        return None


@csrf_exempt
def upload_sink(request: HttpRequest) -> HttpResponse:
    """Receive a multipart upload through Django's parser into nothing: the HTTP ceiling."""
    request.upload_handlers = [DiscardingUploadHandler(request)]
    parts = len(request.FILES) + len(request.POST)
    return HttpResponse(f"{parts} parts\n", content_type="text/plain")


class PipelinedUploadHandler(LargeObjectUploadHandler):
    """:class:`LargeObjectUploadHandler` that does not wait for each ``lo_put`` to finish.

    The real handler sends one ``lo_put`` per chunk and waits for it before reading the
    next chunk from the client, so the network and the database take turns. On psycopg 3
    this one sends the ``lo_put`` in pipeline mode and goes straight back to reading: the
    database writes chunk n while chunk n+1 arrives. Results (and errors) are collected
    when the file is complete; the pipeline's implicit transaction makes the whole file
    one transaction, like ``lowrite`` inside ``transaction.atomic()``. The client socket
    and the database socket buffers bound the memory.
    """

    _pipeline: Any = None

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        import psycopg

        connection = connections[self.storage.using]
        connection.ensure_connection()
        conn = connection.connection
        self._pipeline = conn.pipeline()
        self._pipeline.__enter__()
        self._cursor = psycopg.Cursor(conn)

    def _flush(self) -> None:
        if self._pipeline is None:
            super()._flush()
            return
        if not self.buffer:
            return
        data = bytes(self.buffer)
        self.buffer.clear()
        self._cursor.execute(
            "SELECT lo_put(%s::oid, %s::int8, %b)", (self.oid, self.size - len(data), data)
        )
        self.sha256.update(data)
        if len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]

    def _end_pipeline(self, exc: BaseException | None = None) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.__exit__(type(exc) if exc else None, exc, None)
            self._cursor.close()

    def file_complete(self, file_size: int) -> LargeObjectUploadedFile:
        self._flush()
        self._end_pipeline()
        return super().file_complete(file_size)

    def upload_interrupted(self) -> None:
        self._end_pipeline(RuntimeError("upload interrupted"))
        super().upload_interrupted()


def _store_upload(request: HttpRequest, handler: LargeObjectUploadHandler) -> HttpResponse:
    request.upload_handlers = [handler]
    upload = request.FILES["file"]
    stored = StoredFile(file=upload, name=request.POST.get("name", ""), public=True)
    stored.save()
    return HttpResponse(status=302, headers={"Location": stored.get_absolute_url()})


@csrf_exempt
def pipelined_upload(request: HttpRequest) -> HttpResponse:
    """Store a multipart upload as a public StoredFile with the pipelined handler."""
    return _store_upload(request, PipelinedUploadHandler(request))


@csrf_exempt
def plain_upload(request: HttpRequest) -> HttpResponse:
    """The same view with files_app's own handler: the baseline for the pipelined one."""
    return _store_upload(request, LargeObjectUploadHandler(request))
