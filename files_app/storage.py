"""A Django storage backend that keeps each file in a PostgreSQL large object."""

from __future__ import annotations

import functools
import io
import mimetypes
import os
import posixpath
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import File
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, connections, transaction
from django.urls import reverse
from django.utils.deconstruct import deconstructible
from django.utils.encoding import filepath_to_uri
from storages.base import BaseStorage
from storages.utils import clean_name, get_available_overwrite_name

from files_app import largeobjects, mediatypes, streaming
from files_app.conf import app_settings
from files_app.digests import Digest
from files_app.responder import Segment

__all__ = ["LargeObjectFile", "LargeObjectStorage", "LargeObjectUploadedFile"]

if TYPE_CHECKING:
    _BytesFile = File[bytes]
else:
    _BytesFile = File

URL_SALT = "files_app.storage.url"
# Room that _save() adds to a name for the "<oid>-<key>/" directory.
OID_DIR_LENGTH = 10 + 1 + largeobjects.KEY_LENGTH + 1


_KEY_DIGITS = frozenset(largeobjects.KEY_DIGITS)


def name_parts(name: str | None) -> tuple[int, str | None] | None:
    """Return the OID in a storage name and the object's key, if the name has one, or None
    if it names no large object.

    Names are "[dir/]<oid>-<key>/<basename>"; "[dir/]<oid>/<basename>" (before keys) and a
    bare "<oid>" (a LargeObjectField's) name an object by its OID alone.
    """
    if not name:
        return None
    parts = str(name).split("/")
    candidate = parts[0] if len(parts) == 1 else parts[-2]
    digits, _, key = candidate.partition("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        return None
    if "-" in candidate and not (0 < len(key) <= 10 and set(key) <= _KEY_DIGITS):
        return None
    oid = int(digits)
    return (oid, key or None) if 0 < oid < 2**32 else None


def oid_from_name(name: str | None) -> int | None:
    """Return the OID in a storage name (see :func:`name_parts`), or None."""
    parts = name_parts(name)
    return None if parts is None else parts[0]


def recorded_type(name: str, declared: str | None) -> str | None:
    """Return the media type to record with a file saved as ``name``: the one its name says,
    as FileSystemStorage's files are served, else the one the upload declared (browsers
    declare what the client's system maps the name to, Django's test files "text/plain"),
    unless that says nothing ("application/octet-stream")."""
    guessed = mimetypes.guess_type(name)[0] if name else None
    if guessed:
        return guessed
    parsed = mediatypes.parse(declared)
    if parsed is not None and parsed.essence != "application/octet-stream":
        return parsed.essence
    return None


def describe_name(name: str, using: str) -> tuple[int, largeobjects.Description]:
    """Return the OID of the object ``name`` names in database ``using``, and what
    files_app recorded of it.

    Raise FileNotFoundError if there is no such object, or if the object at that OID is
    not the one the name describes: a name with a key ("<oid>-<key>/…") names the object
    files_app created at that OID at that time, not another object that took the OID later
    or in another database (a restore, ``loaddata`` elsewhere). Names without a key (older
    ones, a bare OID) name whatever object has the OID.
    """
    parts = name_parts(name)
    if parts is None:
        raise FileNotFoundError(f"{name!r} is not the name of a large object.")
    oid, key = parts
    described = largeobjects.describe(oid, using)
    if described is None:
        raise FileNotFoundError(f"Large object {oid} ({name!r}) does not exist.")
    if key is not None and described.key != key:
        raise FileNotFoundError(
            f"Large object {oid} is not the file {name!r} names: another object has its OID "
            "(the database was restored or loaded from elsewhere?)."
        )
    return oid, described


def object_name(directory: str, oid: int, key: str | None, basename: str) -> str:
    """Return the storage name of object ``oid`` saved as ``directory/basename``."""
    return posixpath.join(directory, f"{oid}-{key}" if key else str(oid), basename or str(oid))


class SizeMismatch(Exception):
    """A large object (or a moved file: ``what`` says which) does not have the size it was
    said to have."""

    def __init__(self, what: int | str, expected: int, actual: int) -> None:
        self.oid = what if isinstance(what, int) else None
        self.expected, self.actual = expected, actual
        name = f"Large object {what}" if isinstance(what, int) else what
        super().__init__(f"{name} holds {actual} bytes, not {expected}.")


class LargeObjectIO(io.RawIOBase):
    """A read-only, seekable raw stream over a large object, read by offset.

    ``size``, if given, is taken on trust until :meth:`read_first` or :meth:`check_size`
    compares it with the object.
    """

    def __init__(self, oid: int, using: str, size: int | None = None) -> None:
        self.oid = oid
        self.using = using
        self._size = size
        self._size_checked = False
        self._pos = 0
        self._actual: int | None = None  # the object's size, read by the row's query
        self._first: tuple[int, bytes] | None = None  # a read made by that query

    def prefetched(self, actual: int, offset: int, data: bytes) -> None:
        """Take the object's size and a read at ``offset`` made with the row's query (the
        views' one round trip): :meth:`read_first` and :meth:`check_size` use them."""
        self._actual, self._first = actual, (offset, data)

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = largeobjects.size(self.oid, self.using)
            self._size_checked = True
        return self._size

    def read_first(self, offset: int, length: int) -> bytes:
        """Return :meth:`read_at`; in the same query, check the size (SizeMismatch)."""
        first, self._first = self._first, None
        if first is not None and first[0] == offset:
            self.check_size()
            data = first[1][:length]
            if len(data) < length and offset + len(data) < self.size:  # read the rest
                data += self.read_at(offset + len(data), length - len(data))
            return data
        if self._size_checked or self._size is None:
            return self.read_at(offset, length)
        data, actual = largeobjects.read_with_size(
            self.oid, offset, min(length, 2**31 - 1), self.using
        )
        self._check(actual)
        return data

    def check_size(self) -> None:
        """Raise SizeMismatch if the object's size is not the one given."""
        if not self._size_checked and self._size is not None:
            actual = self._actual
            self._check(largeobjects.size(self.oid, self.using) if actual is None else actual)

    def _check(self, actual: int) -> None:
        self._size_checked = True
        if actual != self._size:
            assert self._size is not None
            raise SizeMismatch(self.oid, self._size, actual)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_closed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_closed()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"Invalid whence {whence!r}: use 0, 1 or 2.")
        if pos < 0:
            raise ValueError(f"Negative seek position {pos!r}.")
        self._pos = pos
        return pos

    def read_at(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes from ``offset`` without moving the position."""
        if length <= 0:
            return b""
        return largeobjects.read(self.oid, offset, min(length, 2**31 - 1), self.using)

    def read_pieces(self, pieces: Iterable[tuple[int, int]]) -> Generator[bytes, None, None]:
        """Yield the bytes of each ``(offset, length)`` piece, reading ahead
        (largeobjects.read_pieces)."""
        return largeobjects.read_pieces(self.oid, pieces, self.using)

    def stream(
        self, segments: Sequence[Segment], chunk: int, first: bytes
    ) -> Generator[bytes, None, None]:
        """Yield a planned body (files_app.streaming.stream), ``first`` read already."""
        return streaming.stream(self.read_pieces, segments, chunk, first)

    def astream(
        self, segments: Sequence[Segment], chunk: int, first: bytes
    ) -> AsyncIterator[bytes]:
        """:meth:`stream` for ASGI, an async iterator.

        With psycopg 3 and psycopg-pool, the reads run on the event loop through
        :mod:`files_app.largeobjects_async`'s pool: no thread at all. Otherwise (psycopg2, or
        inside a transaction, whose uncommitted objects only its own connection sees) each
        read is handed to the request's thread.
        """
        from files_app import largeobjects_async

        if largeobjects_async.available() and not connections[self.using].in_atomic_block:
            reads = functools.partial(largeobjects_async.read_pieces, self.oid, using=self.using)
            return streaming.astream_async(reads, segments, chunk, first)
        return streaming.astream(self.read_pieces, segments, chunk, first)

    def readinto(self, buffer: Any) -> int:
        self._check_closed()
        view = memoryview(buffer).cast("B")
        data = self.read_at(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed large object.")


class LargeObjectFile(_BytesFile):
    """A lazily read large object, opened by :class:`LargeObjectStorage`."""

    def __init__(
        self,
        name: str,
        oid: int,
        storage: LargeObjectStorage,
        size: int | None = None,
        *,
        using: str | None = None,
        description: largeobjects.Description | None = None,
    ) -> None:
        # using: read from another database than the storage's (a hot standby of it).
        # description: what files_app's comment says of the object, if it was read.
        self.raw = LargeObjectIO(oid, using or storage.using, size)
        self.description = description
        self.buffered = io.BufferedReader(self.raw, buffer_size=storage.chunk_size)
        super().__init__(self.buffered, name)
        self.oid = oid
        self.mode = "rb"
        self._storage = storage

    @property
    def size(self) -> int:
        return self.raw.size

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the whole object in chunks, straight from the database."""
        chunk_size = chunk_size or self._storage.chunk_size
        self.seek(0)
        offset, end = 0, self.size
        while offset < end:
            data = self.raw.read_at(offset, min(chunk_size, end - offset))
            if not data:
                break
            offset += len(data)
            yield data
        self.buffered.seek(offset)

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return self.size > (chunk_size or self._storage.chunk_size)

    def open(self, mode: str | None = None, *args: Any, **kwargs: Any) -> LargeObjectFile:
        if mode not in (None, "rb"):
            raise ValueError(f"Large objects open read-only in binary mode ('rb'), not {mode!r}.")
        if self.closed:
            self.raw = LargeObjectIO(self.oid, self._storage.using, self.raw._size)
            self.buffered = io.BufferedReader(self.raw, buffer_size=self._storage.chunk_size)
            self.file = self.buffered
        else:
            self.seek(0)
        return self

    def close(self) -> None:
        self.buffered.close()

    def reopened(self) -> LargeObjectFile:
        """Return this object again, its size read from the database."""
        return LargeObjectFile(
            str(self.name),
            self.oid,
            self._storage,
            using=self.raw.using,
            description=self.description,
        )

    def described(self) -> largeobjects.Description:
        """Return what files_app's comment says of the object (read once)."""
        if self.description is None:
            self.description = largeobjects.describe(self.oid, self.raw.using)
            if self.description is None:
                raise FileNotFoundError(f"Large object {self.oid} does not exist.")
        return self.description

    def created_time(self) -> datetime | None:
        """Return when files_app created the object, or None for an object it did not."""
        created = self.described().created
        return None if created is None else datetime.fromtimestamp(created, tz=UTC)

    @property
    def filename(self) -> str:
        """Return the file's name without directories: the name's last part, or for a bare
        OID (a LargeObjectField's) the name recorded with the object, if any."""
        name = str(self.name)
        if "/" in name:
            return name.rsplit("/", 1)[-1]
        return self.described().name or name

    @property
    def content_type(self) -> str | None:
        """Return the media type recorded with the object when it was saved, or None."""
        return self.described().content_type


