"""files_app.asgi: large request bodies reach the upload handler as they arrive under ASGI.

The application is driven directly with ASGI messages, so the tests control when each
piece of the body arrives and can see what the view's code had stored by then.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.asgi import ASGIHandler
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from files_app.asgi import LINGER_BYTES, ASGIBodyStream, StreamingASGIHandler
from files_app.models import StoredFile
from files_app.uploadhandler import LargeObjectUploadHandler

pytestmark = pytest.mark.django_db(transaction=True)

ADD_PATH = "/admin/files_app/storedfile/add/"
PIECE = 64 * 1024
CSRF = "a" * 32


def _session_cookie() -> str:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password="pw"))
    return client.cookies["sessionid"].value


def _upload_body(data: bytes, name: str = "big.bin") -> bytes:
    return encode_multipart(
        BOUNDARY,
        {
            "file": SimpleUploadedFile(name, data, "application/octet-stream"),
            "csrfmiddlewaretoken": CSRF,
        },
    )


def _scope(body_length: int) -> dict[str, Any]:
    headers = [
        (b"host", b"testserver"),
        (b"content-type", MULTIPART_CONTENT.encode()),
        (b"cookie", f"sessionid={_session_cookie()}; csrftoken={CSRF}".encode()),
        (b"content-length", str(body_length).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": ADD_PATH,
        "raw_path": ADD_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


class Upload:
    """Feed a body in pieces, noting how much the upload handler had stored meanwhile."""

    def __init__(self, body: bytes, *, disconnect_after: int | None = None) -> None:
        self.pieces = [body[i : i + PIECE] for i in range(0, len(body), PIECE)]
        self.disconnect_after = disconnect_after
        self.sent = 0
        self.stored_before_last_piece: int | None = None
        self.messages: list[dict[str, Any]] = []
        self.stored = 0

    def count_stored(self) -> Any:
        original = LargeObjectUploadHandler.receive_data_chunk

        def receive_data_chunk(handler: Any, raw_data: bytes, start: int) -> None:
            self.stored += len(raw_data)
            original(handler, raw_data, start)

        return mock.patch.object(
            LargeObjectUploadHandler, "receive_data_chunk", receive_data_chunk
        )

    async def receive(self) -> dict[str, Any]:
        if self.disconnect_after is not None and self.sent == self.disconnect_after:
            return {"type": "http.disconnect"}
        if self.sent >= len(self.pieces):
            await asyncio.Event().wait()  # a real server waits for the disconnect
        await asyncio.sleep(0)
        last = self.sent == len(self.pieces) - 1
        if last:
            self.stored_before_last_piece = self.stored
        piece = self.pieces[self.sent]
        self.sent += 1
        return {"type": "http.request", "body": piece, "more_body": not last}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def run(self, application: Any, scope: dict[str, Any]) -> None:
        with self.count_stored():
            asyncio.run(application(scope, self.receive, self.send))

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])


@pytest.mark.parametrize(
    ("handler_class", "streams"), [(StreamingASGIHandler, True), (ASGIHandler, False)]
)
def test_a_large_upload_is_stored_while_it_arrives(
    handler_class: type[ASGIHandler], streams: bool, lo_count: Callable[[], int]
) -> None:
    data = bytes(range(256)) * (8 * 4096)  # 8 MiB, over FILE_UPLOAD_MAX_MEMORY_SIZE
    body = _upload_body(data)
    upload = Upload(body)
    upload.run(handler_class(), _scope(len(body)))

    assert upload.status == 302
    stored = StoredFile.objects.get()
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert upload.stored_before_last_piece is not None
    if streams:
        # Only what the parser has not yet seen is missing: a few pieces at most.
        assert upload.stored_before_last_piece >= len(data) - 4 * PIECE
    else:
        # Django's own handler reads the whole body before the view starts.
        assert upload.stored_before_last_piece == 0
    assert lo_count() == 1


def test_a_streamed_upload_uses_no_temporary_file() -> None:
    data = b"\x00\x01" * (2 * 1024 * 1024)
    body = _upload_body(data)
    upload = Upload(body)
    # Django's ASGIHandler would spool the body into a SpooledTemporaryFile.
    with mock.patch("tempfile.SpooledTemporaryFile", side_effect=AssertionError("spooled")):
        upload.run(StreamingASGIHandler(), _scope(len(body)))
    assert upload.status == 302
    assert StoredFile.objects.get().size == len(data)


def test_a_small_body_is_read_first_as_django_does(lo_count: Callable[[], int]) -> None:
    body = _upload_body(b"small" * 100)
    upload = Upload(body)
    with mock.patch.object(ASGIBodyStream, "readinto", side_effect=AssertionError("streamed")):
        upload.run(StreamingASGIHandler(), _scope(len(body)))
    assert upload.status == 302
    assert StoredFile.objects.get().size == 500
    assert upload.stored_before_last_piece == 0
    assert lo_count() == 1


def test_a_client_disconnecting_mid_upload_leaves_nothing(lo_count: Callable[[], int]) -> None:
    data = b"z" * (6 * 1024 * 1024)
    body = _upload_body(data)
    upload = Upload(body, disconnect_after=len(body) // PIECE // 2)
    before = lo_count()
    upload.run(StreamingASGIHandler(), _scope(len(body)))

    # The handler gives up on the request at once; the view's thread then sees the body
    # end early (as under WSGI) and drops the partial upload.
    deadline = time.monotonic() + 10
    while lo_count() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lo_count() == before
    assert not StoredFile.objects.exists()
    assert upload.sent == upload.disconnect_after


def test_async_code_reading_a_streamed_body_gets_a_clear_error() -> None:
    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"x", "more_body": False}

        stream = ASGIBodyStream(receive, asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="cannot be read on the event loop"):
            stream.read(1)

    asyncio.run(main())


def test_a_stream_reads_to_the_end_of_the_body_in_any_piece_size() -> None:
    pieces = [b"", b"ab", b"", b"cdefg", b"h"]

    async def main() -> bytes:
        queue = list(pieces)

        async def receive() -> dict[str, Any]:
            body = queue.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(queue)}

        stream = ASGIBodyStream(receive, asyncio.get_running_loop())

        def read() -> bytes:
            out = [stream.read(3) for _ in range(5)]
            assert stream.done.is_set()
            return b"".join(out)

        return await asyncio.to_thread(read)

    assert asyncio.run(main()) == b"abcdefgh"


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "django-reads-bodies"])
def test_a_body_of_unknown_length_is_411_before_a_byte_is_read(
    streaming: bool, lo_count: Callable[[], int]
) -> None:
    """Regression: Django's handler spooled a chunked body, however long, into a temporary
    file (on disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before reading it as empty. Now the
    answer comes first; then up to LINGER_BYTES of an endless body are read and dropped,
    so that a client still sending a short one reads the answer instead of a reset."""
    scope = _scope(0)
    scope["headers"] = [
        (name, value) for name, value in scope["headers"] if name != b"content-length"
    ] + [(b"transfer-encoding", b"chunked")]
    messages: list[dict[str, Any]] = []
    read_before_answer: list[int] = []
    read = 0

    async def receive() -> dict[str, Any]:  # a body that never ends
        nonlocal read
        if not messages:
            read_before_answer.append(read)
        read += PIECE
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b"x" * PIECE, "more_body": True}

    async def send(message: Mapping[str, Any]) -> None:
        messages.append(dict(message))

    handler = StreamingASGIHandler()
    handler.streaming = streaming
    with mock.patch("tempfile.SpooledTemporaryFile", side_effect=AssertionError("spooled")):
        asyncio.run(handler(scope, receive, send))
    assert read_before_answer == []
    assert messages[0]["status"] == 411
    assert messages[1]["body"] == (
        b"Length Required: send the request body with a Content-Length.\n"
    )
    assert LINGER_BYTES < read <= LINGER_BYTES + 2 * PIECE
    assert not StoredFile.objects.exists() and lo_count() == 0
