"""Uploads through the admin behind real servers: gunicorn (WSGI) and uvicorn (ASGI).

Under both, the upload handler writes the body into a large object while it still arrives
(under ASGI thanks to files_app.asgi.StreamingASGIHandler; Django's own ASGI handler
would spool it to a temporary file first), and a client that leaves half-way leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.client import encode_multipart

from files_app.models import StoredFile
from tests.servers import SERVER_KINDS, Server, running_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

MiB = 2**20
UPLOAD_BOUNDARY = "files-app-test-boundary"
CSRF_TOKEN = "c" * 32


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[Server]:
    with running_server(request.param, connection.settings_dict) as running:
        yield running
        running.check_alive()


@pytest.fixture
def admin_cookie() -> str:
    """A superuser's session, as a Cookie header (with a CSRF token)."""
    client = Client()
    client.force_login(User.objects.create_superuser("uploader", password="pw"))
    return f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF_TOKEN}"


def _oids() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_largeobject_metadata")
        return {int(row[0]) for row in cursor.fetchall()}


def _start_upload(
    server: Server, cookie: str, name: str, data: bytes
) -> tuple[socket.socket, bytes]:
    body = encode_multipart(
        UPLOAD_BOUNDARY,
        {"file": SimpleUploadedFile(name, data), "csrfmiddlewaretoken": CSRF_TOKEN},
    )
    head = (
        f"POST /admin/files_app/storedfile/add/ HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\nCookie: {cookie}\r\n"
        f"Content-Type: multipart/form-data; boundary={UPLOAD_BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.sendall(head)
    return sock, body


def _wait_for_writes() -> None:
    """Wait until a server's backend is writing into a large object."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database() AND query LIKE 'SELECT lo_put%%'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("no server backend wrote into a large object")


def test_an_upload_is_stored_while_the_body_still_arrives(
    server: Server, admin_cookie: str
) -> None:
    data = random.Random(7).randbytes(16 * MiB)  # far above FILE_UPLOAD_MAX_MEMORY_SIZE
    before = _oids()
    sock, body = _start_upload(server, admin_cookie, "streamed.bin", data)
    with sock:
        held_back = 2 * MiB
        sock.sendall(body[:-held_back])
        # Before the body is complete, the server writes it into the database (a server
        # that spools the body first, as Django's own ASGI handler does, would not have
        # started yet).
        _wait_for_writes()
        sock.sendall(body[-held_back:])
        reply = b""  # Connection: close, so the server closes after its answer
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 302 "), reply[:500]
    stored = StoredFile.objects.get(name="streamed.bin")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    stored.delete()
    assert _oids() == before
    server.check_alive()


def test_a_client_leaving_mid_upload_leaves_no_object(server: Server, admin_cookie: str) -> None:
    data = random.Random(8).randbytes(16 * MiB)
    before = _oids()
    sock, body = _start_upload(server, admin_cookie, "abandoned.bin", data)
    with sock:
        sock.sendall(body[: len(body) // 2])
        _wait_for_writes()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 20
    while (left := _oids() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == set()
    assert not StoredFile.objects.filter(name="abandoned.bin").exists()
    server.check_alive()
