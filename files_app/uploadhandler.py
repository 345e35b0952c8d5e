"""An upload handler that streams request bodies straight into large objects.

No temporary file and no whole file in memory: each chunk goes to the database as it
arrives, with its SHA-256 and size computed on the way. An upload that no model saves is
unlinked when the request's files are closed; one that a model saves is adopted by
:class:`~files_app.storage.LargeObjectStorage` without copying, in the save's transaction
(see :class:`~files_app.storage.LargeObjectUploadedFile`).
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, QueryDict
from django.http.multipartparser import MultiPartParser
from django.template.defaultfilters import filesizeformat
from django.utils.datastructures import MultiValueDict

from files_app import quotas
from files_app.conf import app_settings
from files_app.digests import Hasher
from files_app.storage import LargeObjectStorage, LargeObjectUploadedFile, LargeObjectWriter

__all__ = ["LargeObjectUploadHandler", "UploadTooLarge"]

# What a multipart body may hold besides its files (the other fields, the parts' headers)
# before its declared length alone refuses it.
FORM_SLACK = 64 * 1024


class UploadTooLarge(Exception):
    """The upload is larger than ``FILES_APP_MAX_UPLOAD_SIZE``, or than the uploader's
    quota leaves room for (``message`` says which)."""

    def __init__(self, limit: int, message: str | None = None) -> None:
        self.limit = limit
        default = (
            f"The upload is larger than the limit of {filesizeformat(limit)} ({limit} bytes)."
        )
        super().__init__(message or default)


class LargeObjectUploadHandler(FileUploadHandler):
    """Write each uploaded file into a new large object as it streams in."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.storage = LargeObjectStorage()
        self.chunk_size = self.storage.chunk_size
        self.max_size: int | None = app_settings.MAX_UPLOAD_SIZE
        # The uploader's quota (files_app.quotas): the bytes of every file of the request.
        user = getattr(request, "user", None)
        self.quota = quotas.room(user) if user is not None else None
        self.received = 0
        self.oid: int | None = None
        self.writer: LargeObjectWriter
        self._parsing = False

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict[str, UploadedFile]] | None:
        # Refuse an oversized body before reading any of it.
        if self.max_size is not None and content_length > self.max_size + FORM_SLACK:
            raise UploadTooLarge(self.max_size)
        if self.quota is not None and content_length > self._room() + FORM_SLACK:
            raise self._over_quota(content_length)
        if self._parsing:
            return None
        # Django's parser tells no handler when it gives up half-way through a file (a
        # body it cannot decode, a database error): run it from here to unlink the
        # object of the file in progress. It closes the files it had completed itself.
        self._parsing = True
        handlers = self.request.upload_handlers if self.request is not None else [self]
        try:
            post, files = MultiPartParser(META, input_data, handlers, encoding).parse()
            return post, files
        except BaseException:
            self.upload_interrupted()
            raise
        finally:
            self._parsing = False

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        # Each chunk goes to the database without waiting for the previous write (on
        # psycopg 3): the next chunk arrives from the client meanwhile.
        self.writer = self.storage.create_writer(unadopted=True)
        self.oid = self.writer.oid
        self.hasher = Hasher()
        self.size = 0
        self.buffer = bytearray()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.buffer += raw_data
        self.size += len(raw_data)
        self.received += len(raw_data)
        if self.max_size is not None and self.size > self.max_size:
            self.upload_interrupted()
            raise UploadTooLarge(self.max_size)
        if self.quota is not None and self.received > self._room():
            self.upload_interrupted()
            raise self._over_quota(self.received)
        if len(self.buffer) >= self.chunk_size:
            self._flush()

    def _room(self) -> int:
        assert self.quota is not None
        return self.quota[1].room or 0

    def _over_quota(self, size: int) -> UploadTooLarge:
        assert self.quota is not None
        which, usage = self.quota
        return UploadTooLarge(self._room(), str(quotas.QuotaExceeded(which, usage, size)))

    def _flush(self) -> None:
        if not self.buffer:
            return
        assert self.oid is not None
        data = bytes(self.buffer)
        self.buffer.clear()
        self.writer.write(self.size - len(data), data)
        self.hasher.update(data)

    def file_complete(self, file_size: int) -> LargeObjectUploadedFile:
        self._flush()
        try:
            self.writer.close()
        except BaseException:
            self.upload_interrupted()
            raise
        oid, self.oid = self.oid, None  # from here on, the uploaded file owns it
        assert oid is not None
        return LargeObjectUploadedFile(
            oid,
            self.storage,
            self.file_name or "upload",
            self.content_type,
            self.charset,
            self.hasher.digest(),
            self.content_type_extra,
        )

    def upload_complete(self) -> None:
        # Another handler may stop the upload (StopUpload) in the middle of a file; Django
        # then calls this without telling us the file will not be completed.
        self.upload_interrupted()

    def upload_interrupted(self) -> None:
        if self.oid is not None:
            self.oid = None
            self.writer.abort()
