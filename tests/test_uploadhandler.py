"""LargeObjectUploadHandler: request bodies go straight into large objects."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError
from django.test import RequestFactory, override_settings

from files_app import largeobjects, maintenance
from files_app.models import StoredFile
from files_app.storage import LargeObjectUploadedFile, oid_from_name
from files_app.uploadhandler import LargeObjectUploadHandler, UploadTooLarge
from tests.testapp.models import Photo

pytestmark = pytest.mark.django_db(transaction=True)

DATA = bytes(range(256)) * 1024  # 256 KiB: several handler chunks at 64 KiB


def _upload(data: bytes = DATA, name: str = "up.bin") -> LargeObjectUploadedFile:
    request = RequestFactory().post(
        "/", {"file": SimpleUploadedFile(name, data, "application/x-test")}
    )
    request.upload_handlers = [LargeObjectUploadHandler(request)]
    upload = request.FILES["file"]
    assert isinstance(upload, LargeObjectUploadedFile)
    return upload


def test_the_upload_is_stored_hashed_and_readable(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = _upload()
    assert lo_count() == before + 1
    assert (upload.name, upload.size, upload.content_type) == (
        "up.bin",
        len(DATA),
        "application/x-test",
    )
    assert upload.sha256 == hashlib.sha256(DATA).hexdigest()
    assert upload.head == DATA[:8192]
    assert b"".join(upload.chunks()) == DATA
    assert upload.multiple_chunks(1024)
    upload.close()


def test_an_upload_nothing_saved_is_unlinked_on_close(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = _upload()
    upload.close()
    upload.close()
    assert not largeobjects.exists(upload.oid, "default")
    assert lo_count() == before


def test_a_stored_file_adopts_the_upload_without_copying(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = _upload()
    stored = StoredFile(file=upload)
    stored.save()
    upload.close()  # the request ends: the object is kept, it is referenced now
    assert stored.file.oid == upload.oid
    assert (stored.size, stored.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert lo_count() == before + 1
    stored.delete()
    assert lo_count() == before


def test_a_plain_file_field_adopts_the_upload_too(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = _upload(b"not an image", "doc.txt")
    photo = Photo()
    photo.attachment.save("doc.txt", upload, save=False)
    upload.close()
    assert oid_from_name(photo.attachment.name) == upload.oid
    assert photo.attachment.name.endswith("/doc.txt")
    assert lo_count() == before + 1
    photo.attachment.delete(save=False)


def test_a_failed_save_does_not_keep_the_upload(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    upload = _upload()
    stored = StoredFile(file=upload, name="x" * 300)
    with pytest.raises(Exception, match="too long"):
        stored.save()
    upload.close()
    assert lo_count() == before


@override_settings(FILES_APP_MAX_UPLOAD_SIZE=100_000)
def test_too_large_uploads_are_refused_and_leave_nothing(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    with pytest.raises(UploadTooLarge, match="100000 bytes"):
        _upload(b"x" * 200_000)  # refused from Content-Length, before reading
    assert lo_count() == before
    request = RequestFactory().post("/")
    handler = LargeObjectUploadHandler(request)
    handler.new_file("file", "f.bin", "application/octet-stream", None)
    handler.receive_data_chunk(b"x" * 60_000, 0)
    with pytest.raises(UploadTooLarge):
        handler.receive_data_chunk(b"x" * 60_000, 60_000)  # a body that lied about its size
    assert lo_count() == before


def test_an_interrupted_upload_is_unlinked(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    handler = LargeObjectUploadHandler(RequestFactory().post("/"))
    handler.new_file("file", "f.bin", "application/octet-stream", None)
    handler.receive_data_chunk(b"x" * 10, 0)
    handler.upload_interrupted()
    assert lo_count() == before


def _parse(body: bytes) -> tuple[object, object]:
    request = RequestFactory().generic(
        "POST", "/", body, content_type="multipart/form-data; boundary=BB"
    )
    request.upload_handlers = [LargeObjectUploadHandler(request)]
    return request.POST, request.FILES


def _part(name: str, data: bytes, encoding: str = "binary") -> bytes:
    return (
        (
            f'--BB\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def test_a_body_that_breaks_off_mid_file_leaves_nothing(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    # A complete first file, then a second one whose base64 cannot be decoded: the
    # parser gives up in the middle of the second file.
    body = _part("one.bin", b"1" * 100_000) + _part("two.bin", b"QUJD" * 50_000 + b"QU", "base64")
    with pytest.raises(MultiPartParserError):
        _parse(body + b"--BB--\r\n")
    assert lo_count() == before


def test_a_truncated_body_drops_the_partial_file(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    body = _part("one.bin", b"1" * 100_000)
    post, files = _parse(body[:50_000])  # what a WSGI server gives when the client leaves
    assert not files
    assert lo_count() == before


class _StopAfter(FileUploadHandler):
    """A second handler (a quota, say) that stops the upload part-way through a file."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def test_another_handler_stopping_the_upload_leaves_nothing(
    lo_count: Callable[[], int],
) -> None:
    before = lo_count()
    request = RequestFactory().post(
        "/", {"file": SimpleUploadedFile("big.bin", b"x" * 500_000, "application/x-test")}
    )
    # The quota handler comes first: ours passes no data on to the handlers after it.
    request.upload_handlers = [_StopAfter(request, 200_000), LargeObjectUploadHandler(request)]
    assert "file" not in request.FILES
    assert lo_count() == before
    assert maintenance.count("default") == before  # and the connection is usable again
