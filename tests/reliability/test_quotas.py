"""Quotas through real servers (issue 25, point 4): minicloud with
``MINICLOUD_USER_QUOTA`` under gunicorn and uvicorn. An admin upload whose declared length
is over the quota is answered 413 before its body is sent; one that grows over it is
stopped as its bytes arrive; curl's multipart upload gets the 413 page; tus creation and
PATCH are 413 with the reason; of two admin uploads in flight at once that fit alone but
not together, one is stored. Nothing is stored, no large object is left."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test.client import BOUNDARY, encode_multipart

from tests.polling import wait_until
from tests.reliability.clients import Named, admin_post
from tests.reliability.conftest import OwnDatabase, minicloud_on
from tests.servers import SERVER_KINDS, Server, request

pytestmark = pytest.mark.minicloud_server

QUOTA = 1_000_000


@pytest.fixture(scope="module")
def session(own_database: OwnDatabase) -> str:
    return own_database.sessions({"quota-user": "superuser"})["quota-user"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database, {"MINICLOUD_USER_QUOTA": str(QUOTA)}) as up:
        yield up


def _objects(own_database: OwnDatabase) -> int:
    return int(own_database.execute("SELECT count(*) FROM pg_largeobject_metadata")[0][0])


def _files(own_database: OwnDatabase) -> int:
    return int(own_database.execute("SELECT count(*) FROM files_app_storedfile")[0][0])


def test_a_declared_length_over_the_quota_is_refused_before_the_body(
    server: Server, own_database: OwnDatabase, session: str
) -> None:
    before = _objects(own_database)
    token = "q" * 32
    head = (
        "POST /admin/files_app/storedfile/add/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Cookie: sessionid={session}; csrftoken={token}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {50 * QUOTA}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head)  # and not a byte of the 50 MB it announced
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert _objects(own_database) == before


def test_uploads_over_the_quota_store_nothing(
    server: Server, own_database: OwnDatabase, session: str, tmp_path: Path
) -> None:
    before, files = _objects(own_database), _files(own_database)
    # Within the form's slack over the quota by its length: stopped as its bytes arrive.
    grows = admin_post(
        server,
        session,
        "/admin/files_app/storedfile/add/",
        {"file": Named("grows.bin", b"g" * (QUOTA + 30_000))},
    )
    assert grows == 413
    curl = shutil.which("curl")
    assert curl, "curl is installed with the project's test tools"
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 3 * QUOTA)
    token = "c" * 32
    page = subprocess.run(
        [
            *(curl, "-s", "-w", "\n%{http_code}", "-F", f"file=@{big}"),
            *("-F", f"csrfmiddlewaretoken={token}"),
            *("-H", f"Cookie: sessionid={session}; csrftoken={token}"),
            server.base_url + "/admin/files_app/storedfile/add/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert page.stdout.endswith("\n413"), page.stdout[-500:]
    assert "Over your quota" in page.stdout and "Nothing was stored." in page.stdout
    assert (_objects(own_database), _files(own_database)) == (before, files)
    # What fits goes in.
    fits = admin_post(
        server, session, "/admin/files_app/storedfile/add/", {"file": Named("ok.bin", b"o" * 1000)}
    )
    assert fits == 302 and _files(own_database) == files + 1
    own_database.execute("DELETE FROM files_app_storedfile WHERE name = 'ok.bin'")


def test_two_admin_uploads_that_fit_alone_but_not_together_store_one(
    server: Server, own_database: OwnDatabase, session: str
) -> None:
    # Both bodies start before either ends: each upload handler sees the whole quota as
    # room. The last check, under the quota lock as the form saves, refuses the second.
    before, files = _objects(own_database), _files(own_database)
    token = "r" * 32
    # Files over the parser's first read (FILES_APP_CHUNK_SIZE, 1 MiB), and a quota of
    # the user's own that fits one of them.
    own_database.execute(
        'INSERT INTO files_app_userquota (user_id, "limit") '
        f"SELECT id, {6 * QUOTA} FROM auth_user WHERE username = 'quota-user'"
    )
    bodies = [
        encode_multipart(
            BOUNDARY,
            {
                "csrfmiddlewaretoken": token,
                "file": Named(f"half{n}.bin", bytes([65 + n]) * (QUOTA * 35 // 10)),
            },
        )
        for n in range(2)
    ]
    socks = [socket.create_connection((server.host, server.port), timeout=60) for _ in bodies]
    try:
        for sock, body in zip(socks, bodies, strict=True):
            sock.sendall(
                (
                    "POST /admin/files_app/storedfile/add/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Cookie: sessionid={session}; csrftoken={token}\r\n"
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                + body[: len(body) // 2]
            )
        # Each server thread has begun its file (a large object each) before either ends.
        wait_until(lambda: _objects(own_database) == before + 2, 30, "both uploads under way")
        for sock, body in zip(socks, bodies, strict=True):
            sock.sendall(body[len(body) // 2 :])
        answers = [_answer(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
        own_database.execute(
            "DELETE FROM files_app_userquota WHERE user_id = "
            "(SELECT id FROM auth_user WHERE username = 'quota-user')"
        )
    statuses = sorted(answer.split(b" ", 2)[1] for answer in answers)
    assert statuses == [b"200", b"302"], [answer[:300] for answer in answers]
    refused = next(answer for answer in answers if answer.split(b" ", 2)[1] == b"200")
    assert b"Over your quota" in refused and b"Nothing was stored." in refused
    assert _files(own_database) == files + 1
    wait_until(lambda: _objects(own_database) == before + 1, 30, "the refused one's object gone")
    own_database.execute("DELETE FROM files_app_storedfile WHERE name LIKE 'half_.bin'")


def _answer(sock: socket.socket) -> bytes:
    """Read a whole answer from a connection the server closes when done."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_tus_creation_and_patch_over_the_quota_are_413(
    server: Server, own_database: OwnDatabase, session: str
) -> None:
    token = "t" * 32
    tus = {
        "Tus-Resumable": "1.0.0",
        "Cookie": f"sessionid={session}; csrftoken={token}",
        "X-CSRFToken": token,
    }
    refused = request(server, "POST", "/files/uploads/", {**tus, "Upload-Length": str(2 * QUOTA)})
    assert refused.status == 413 and refused.body.startswith(b"Over your quota")
    created = request(server, "POST", "/files/uploads/", {**tus, "Upload-Length": "500000"})
    assert created.status == 201
    url = created.header("Location")
    assert url is not None
    path = "/" + url.split("/", 3)[3]
    own_database.execute(
        'INSERT INTO files_app_userquota (user_id, "limit") '
        "SELECT id, 1000 FROM auth_user WHERE username = 'quota-user'"
    )
    try:
        conn = server.connection()
        conn.request(
            "PATCH",
            path,
            body=b"p" * 1000,
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 413 and b"may resume once there is room" in body
    finally:
        own_database.execute(
            "DELETE FROM files_app_userquota WHERE user_id = "
            "(SELECT id FROM auth_user WHERE username = 'quota-user')"
        )
    assert request(server, "DELETE", path, tus).status == 204
