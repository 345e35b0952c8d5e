"""Issue 15: resumable uploads with a real tus client (tuspy) against minicloud under
gunicorn and uvicorn. A 64 MiB upload whose connection is reset at a random point resumes
from the offset the server reports; one whose server is killed (SIGKILL) mid-PATCH resumes
on the restarted server; the stored SHA-256 equals the source's; a terminated or expired
upload leaves no large object behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import secrets
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from tests.polling import settled, wait_until
from tests.reliability.conftest import MiB, OwnDatabase, manage
from tests.servers import SERVER_KINDS, Server, free_port, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(150).randbytes(64 * MiB + 17)
SHA256 = hashlib.sha256(DATA).hexdigest()
OCTETS = "application/offset+octet-stream"


class Proxy:
    """A TCP relay in front of a server that can reset the connection after a number of
    request bytes (as a dropped Wi-Fi does), and slow the request down.

    It passes on what TCP would: a FIN from one side is a half-close to the other (the
    other side may go on sending), a reset is a reset. A killed server's kernel answers
    the client's next bytes with a reset; so does the relay. (Closing the client's side
    politely instead, after having read its last bytes, left tuspy's sendall() waiting on
    a closed zero window for a minute: CI's "the upload survived its server's SIGKILL".)
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.cut_after: int | None = None
        self.delay = 0.0  # seconds per 64 KiB sent upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server is down: refuse as it would
                _reset(client)
                continue
            pair = _Pair(client, upstream)
            threading.Thread(target=self._up, args=(pair,), daemon=True).start()
            threading.Thread(target=self._down, args=(pair,), daemon=True).start()

    def _up(self, pair: _Pair) -> None:
        client, upstream = pair.client, pair.upstream
        sent = 0
        try:
            while data := client.recv(64 * 1024):
                if self.cut_after is not None and sent + len(data) > self.cut_after:
                    upstream.sendall(data[: self.cut_after - sent])
                    self.cut_after = None
                    pair.reset()  # RST, not FIN
                    return
                upstream.sendall(data)
                sent += len(data)
                time.sleep(self.delay)
        except OSError:  # the server's kernel reset the connection (or the client's did)
            pair.reset()
            return
        pair.half_close(upstream)

    def _down(self, pair: _Pair) -> None:
        client, upstream = pair.client, pair.upstream
        try:
            while data := upstream.recv(64 * 1024):
                client.sendall(data)
        except OSError:
            pair.reset()
            return
        pair.half_close(client)

    def close(self) -> None:
        self.listener.close()


class _Pair:
    """A client's connection and the relay's connection upstream for it."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self._lock = threading.Lock()
        self._open = 2  # directions still relaying

    def half_close(self, sock: socket.socket) -> None:
        """One direction ended with a FIN: pass it on; close both once both have."""
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        with self._lock:
            self._open -= 1
            done = self._open == 0
        if done:
            for each in (self.client, self.upstream):
                each.close()

    def reset(self) -> None:
        """Reset both connections; shutting down first wakes the other direction's
        thread out of its recv() (close() alone would not)."""
        with self._lock:
            self._open = 0
        for sock in (self.client, self.upstream):
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(scope="module")
def headers(own_database: OwnDatabase) -> dict[str, str]:
    """A staff session and a CSRF token, as the admin's uploader sends them."""
    session = own_database.sessions({"tus-staff": "superuser"})["tus-staff"]
    token = secrets.token_hex(16)  # 32 characters: a CSRF secret
    return {"Cookie": f"sessionid={session}; csrftoken={token}", "X-CSRFToken": token}


def _uploader(endpoint: str, headers: dict[str, str], **kwargs: Any) -> Any:
    from tusclient import client

    tus = client.TusClient(endpoint, headers=headers)
    return tus.uploader(
        file_stream=io.BytesIO(DATA),
        chunk_size=len(DATA),  # one PATCH, as a browser sends it
        metadata={"filename": "video.bin", "filetype": "application/octet-stream"},
        retries=0,
        **kwargs,
    )


def _server_offset(database: OwnDatabase) -> int:
    rows = database.execute('SELECT coalesce(max("offset"), -1) FROM files_app_upload')
    return int(rows[0][0])


def _check_stored(database: OwnDatabase, objects_before: int) -> None:
    rows = database.execute(
        "SELECT sha256, size, owner_id IS NOT NULL FROM files_app_storedfile "
        "WHERE name = 'video.bin' ORDER BY id DESC LIMIT 1"
    )
    assert rows == [(SHA256, len(DATA), True)]
    assert database.execute("SELECT count(*) FROM files_app_upload") == [(0,)]
    # Nothing left behind: every object is a stored file's (the same bytes uploaded again
    # share the first upload's object: FILES_APP_DEDUPE).
    assert database.execute(
        "SELECT count(*) FROM pg_largeobject_metadata m WHERE NOT EXISTS "
        "(SELECT 1 FROM files_app_storedfile f WHERE f.file = m.oid)"
    ) == [(0,)]
    assert _objects(database) <= objects_before + 1
    [(content_sha,)] = database.execute(
        "SELECT encode(sha256(lo_get(file)), 'hex') FROM files_app_storedfile "
        "WHERE name = 'video.bin' ORDER BY id DESC LIMIT 1"
    )
    assert content_sha == SHA256


