"""The tus endpoint (files_app.tus) behind real servers, gunicorn (WSGI) and uvicorn (ASGI):
what only a socket shows — a chunked body, a connection reset in the middle of a PATCH.
tuspy against minicloud's own deployment: tests/reliability/test_tus.py."""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from files_app.models import StoredFile, Upload
from tests.servers import SERVER_KINDS, Server, request, running_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

MiB = 2**20
OCTETS = "application/offset+octet-stream"
CSRF_TOKEN = "t" * 32


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[Server]:
    with running_server(request.param, connection.settings_dict) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


@pytest.fixture
def tus() -> dict[str, str]:
    """The headers of a superuser's tus requests: session, CSRF token, Tus-Resumable."""
    client = Client()
    client.force_login(User.objects.create_superuser("tus", password="pw"))
    return {
        "Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF_TOKEN}",
        "X-CSRFToken": CSRF_TOKEN,
        "Tus-Resumable": "1.0.0",
    }


def _create(server: Server, tus: dict[str, str], length: int) -> str:
    created = request(server, "POST", "/files/uploads/", {**tus, "Upload-Length": str(length)})
    assert created.status == 201, created.body
    [location] = [value for name, value in created.headers if name.lower() == "location"]
    return "/files/uploads/" + location.rsplit("/", 1)[1]


def _patch(server: Server, tus: dict[str, str], path: str, offset: int, data: bytes) -> Any:
    conn = server.connection()
    try:
        headers = {**tus, "Upload-Offset": str(offset), "Content-Type": OCTETS}
        conn.request("PATCH", path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Upload-Offset"), response.read()
    finally:
        conn.close()


def _offset(server: Server, tus: dict[str, str], path: str) -> int:
    head = request(server, "HEAD", path, tus)
    assert head.status == 200, head
    [offset] = [value for name, value in head.headers if name.lower() == "upload-offset"]
    return int(offset)


def _chunked(server: Server, method: str, path: str, headers: dict[str, str]) -> int:
    conn = server.connection()
    try:
        body = iter([b"x" * 1000, b"y" * 1000])
        conn.request(method, path, body=body, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_chunked_body_is_refused_on_both_servers(server: Server, tus: dict[str, str]) -> None:
    """Regression: a chunked PATCH was a 204 that dropped its bytes under gunicorn (WSGI
    reads a body by its Content-Length) and wrote them under uvicorn."""
    path = _create(server, tus, 5000)
    patch = {**tus, "Upload-Offset": "0", "Content-Type": OCTETS, "Transfer-Encoding": "chunked"}
    assert _chunked(server, "PATCH", path, patch) == 411
    assert _offset(server, tus, path) == 0
    # Nor as the first bytes of a creation (creation-with-upload).
    post = {**tus, "Upload-Length": "5000", "Content-Type": OCTETS}
    chunked_post = {**post, "Transfer-Encoding": "chunked"}
    assert _chunked(server, "POST", "/files/uploads/", chunked_post) == 411
    assert Upload.objects.count() == 1
    assert _patch(server, tus, path, 0, b"z" * 5000)[:2] == (204, "5000")


def _cut_patch(server: Server, tus: dict[str, str], path: str, offset: int, data: bytes) -> None:
    """Send a PATCH of the rest of ``data`` from ``offset``; once the server is writing it,
    reset the connection after about 3 MiB of its body (RST: SO_LINGER 0, as a dropped
    Wi-Fi or a killed client does)."""
    headers = {**tus, "Upload-Offset": str(offset), "Content-Type": OCTETS}
    lines = [f"PATCH {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(data) - offset}")
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sock.sendall(data[offset : offset + MiB])
        # The request has started (a request the server has not started yet is not
        # "before" a HEAD that it answers first).
        deadline = time.monotonic() + 10
        while Upload.objects.values_list("offset", flat=True).get() == offset:
            assert time.monotonic() < deadline, "the server wrote nothing of the PATCH"
            time.sleep(0.005)
        sock.sendall(data[offset + MiB : offset + 3 * MiB + random.randrange(64 * 1024)])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.slow
def test_after_a_reset_patch_the_offset_head_reports_is_final(
    server: Server, tus: dict[str, str]
) -> None:
    """Regression: the server went on writing what a reset PATCH had sent after HEAD
    answered, and the client's PATCH from HEAD's offset got a 409."""
    data = random.Random(21).randbytes(80 * MiB)
    path = _create(server, tus, len(data))
    offset = 0
    for round_ in range(20):
        _cut_patch(server, tus, path, offset, data)
        reported = _offset(server, tus, path)  # at once
        assert reported >= offset
        # A client resuming from there: never a 409.
        status, reached, body = _patch(server, tus, path, reported, data[reported:][: MiB // 4])
        assert (status, reached) == (204, str(min(reported + MiB // 4, len(data)))), (
            round_,
            body,
        )
        offset = int(reached)
    assert offset < len(data)
    assert _patch(server, tus, path, offset, data[offset:])[:2] == (204, str(len(data)))
    stored = StoredFile.objects.get()
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT encode(sha256(lo_get(%s::oid)), 'hex')", [stored.file.oid])
        assert cursor.fetchone()[0] == stored.sha256
    stored.delete()
