"""Stored files kept in another Django storage (S3, the file system) after ``files_move``:
ranged reads in constant memory, for the views, the commands and the move itself.

``storage.open()`` is not enough: django-storages' ``S3File`` downloads the whole object
into a temporary file on its first read. On an ``S3Storage`` each run of consecutive reads
is one ``GET`` with a ``Range`` header, read as it arrives; any other storage must open its
files seekable (``FileSystemStorage`` does), and is read by ``seek()`` and ``read()``.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.core.exceptions import SuspiciousOperation
from django.core.files.base import File
from django.core.files.storage import InvalidStorageError, Storage, storages

from files_app import streaming
from files_app.conf import app_settings
from files_app.responder import Segment
from files_app.storage import SizeMismatch

if TYPE_CHECKING:
    _BytesFile = File[bytes]
else:
    _BytesFile = File

logger = logging.getLogger("files_app")


class StorageUnavailable(OSError):
    """The storage holding a moved file did not answer (a network or service error)."""


def get_storage(alias: str) -> Storage:
    """Return the storage of ``STORAGES[alias]``; FileNotFoundError if there is none (a row
    names a storage the settings no longer have: its bytes cannot be reached)."""
    try:
        return storages[alias]
    except InvalidStorageError as exc:
        raise FileNotFoundError(f"The storage {alias!r} is not in STORAGES.") from exc


def is_s3(storage: Storage) -> bool:
    """Return whether ``storage`` is a django-storages ``S3Storage``."""
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # boto3 is not installed: no storage can be an S3Storage
        return False
    return isinstance(storage, S3Storage)


def _read_exactly(file: Any, length: int) -> bytes:
    parts, wanted = [], length
    while wanted > 0:
        data = file.read(wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
    return b"".join(parts)


def probe(storage: Storage) -> None:
    """Raise StorageUnavailable, saying why, if ``storage`` cannot be reached.

    On an ``S3Storage``: its bucket must exist and answer (``HeadBucket``); other storages
    are asked whether a name exists, which reaches a remote one.
    """
    if is_s3(storage):
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        s3: Any = storage
        try:
            s3.connection.meta.client.head_bucket(Bucket=s3.bucket_name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket"):
                raise StorageUnavailable(
                    f"the bucket {s3.bucket_name!r} does not exist (create it first)"
                ) from exc
            raise StorageUnavailable(
                f"S3 answered {code} for the bucket {s3.bucket_name!r}: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 cannot be reached: {exc}") from exc
        return
    try:
        storage.exists("files_app-probe")
    except Exception as exc:  # a remote storage's own errors: any of them means "not now"
        raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc


def presigned_url(
    alias: str, name: str, *, content_type: str, disposition: str, expire: int
) -> str:
    """Return a URL of ``name`` in the S3 storage ``alias`` that anyone may ``GET`` (ranges
    included) for ``expire`` seconds, answered with this ``Content-Type`` and
    ``Content-Disposition`` (django-storages' ``url(name, parameters=…, expire=…)``)."""
    storage = get_storage(alias)
    if not is_s3(storage):
        raise FileNotFoundError(f"The storage {alias!r} is not an S3Storage: no presigned URL.")
    parameters = {"ResponseContentType": content_type, "ResponseContentDisposition": disposition}
    return str(storage.url(name, parameters=parameters, expire=expire))  # type: ignore[call-arg]


class Reader:
    """Reads by offset from one file of a storage that opens seekable files."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.storage, self.name = storage, name

    def size(self) -> int:
        """Return the file's size; FileNotFoundError if it does not exist."""
        return int(self.storage.size(self.name))

    def read_with_size(self, offset: int, length: int) -> tuple[bytes, int]:
        """Return up to ``length`` bytes at ``offset``, and the file's size."""
        with self.storage.open(self.name, "rb") as opened:
            opened.seek(offset)
            return _read_exactly(opened, length), int(opened.size)

    def chunks(self, size: int, chunk: int) -> Generator[bytes, None, None]:
        """Yield the file's first ``size`` bytes in pieces of ``chunk`` bytes."""
        offsets = range(0, size, chunk)
        return self.read_pieces((offset, min(chunk, size - offset)) for offset in offsets)

    def read_pieces(self, pieces: Iterable[tuple[int, int]]) -> Generator[bytes, None, None]:
        """Yield the bytes of each ``(offset, length)`` piece, the file opened once."""
        with self.storage.open(self.name, "rb") as opened:
            position = 0
            for offset, length in pieces:
                if offset != position:
                    opened.seek(offset)
                data = _read_exactly(opened, length)
                position = offset + len(data)
                yield data


class S3Reader(Reader):
    """Reads an object of an ``S3Storage`` with ranged ``GET``s, streamed as they arrive."""

    def __init__(self, storage: Storage, name: str) -> None:
        from storages.utils import clean_name, safe_join

        super().__init__(storage, name)
        s3: Any = storage
        self.client = s3.connection.meta.client
        self.bucket = s3.bucket_name
        # The key S3Storage itself would use (django-storages' public helpers): the name
        # under the storage's location, never outside it.
        try:
            self.key = safe_join(s3.location, clean_name(name))
        except ValueError as exc:
            raise SuspiciousOperation(f"{name!r} lies outside the storage's location.") from exc

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.key!r} is not in bucket {self.bucket!r}.") from exc
            if code == "InvalidRange":
                return None  # at or past the end (an empty object has no byte 0)
            raise StorageUnavailable(f"S3 answered {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 cannot be reached: {exc}") from exc

    def _get(self, offset: int, end: int | str = "") -> Any:
        return self._call("get_object", Range=f"bytes={offset}-{end}")

    def _read(self, body: Any, offset: int, length: int) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            return _read_exactly(body, length)
        except BotoCoreError as exc:  # IncompleteReadError, ResponseStreamingError, timeouts
            raise StorageUnavailable(
                f"S3 stopped sending {self.key!r} while bytes {offset}-{offset + length - 1} "
                f"were read: {exc}"
            ) from exc

    def size(self) -> int:
        return int(self._call("head_object")["ContentLength"])

    def read_with_size(self, offset: int, length: int) -> tuple[bytes, int]:
        answer = self._get(offset, offset + length - 1) if length > 0 else None
        if answer is None:
            return b"", self.size()
        with answer["Body"] as body:
            data = self._read(body, offset, length)
        return data, int(answer["ContentRange"].rsplit("/", 1)[1])

    def read_pieces(self, pieces: Iterable[tuple[int, int]]) -> Generator[bytes, None, None]:
        # Consecutive pieces come from one open-ended GET, read as they are needed; a gap
        # (the next range of a multipart answer) starts another.
        body: Any = None
        position = -1
        try:
            for offset, length in pieces:
                if body is None or offset != position:
                    if body is not None:
                        body.close()
                    answer = self._get(offset)
                    body = answer["Body"] if answer is not None else io.BytesIO()
                data = self._read(body, offset, length)
                position = offset + len(data)
                yield data
        finally:
            if body is not None:
                body.close()