def _objects(database: OwnDatabase) -> int:
    return int(database.execute("SELECT count(*) FROM pg_largeobject_metadata")[0][0])


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with running_server(request.param, own_database.url, project="minicloud") as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


def test_a_reset_connection_resumes_from_the_servers_offset(
    server: Server, own_database: OwnDatabase, headers: dict[str, str]
) -> None:
    from tusclient.exceptions import TusCommunicationError

    objects = _objects(own_database)
    proxy = Proxy(server.port)
    try:
        proxy.cut_after = random.randint(8 * MiB, 56 * MiB)
        uploader = _uploader(f"http://127.0.0.1:{proxy.port}/files/uploads/", headers)
        with pytest.raises((TusCommunicationError, OSError)):
            uploader.upload()
        url = uploader.url
        assert url and url.startswith(f"http://127.0.0.1:{proxy.port}/files/uploads/")
        # The server notices the reset and commits what arrived: wait until that settles.
        durable = settled(lambda: _server_offset(own_database))
        # What arrived before the reset was kept: not 0, not a whole number of pieces only.
        assert 0 < durable < len(DATA)
        resumed = _uploader(url, headers, url=url)
        assert resumed.offset == durable  # tuspy asked the server (HEAD)
        resumed.upload()
    finally:
        proxy.close()
    _check_stored(own_database, objects)


def test_a_killed_server_resumes_after_restart(
    own_database: OwnDatabase, headers: dict[str, str]
) -> None:
    objects = _objects(own_database)
    for kind in SERVER_KINDS:
        port = free_port()
        with running_server(kind, own_database.url, project="minicloud", port=port) as server:
            proxy = Proxy(port)
            proxy.delay = 0.002  # about 30 MB/s: time to kill it mid-PATCH
            uploader = _uploader(f"http://127.0.0.1:{proxy.port}/files/uploads/", headers)
            failed: list[BaseException] = []

            def upload(uploader: Any = uploader, failed: list[BaseException] = failed) -> None:
                try:
                    uploader.upload()
                except Exception as exc:  # the server is killed under it
                    failed.append(exc)

            thread = threading.Thread(target=upload)
            thread.start()
            deadline = time.monotonic() + 60
            while _server_offset(own_database) < 16 * MiB:
                assert time.monotonic() < deadline, "the upload did not start"
                time.sleep(0.05)
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
            thread.join(30)
            assert failed, "the upload survived its server's SIGKILL"
            durable = _server_offset(own_database)
            assert 16 * MiB <= durable < len(DATA)
            # The killed server's sessions end when PostgreSQL notices; one still in a
            # transaction (holding the upload's row) would make the resume's HEAD wait.
            wait_until(
                lambda: all(state == "idle" for state, _ in own_database.backends()),
                60,
                f"sessions still busy after the {kind} server was killed",
            )
        proxy.delay = 0
        with running_server(kind, own_database.url, project="minicloud", port=port) as again:
            resumed = _uploader(uploader.url, headers, url=uploader.url)
            assert resumed.offset == durable
            resumed.upload()
            again.check_alive()
        proxy.close()
        _check_stored(own_database, objects)
        objects += 1


