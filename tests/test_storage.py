"""LargeObjectStorage and LargeObjectFile: Django's Storage and File contracts."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage, storages
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.db import transaction
from django.test import override_settings

from files_app import largeobjects
from files_app.storage import (
    LargeObjectFile,
    LargeObjectStorage,
    StorageLink,
    oid_from_name,
    read_link,
)

pytestmark = pytest.mark.django_db(transaction=True)

DATA = bytes(range(256)) * 1000  # 256,000 bytes: several 64 KiB chunks


@pytest.fixture
def storage() -> LargeObjectStorage:
    return LargeObjectStorage(chunk_size=64 * 1024)


@pytest.fixture
def stored(storage: LargeObjectStorage) -> Iterator[str]:
    name = storage.save("docs/data.bin", ContentFile(DATA))
    yield name
    storage.delete(name)


def test_is_the_default_storage_from_storages_setting() -> None:
    assert isinstance(default_storage, LargeObjectStorage)
    configured = storages["default"]
    assert isinstance(configured, LargeObjectStorage)
    assert configured.using == "default"


def test_options_come_from_storages_and_unknown_ones_are_rejected() -> None:
    configured = LargeObjectStorage(using="default", chunk_size=1024, base_url="/x/")
    assert (configured.chunk_size, configured.base_url) == (1024, "/x/")
    with pytest.raises(ImproperlyConfigured, match="Invalid setting 'bucket'"):
        LargeObjectStorage(bucket="nope")


@pytest.mark.parametrize("chunk_size", [0, -1, 2**31, "64k", 1.5])
def test_invalid_chunk_size_is_rejected(chunk_size: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="chunk_size"):
        LargeObjectStorage(chunk_size=chunk_size)


def test_chunk_size_defaults_to_the_setting() -> None:
    with override_settings(FILES_APP_CHUNK_SIZE=12345):
        assert LargeObjectStorage().chunk_size == 12345


def test_save_returns_a_name_with_the_oid_and_keeps_the_bytes(
    storage: LargeObjectStorage, stored: str
) -> None:
    directory, segment, basename = stored.split("/")
    assert (directory, basename) == ("docs", "data.bin")
    oid = oid_from_name(stored)
    assert oid is not None
    described = largeobjects.describe(oid, "default")
    assert described is not None and described.key is not None
    assert segment == f"{oid}-{described.key}"
    assert largeobjects.read(oid, 0, len(DATA) + 1, "default") == DATA


def test_two_saves_of_one_name_get_two_objects(storage: LargeObjectStorage) -> None:
    first = storage.save("same.txt", ContentFile(b"one"))
    second = storage.save("same.txt", ContentFile(b"two"))
    assert first != second
    with storage.open(first) as f1, storage.open(second) as f2:
        assert (f1.read(), f2.read()) == (b"one", b"two")
    storage.delete(first)
    storage.delete(second)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: ContentFile(DATA), id="ContentFile"),
        pytest.param(lambda: SimpleUploadedFile("u.bin", DATA), id="SimpleUploadedFile"),
        pytest.param(lambda: io.BytesIO(DATA), id="BytesIO"),
        pytest.param(lambda: File(io.BytesIO(DATA)), id="File"),
    ],
)
def test_save_accepts_files_uploads_and_file_likes(
    storage: LargeObjectStorage, content: Callable[[], object]
) -> None:
    name = storage.save("x.bin", content())
    with storage.open(name) as f:
        assert f.read() == DATA
    storage.delete(name)


def test_save_accepts_a_temporary_uploaded_file(storage: LargeObjectStorage) -> None:
    upload = TemporaryUploadedFile("t.bin", "application/octet-stream", len(DATA), None)
    upload.write(DATA)
    upload.seek(0)
    name = storage.save("t.bin", upload)
    upload.close()
    assert storage.size(name) == len(DATA)
    storage.delete(name)


def test_save_of_text_content_stores_utf8(storage: LargeObjectStorage) -> None:
    name = storage.save("t.txt", ContentFile("héllo"))
    with storage.open(name) as f:
        assert f.read() == "héllo".encode()
    storage.delete(name)


def test_a_failing_upload_leaves_no_object(
    storage: LargeObjectStorage, lo_count: Callable[[], int]
) -> None:
    class Broken(File):  # type: ignore[type-arg]
        def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
            yield b"x" * 1000
            raise OSError("client went away")

    before = lo_count()
    with pytest.raises(OSError, match="client went away"):
        storage.save("broken.bin", Broken(io.BytesIO(), name="broken.bin"))
    assert lo_count() == before


def test_an_interrupt_that_aborted_the_transaction_stays_an_interrupt(
    storage: LargeObjectStorage, lo_count: Callable[[], int]
) -> None:
    # Ctrl-C inside a psycopg wait cancels the statement running: the transaction is
    # aborted when KeyboardInterrupt reaches the storage. Cleaning up with another
    # statement would raise "current transaction is aborted" over the interrupt (files_import
    # then exited 1 with a database error instead of 130).
    from django.db import DatabaseError, connection

    class Interrupted(File):  # type: ignore[type-arg]
        def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
            yield b"x" * 1000
            # The error shows now or, in pipeline mode (psycopg 3), at the end of it.
            with suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
            raise KeyboardInterrupt

    before = lo_count()
    with pytest.raises(KeyboardInterrupt):
        storage.save("interrupted.bin", Interrupted(io.BytesIO(), name="interrupted.bin"))
    assert lo_count() == before


def test_save_in_a_rolled_back_transaction_leaves_no_object(
    storage: LargeObjectStorage, lo_count: Callable[[], int]
) -> None:
    before = lo_count()
    with pytest.raises(RuntimeError), transaction.atomic():
        storage.save("rolled.bin", ContentFile(DATA))
        raise RuntimeError("rollback")
    assert lo_count() == before


def test_open_reads_lazily_with_read_seek_tell(storage: LargeObjectStorage, stored: str) -> None:
    with storage.open(stored) as f:
        assert isinstance(f, LargeObjectFile)
        assert f.size == len(DATA)
        assert f.read(3) == DATA[:3]
        assert f.tell() == 3
        f.seek(100_000)
        assert f.read(10) == DATA[100_000:100_010]
        f.seek(-5, os.SEEK_END)
        assert f.read() == DATA[-5:]
        assert f.read(10) == b""
        f.seek(10)
        f.seek(5, os.SEEK_CUR)
        assert f.tell() == 15
        assert f.seekable() and f.readable()


def test_chunks_cover_the_object_in_chunk_size_pieces(
    storage: LargeObjectStorage, stored: str
) -> None:
    with storage.open(stored) as f:
        pieces = list(f.chunks(100_000))
        assert [len(p) for p in pieces] == [100_000, 100_000, 56_000]
        assert b"".join(pieces) == DATA
        assert f.multiple_chunks(100_000)
        assert not f.multiple_chunks(len(DATA))


def test_close_is_idempotent_and_reopen_rewinds(storage: LargeObjectStorage, stored: str) -> None:
    f = storage.open(stored)
    f.read(10)
    f.close()
    f.close()
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)
    f.open()
    assert f.read(4) == DATA[:4]
    f.open("rb")
    assert f.tell() == 0
    f.close()


@pytest.mark.parametrize("mode", ["r", "wb", "w", "ab", "r+b"])
def test_other_modes_are_a_clear_value_error(
    storage: LargeObjectStorage, stored: str, mode: str
) -> None:
    with pytest.raises(ValueError, match="read-only in binary mode"):
        storage.open(stored, mode)
    with storage.open(stored) as f, pytest.raises(ValueError, match="read-only"):
        f.open(mode)


def test_missing_objects(storage: LargeObjectStorage) -> None:
    name = storage.save("gone.txt", ContentFile(b"x"))
    storage.delete(name)
    assert not storage.exists(name)
    with pytest.raises(FileNotFoundError):
        storage.open(name)
    with pytest.raises(FileNotFoundError):
        storage.size(name)
    storage.delete(name)  # deleting a missing object is a no-op


@pytest.mark.parametrize("name", ["", "notes.txt", "dir/abc/x.txt", "0", "99999999999/x"])
def test_names_without_an_oid(storage: LargeObjectStorage, name: str) -> None:
    assert oid_from_name(name) is None
    assert not storage.exists(name)
    storage.delete(name)
    with pytest.raises(FileNotFoundError, match="not the name of a large object"):
        storage.open(name)


def test_name_parsing() -> None:
    assert oid_from_name("123") == 123
    assert oid_from_name("a/b/123/c.txt") == 123
    assert oid_from_name("123/c.txt") == 123
    assert oid_from_name("4294967295") == 2**32 - 1
    assert oid_from_name("4294967296") is None
    assert oid_from_name("１２３") is None  # Unicode digits are not an OID


def test_url_is_signed_and_resolves_to_the_view(storage: LargeObjectStorage, stored: str) -> None:
    url = storage.url(stored)
    token = url.split("/")[-2]
    assert url.startswith("/files/lo/") and url.endswith("/data.bin")
    assert read_link(token) == StorageLink(stored, "default", None)
    assert read_link(token.replace(token[-1], "A" if token[-1] != "A" else "B")) is None
    assert str(oid_from_name(stored)) not in url.replace(token, "")


def test_url_with_a_base_url() -> None:
    storage = LargeObjectStorage(base_url="https://cdn.example/lo/")
    url = storage.url("dir/42/a b.txt")
    assert url.startswith("https://cdn.example/lo/") and url.endswith("/a%20b.txt")
    assert read_link(url.split("/")[-2]) == StorageLink("dir/42/a b.txt", "default", None)


def test_url_carries_its_expiry(storage: LargeObjectStorage) -> None:
    soon = read_link(storage.url("dir/42/a.txt", expire=60).split("/")[-2])
    assert soon is not None and soon.expires is not None and not soon.expired()
    assert 55 <= soon.expires - datetime.now(UTC).timestamp() <= 61
    by_default = LargeObjectStorage(url_expire=timedelta(seconds=-1)).url("dir/42/a.txt")
    past = read_link(by_default.split("/")[-2])
    assert past is not None and past.expired()


def test_listdir_says_why_it_cannot(storage: LargeObjectStorage) -> None:
    with pytest.raises(NotImplementedError, match="no name"):
        storage.listdir("")


def test_available_name_leaves_room_for_the_oid(storage: LargeObjectStorage) -> None:
    name = storage.get_available_name("photos/" + "a" * 100 + ".jpg", max_length=60)
    assert len(name) + 11 <= 60 and name.endswith(".jpg")
    with pytest.raises(SuspiciousFileOperation):
        storage.get_available_name("../etc/passwd", max_length=100)


def test_created_and_modified_times(storage: LargeObjectStorage, stored: str) -> None:
    created = storage.get_created_time(stored)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert storage.get_modified_time(stored) == created
    assert storage.get_accessed_time(stored) == created


def test_storing_and_reading_keeps_memory_bounded_by_a_few_chunks(
    storage: LargeObjectStorage,
) -> None:
    chunk = storage.chunk_size
    total = 32 * 2**20

    class Generated(File):  # type: ignore[type-arg]
        """32 MiB produced on the fly: the source itself holds one chunk at a time."""

        def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
            for i in range(total // chunk):
                yield bytes([i % 256]) * chunk

    tracemalloc.start()
    try:
        name = storage.save("big.bin", Generated(io.BytesIO(), name="big.bin"))
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with storage.open(name) as f:
            assert sum(len(c) for c in f.chunks()) == total
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    storage.delete(name)
    # A whole-file copy would be 32 MiB; a handful of chunks is what streaming costs.
    assert peak_write < 8 * chunk, peak_write
    assert peak_read < 8 * chunk, peak_read