def reader(storage: Storage, name: str) -> Reader:
    """Return the reader for ``name`` in ``storage``."""
    return S3Reader(storage, name) if is_s3(storage) else Reader(storage, name)


class ExternalIO(io.RawIOBase):
    """What the views read a moved file through: :class:`files_app.storage.LargeObjectIO`'s
    interface over a file of another storage. ``size`` is taken on trust until
    :meth:`read_first` or :meth:`check_size` compares it with the file.

    A file the storage no longer has is logged as an error when a view finds it missing
    (the view answers 404); a storage that stops sending part-way through a body ends it
    short, with one warning (see :meth:`stream`).
    """

    def __init__(
        self, storage: Storage, name: str, size: int | None = None, *, alias: str | None = None
    ) -> None:
        self.storage, self.name = storage, name
        self.alias = alias if alias is not None else repr(storage)
        self.reader = reader(storage, name)
        self._size = size
        self._size_checked = False
        self._pos = 0

    @contextmanager
    def _missing_logged(self) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            # A row names a file its storage lost: worth an operator's attention, unlike
            # a 404 for a URL nobody stored.
            logger.error(
                "The file %r is missing from the storage %r: %s", self.name, self.alias, exc
            )
            raise

    @property
    def size(self) -> int:
        if self._size is None:
            with self._missing_logged():
                self._size = self.reader.size()
            self._size_checked = True
        return self._size

    def read_first(self, offset: int, length: int) -> bytes:
        """Return the bytes at ``offset``, checking the size in the same request."""
        with self._missing_logged():
            data, actual = self.reader.read_with_size(offset, length)
        self._check(actual)
        return data

    def check_size(self) -> None:
        """Raise SizeMismatch if the file's size is not the one given."""
        if not self._size_checked:
            with self._missing_logged():
                actual = self.reader.size()
            self._check(actual)

    def _check(self, actual: int) -> None:
        if self._size is None:
            self._size = actual
        self._size_checked = True
        if actual != self._size:
            raise SizeMismatch(f"File {self.name!r} of {self.storage!r}", self._size, actual)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data, _ = self.reader.read_with_size(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read_pieces(self, pieces: Iterable[tuple[int, int]]) -> Generator[bytes, None, None]:
        return self.reader.read_pieces(pieces)

    def stream(
        self, segments: Sequence[Segment], chunk: int, first: bytes
    ) -> Generator[bytes, None, None]:
        """Yield a planned body (files_app.streaming.stream), ``first`` read already.

        If the storage fails part-way, the body ends short with one warning: it raises
        ``ConnectionResetError``, which WSGI servers (gunicorn, wsgiref) take for a lost
        connection and close it without a traceback; the client keeps correct bytes and
        can resume with a Range request.
        """
        body = streaming.stream(self.read_pieces, segments, chunk, first)
        sent = 0
        try:
            for data in body:
                yield data
                sent += len(data)
        except OSError as exc:
            self._ended_short(sent, exc)
            raise ConnectionResetError(
                errno.ECONNRESET, f"The storage {self.alias!r} stopped sending {self.name!r}."
            ) from None
        finally:
            body.close()

    async def astream(
        self, segments: Sequence[Segment], chunk: int, first: bytes
    ) -> AsyncIterator[bytes]:
        """:meth:`stream` for ASGI, each read handed to the request's thread.

        A storage failing part-way ends the body with ``CancelledError``, which Django's
        ASGI handler takes for a client gone during the response: it stops without a
        traceback, and the server closes the connection.
        """
        body = streaming.astream(self.read_pieces, segments, chunk, first)
        sent = 0
        try:
            async for data in body:
                yield data
                sent += len(data)
        except OSError as exc:
            self._ended_short(sent, exc)
            raise asyncio.CancelledError from None
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()

    def _ended_short(self, sent: int, exc: OSError) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        logger.warning(
            "The download of %r from the storage %r ends short after %d bytes: %s",
            self.name,
            self.alias,
            sent,
            reason,
        )


class ExternalFile(_BytesFile):
    """A moved stored file, read lazily from its storage."""

    def __init__(self, alias: str, name: str, size: int | None = None) -> None:
        self.alias = alias
        self.raw = ExternalIO(get_storage(alias), name, size, alias=alias)
        super().__init__(io.BufferedReader(self.raw, app_settings.CHUNK_SIZE), name)
        self.mode = "rb"

    @property
    def size(self) -> int:
        return self.raw.size

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the whole file in chunks, in constant memory."""
        yield from self.raw.reader.chunks(self.size, chunk_size or app_settings.CHUNK_SIZE)

    def reopened(self) -> ExternalFile:
        """Return this file again, its size read from the storage."""
        return ExternalFile(self.alias, str(self.name))