def test_terminated_and_expired_uploads_leave_nothing(
    server: Server, own_database: OwnDatabase, headers: dict[str, str]
) -> None:
    import requests

    objects = _objects(own_database)
    tus = {**headers, "Tus-Resumable": "1.0.0"}
    urls = []
    for _ in range(2):
        created = requests.post(
            f"{server.base_url}/files/uploads/",
            headers={**tus, "Upload-Length": str(len(DATA))},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        sent = requests.patch(
            url,
            data=DATA[: 3 * MiB],
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=30,
        )
        assert (sent.status_code, sent.headers["Upload-Offset"]) == (204, str(3 * MiB))
        urls.append(url)
    assert _objects(own_database) == objects + 2
    assert requests.delete(urls[0], headers=tus, timeout=30).status_code == 204
    assert requests.head(urls[0], headers=tus, timeout=30).status_code == 404
    assert _objects(own_database) == objects + 1
    own_database.execute("UPDATE files_app_upload SET expires = now() - interval '1 second'")
    assert requests.head(urls[1], headers=tus, timeout=30).status_code == 410
    swept = manage(own_database.url, "files_sweep")
    assert swept.returncode == 0, swept.stderr
    assert "Deleted 1 expired unfinished upload(s)." in swept.stdout
    assert _objects(own_database) == objects
    # Without the session's CSRF token: refused before anything is stored.
    refused = requests.post(
        f"{server.base_url}/files/uploads/",
        headers={"Cookie": headers["Cookie"], "Tus-Resumable": "1.0.0", "Upload-Length": "5"},
        timeout=30,
    )
    assert refused.status_code == 403
    assert own_database.execute("SELECT count(*) FROM files_app_upload") == [(0,)]


def test_two_patches_at_once_never_interleave(
    server: Server, own_database: OwnDatabase, headers: dict[str, str]
) -> None:
    import requests

    tus = {**headers, "Tus-Resumable": "1.0.0"}
    first, second = DATA[: 8 * MiB], DATA[8 * MiB : 16 * MiB]
    created = requests.post(
        f"{server.base_url}/files/uploads/",
        headers={**tus, "Upload-Length": str(len(first))},
        timeout=30,
    )
    url = created.headers["Location"].replace(f"127.0.0.1:{server.port}", "127.0.0.1")
    path = "/files/uploads/" + url.rsplit("/", 1)[1]
    # The first PATCH sends 3 MiB of its 8 (three pieces, each committed) and waits...
    slow = server.connection()
    slow.putrequest("PATCH", path)
    for name, value in {**tus, "Upload-Offset": "0", "Content-Type": OCTETS}.items():
        slow.putheader(name, value)
    slow.putheader("Content-Length", str(len(first)))
    slow.endheaders()
    slow.send(first[: 3 * MiB])
    deadline = time.monotonic() + 30
    while _server_offset(own_database) < 3 * MiB:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    def other(offset: int) -> Any:
        return requests.patch(
            f"{server.base_url}{path}",
            data=second[:MiB],
            headers={**tus, "Upload-Offset": str(offset), "Content-Type": OCTETS},
            timeout=30,
        )

    # ...a second PATCH at a stale offset is refused; one at the offset the server has
    # reached (a client that gave the first up) goes on from there...
    assert other(0).status_code == 409
    assert other(3 * MiB).status_code == 204
    # ...and the first, coming back, is refused at its next piece: one writer per offset.
    with contextlib.suppress(OSError):  # it may answer before reading the rest
        slow.send(first[3 * MiB :])
    response = slow.getresponse()
    assert response.status == 409
    slow.close()
    head = requests.head(f"{server.base_url}{path}", headers=tus, timeout=30)
    assert head.headers["Upload-Offset"] == str(4 * MiB)
    [(content,)] = own_database.execute(
        "SELECT lo_get(oid::oid) FROM files_app_upload WHERE id = %s", (url.rsplit("/", 1)[1],)
    )
    assert bytes(content) == first[: 3 * MiB] + second[:MiB]
    assert requests.delete(f"{server.base_url}{path}", headers=tus, timeout=30).status_code == 204


def test_refused_before_the_body_is_read(server: Server, own_database: OwnDatabase) -> None:
    """Anonymous, or without the permission: answered at once, with a declared 1 GiB body
    still unsent (a hostile client does not get the server to read or store it)."""
    staff = own_database.sessions({"tus-no-perm": "staff"})["tus-no-perm"]
    token = secrets.token_hex(16)
    for cookie in ("", f"sessionid={staff}; csrftoken={token}"):
        for method, path in (("POST", "/files/uploads/"), ("PATCH", f"/files/uploads/{uuid4()}")):
            connection = server.connection(timeout=10)
            connection.putrequest(method, path)
            headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(2**30)}
            headers |= {"Upload-Offset": "0", "Content-Type": OCTETS}
            if cookie:
                headers |= {"Cookie": cookie, "X-CSRFToken": token}
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(2**30))
            connection.endheaders()
            connection.send(b"x" * 1024)
            response = connection.getresponse()  # no more of the body is ever sent
            assert response.status == 403, (method, cookie, response.read())
            connection.close()
    assert own_database.execute("SELECT count(*) FROM files_app_upload") == [(0,)]


def test_a_stuck_lock_on_an_upload_is_answered_423_not_a_hang(
    server: Server, own_database: OwnDatabase, headers: dict[str, str]
) -> None:
    """A session that holds an upload's row and does not end (a server killed mid-piece,
    until PostgreSQL notices): the next HEAD waits files_app.tus.LOCK_WAIT, then gets 423
    with Retry-After, as tus-js-client retries; once the lock is gone it resumes."""
    import psycopg

    from files_app.tus import BUSY_RETRY_AFTER, LOCK_WAIT

    tus = {"Tus-Resumable": "1.0.0", **headers}
    created = request(server, "POST", "/files/uploads/", {**tus, "Upload-Length": "10"})
    assert created.status == 201
    location = created.header("Location")
    assert location is not None
    path = "/" + location.split("/", 3)[3]
    with psycopg.connect(own_database.url) as stuck:  # a transaction, open until the end
        stuck.execute("SELECT 1 FROM files_app_upload FOR UPDATE")
        started = time.monotonic()
        busy = request(server, "HEAD", path, tus)
        waited = time.monotonic() - started
        assert busy.status == 423 and busy.header("Retry-After") == str(BUSY_RETRY_AFTER)
        assert LOCK_WAIT <= waited < LOCK_WAIT + 10
        terminated = request(server, "DELETE", path, tus)
        assert terminated.status == 423 and b"This upload is busy" in terminated.body
        stuck.rollback()
    assert request(server, "HEAD", path, tus).status == 200
    assert request(server, "DELETE", path, tus).status == 204
    assert own_database.execute("SELECT count(*) FROM files_app_upload") == [(0,)]