class LargeObjectWriter:
    """A new large object, written piece by piece (pipelined on psycopg 3).

    :meth:`close` waits for every write and raises the first error; :meth:`abort` stops
    and unlinks the object. ``unadopted`` marks the object as an upload's that no row has
    adopted yet (:class:`LargeObjectUploadedFile`): ``files_sweep`` frees it if nothing
    ever does.
    """

    def __init__(
        self,
        using: str,
        *,
        unadopted: bool = False,
        name: str | None = None,
        content_type: str | None = None,
    ) -> None:
        self.using = using
        self.oid, self.description = largeobjects.create_described(
            using, unadopted=unadopted, name=name, content_type=content_type
        )
        self._writer = largeobjects.Writer(self.oid, using)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._writer.write(offset, data)

    def close(self) -> None:
        self._writer.close()

    def abort(self, *, unlink: bool = True) -> None:
        """Stop writing and unlink the object; inside a transaction that is being rolled
        back, ``unlink=False``: the rollback removes the object, and a statement in an
        aborted transaction would only raise over the error that aborted it."""
        self._writer.abort()
        if unlink:
            largeobjects.unlink(self.oid, self.using)


class LargeObjectUploadedFile(UploadedFile):
    """An uploaded file already written into a large object, waiting to be adopted.

    :class:`LargeObjectStorage` keeps the object instead of copying it when a field saves
    this file. The object carries an "unadopted" mark from its creation until a save takes
    it off, in the save's transaction: when the file is closed (the request's files are
    closed when the request ends), an object still marked — nothing saved it, or the save
    rolled back — is unlinked. Nothing here waits for a commit, so a save inside an outer
    transaction that the request does not own (``TestCase``, ``ATOMIC_REQUESTS``) keeps its
    object as long as that transaction does; whatever a crash leaves marked,
    ``files_sweep`` frees.
    """

    def __init__(
        self,
        oid: int,
        storage: LargeObjectStorage,
        name: str,
        content_type: str | None,
        charset: str | None,
        digest: Digest,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        self.oid = oid
        self.using = storage.using
        self.digest = digest
        self._released = False
        self._opened = LargeObjectFile(name, oid, storage, size=digest.size)
        super().__init__(
            self._opened.file, name, content_type, digest.size, charset, content_type_extra
        )

    @property
    def sha256(self) -> str:
        return self.digest.sha256

    @property
    def head(self) -> bytes:
        return self.digest.head

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        return self._opened.chunks(chunk_size)

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return self._opened.multiple_chunks(chunk_size)

    def adopt(self, name: str | None = None) -> largeobjects.Description | None:
        """Keep the object: a row references it now (its mark goes in this transaction);
        record ``name`` (by default the upload's) and the upload's content type with it."""
        return largeobjects.adopt(
            self.oid,
            self.using,
            name=name or posixpath.basename(str(self.name or "")),
            content_type=recorded_type(name or str(self.name or ""), self.content_type),
        )

    def close(self) -> None:
        self._opened.close()
        if self._released:
            return  # closing twice must not try again
        self._released = True
        if connections[self.using].needs_rollback:
            return  # no statement runs in a broken transaction: the sweeper frees it
        # Nothing adopted it (a form error, a rolled-back save): do not leave an orphan.
        with suppress(DatabaseError):  # the database is gone: the sweeper frees it later
            largeobjects.unlink_unadopted(self.oid, self.using)


@deconstructible(path="files_app.storage.LargeObjectStorage")
class LargeObjectStorage(BaseStorage):  # type: ignore[misc]
    """Store files as PostgreSQL large objects.

    Names are ``[dir/]<oid>/<basename>``; a bare ``<oid>`` names an object too. A stored
    object is never changed: saving again creates a new object.
    """

    using: str
    chunk_size: int
    base_url: str | None
    url_expire: int | float | timedelta | None

    def get_default_settings(self) -> dict[str, Any]:
        return {
            "using": app_settings.DATABASE,
            "chunk_size": app_settings.CHUNK_SIZE,
            "base_url": None,
            # Seconds (or a timedelta) a url() stays valid; None: until the file is gone.
            "url_expire": None,
        }

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if not isinstance(self.chunk_size, int) or not 0 < self.chunk_size < 2**31:
            raise ImproperlyConfigured(
                f"LargeObjectStorage 'chunk_size' must be a positive integer below 2**31, "
                f"not {self.chunk_size!r}."
            )

    def describe(self, name: str) -> tuple[int, largeobjects.Description]:
        """Return the OID of the object ``name`` names and what files_app recorded of it
        (:func:`describe_name`)."""
        return describe_name(name, self.using)

    def _open(self, name: str, mode: str = "rb") -> LargeObjectFile:
        if mode != "rb":
            raise ValueError(
                f"Large objects open read-only in binary mode ('rb'), not {mode!r}: "
                "to change a file, save a new one."
            )
        oid, described = self.describe(name)
        return LargeObjectFile(name, oid, self, description=described)

    def _save(self, name: str, content: File[Any] | IO[Any]) -> str:
        directory, basename = posixpath.split(clean_name(name))
        if isinstance(content, LargeObjectUploadedFile) and content.using == self.using:
            # Streamed into a large object by LargeObjectUploadHandler: keep it, no copy.
            adopted = content.adopt(basename)
            key = None if adopted is None else adopted.key
            return object_name(directory, content.oid, key, basename)
        content_type = recorded_type(basename, getattr(content, "content_type", None))
        # One transaction: a failure part-way leaves no half-written object behind.
        with transaction.atomic(using=self.using):
            writer = self.create_writer(name=basename, content_type=content_type)
            offset = 0
            try:
                for chunk in self._chunks(content):
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    if data:
                        writer.write(offset, data)
                        offset += len(data)
            except BaseException:
                writer.abort(unlink=False)  # the rollback of the atomic block removes it
                raise
            writer.close()
        return object_name(directory, writer.oid, writer.description.key, basename)

    def create_writer(
        self,
        *,
        unadopted: bool = False,
        name: str | None = None,
        content_type: str | None = None,
    ) -> LargeObjectWriter:
        """Create an empty large object and return a writer for it (``unadopted``: an
        upload's, see :class:`LargeObjectUploadedFile`; ``name`` and ``content_type`` are
        recorded with the object)."""
        return LargeObjectWriter(
            self.using, unadopted=unadopted, name=name, content_type=content_type
        )

    # Bytes that arrive over several requests (resumable uploads, files_app.tus) are written
    # into an object of their own by OID, and a row adopts it when the last byte is in.

    def create_object(self) -> int:
        """Create an empty large object for bytes that arrive over several requests (a
        resumable upload) and return its OID."""
        return largeobjects.create(self.using)

    def write_object(self, oid: int, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset`` of the object :meth:`create_object` made."""
        largeobjects.write(oid, offset, data, self.using)

    def unlink_objects(self, oids: list[int]) -> int:
        """Unlink objects :meth:`create_object` made that no row ever adopted (unfinished
        uploads), in one statement; return how many were still there."""
        return largeobjects.unlink_many(oids, self.using)[0]

    def _chunks(self, content: Any) -> Iterator[bytes | str]:
        # Storage.save() wraps file-likes in File; _save() may also be called directly.
        source = content if hasattr(content, "chunks") else File(content)
        yield from source.chunks(self.chunk_size)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        # Every save gets a new OID, so names never collide; leave room for "<oid>/".
        name = clean_name(name)
        if max_length is not None:
            max_length -= OID_DIR_LENGTH
        return str(get_available_overwrite_name(name, max_length))

    def delete(self, name: str) -> None:
        """Delete the file, unless a row of a ``LargeObjectField`` (any model's) or a
        resumable upload still holds its object: then the last of them frees it.

        Deduplicated files share one object, and ``FieldFile.delete(save=False)`` runs
        before its own row lets go; the unlink trigger frees the object when the last row
        referencing it is deleted or changed, whatever the route. ``FileField`` columns
        (names, not OIDs) are not counted: deleting through them deletes, as on any storage.
        A name whose object is gone, or whose OID another object holds now (see
        :meth:`describe`), deletes nothing.
        """
        try:
            oid, _ = self.describe(name)
        except FileNotFoundError:
            return
        largeobjects.unlink_unreferenced(oid, self.using)

    def exists(self, name: str) -> bool:
        try:
            self.describe(name)
        except FileNotFoundError:
            return False
        return True

    def size(self, name: str) -> int:
        return largeobjects.size(self.describe(name)[0], self.using)

    def url(self, name: str | None, expire: int | float | timedelta | None = None) -> str:
        """Return a signed URL that serves the file ``name`` (OIDs alone are guessable).

        The signature covers the name (so the link serves it under no other name), this
        storage's database alias and, with ``expire`` (seconds or a timedelta; by default the
        storage's ``url_expire``), when the link stops working. Like a presigned S3 URL it is
        a bearer capability: whoever holds it may download the file until it expires. As on
        other storages, a name that does not exist still gets a URL, which answers 404.
        """
        name = str(name or "")
        expire = self.url_expire if expire is None else expire
        if isinstance(expire, timedelta):
            expire = expire.total_seconds()
        expires = None if expire is None else int(time.time() + expire)
        token = sign_link(StorageLink(name, self.using, expires))
        filename = link_filename(name)
        if self.base_url is not None:
            return f"{self.base_url}{token}/{filepath_to_uri(filename)}"
        return str(
            reverse("files_app:storage-file", kwargs={"token": token, "filename": filename})
        )

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        raise NotImplementedError(
            "LargeObjectStorage cannot list a directory: a large object has no name, the rows "
            "that hold its name do (query your model instead)."
        )

    def get_created_time(self, name: str) -> datetime:
        created = self.describe(name)[1].created
        if created is None:
            raise NotImplementedError(f"Large object {name!r} was not created by files_app.")
        return datetime.fromtimestamp(created, tz=UTC)

    def get_modified_time(self, name: str) -> datetime:
        # Objects never change after they are committed.
        return self.get_created_time(name)

    def get_accessed_time(self, name: str) -> datetime:
        return self.get_created_time(name)


@dataclass(frozen=True)
class StorageLink:
    """What a link made by :meth:`LargeObjectStorage.url` names: a file of a database."""

    name: str
    using: str
    expires: int | None = None  # Unix seconds

    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires


def link_filename(name: str) -> str:
    """Return the file name a link to the file ``name`` ends with."""
    return posixpath.basename(name) or "download"


def sign_link(link: StorageLink) -> str:
    """Return the signed token of ``link`` (URL-safe)."""
    payload: dict[str, Any] = {"n": link.name, "d": link.using}
    if link.expires is not None:
        payload["e"] = link.expires
    return signing.dumps(payload, salt=URL_SALT, compress=True)


def read_link(token: str) -> StorageLink | None:
    """Return the link a token signed by :func:`sign_link` names, or None if it is not one."""
    try:
        payload = signing.loads(token, salt=URL_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    name, using, expires = payload.get("n"), payload.get("d"), payload.get("e")
    if not isinstance(name, str) or not isinstance(using, str):
        return None
    if expires is not None and not isinstance(expires, int):
        return None
    return StorageLink(name, using, expires)
