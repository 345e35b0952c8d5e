"""The download view behind real servers: gunicorn (WSGI) and uvicorn (ASGI) on 127.0.0.1.

What the test client cannot show: HEAD and 304 bodies on the wire, Content-Length as sent,
keep-alive connections, client disconnects, and real download clients (curl, wget).

The files are created once per module and committed, outside any test's transaction (a
transactional test's flush would remove them while the servers still serve them), then
deleted at the end so that their large objects are freed.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from files_app import maintenance
from files_app.models import StoredFile
from files_app.sharing import make_share_url
from tests.rangecases import (
    CASES,
    Headers,
    RangeCase,
    Served,
    check_consistent,
    check_parts_cover,
    check_response,
    create_served,
    request_headers,
)
from tests.servers import (
    CANDIDATE_KINDS,
    SERVER_KINDS,
    Server,
    raw_exchange,
    request,
    running_server,
    split_raw,
)

# Every test here runs under the supported servers and the candidates (granian).
KINDS = (*SERVER_KINDS, *CANDIDATE_KINDS)

# Declares the database (pytest-django creates the test database only for marked tests);
# each test's own transaction is rolled back, the module's files stay committed.
pytestmark = [pytest.mark.django_db, pytest.mark.processes]

MiB = 2**20
LARGE = f"size{8 * MiB}"  # big enough that a download is still running when the client leaves
KEYS = sorted({case.resource_key for case in CASES} | {LARGE})


@pytest.fixture(scope="module")
def served_files(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, Served]]:
    """Store every file the cases need, committed; delete the rows (and objects) at the end."""
    files: dict[str, Served] = {}
    with django_db_blocker.unblock():
        before = maintenance.count("default")
        try:
            for key in KEYS:
                files[key] = create_served(key)
            yield files
        finally:
            StoredFile.objects.filter(pk__in=[s.pk for s in files.values()]).delete()
        assert maintenance.count("default") == before, "large objects left behind"


@pytest.fixture(
    scope="module",
    params=[(kind, path) for path in ("views", "lean") for kind in KINDS],
    ids=lambda param: param[0] if param[1] == "views" else f"{param[0]}-lean",
)
def server(request: pytest.FixtureRequest, served_files: dict[str, Served]) -> Iterator[Server]:
    """Run one real server against the test session's database: the views answer, or
    files_app's lean path (FileServingMiddleware; under uvicorn, files_app.asgi's handler
    before Django's)."""
    kind, path = request.param
    env = {"FILES_APP_TEST_LEAN": "1" if path == "lean" else "0"}
    with running_server(kind, connection.settings_dict, env=env) as running:
        yield running
        running.check_alive()
        # Nothing went wrong that the client did not see (uvicorn's httptools server once
        # dropped keep-alive connections after a 304 with a Content-Length, and said so).
        log = running.output()
        if os.environ.get("FILES_APP_DRIVER") == "psycopg2":
            log = _KNOWN_FINALIZER_ERROR.sub("", log)
        assert "Traceback" not in log, log


# Known and open (see CHANGELOG): on Django 6.1, a sync reads' generator that a client's
# disconnect left to the garbage collector can be finalized after Django's error wrapper
# was (6.1 deletes its attribute in __del__); Python prints and ignores the error. Only
# exactly that is tolerated here, and only on psycopg2: with psycopg 3 no sync generator
# reads a body under ASGI any more (the async pool does).
_KNOWN_FINALIZER_ERROR = re.compile(
    r"Exception ignored in: <generator object read_pieces at 0x[0-9a-f]+>\n"
    r"Traceback \(most recent call last\):\n(?:  .*\n)+"
    r"AttributeError: 'DatabaseErrorWrapper' object has no attribute 'wrapper'\n"
)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_range_case_gets_a_correct_answer(
    case: RangeCase, server: Server, served_files: dict[str, Served]
) -> None:
    served = served_files[case.resource_key]
    headers = request_headers(case, served)
    reply = request(server, case.method, served.path, headers)
    check_response(case, served, reply.status, Headers(reply.headers), reply.body)
    if case.method == "HEAD" or reply.status == 304:
        # http.client reads no body after HEAD or 304: look at the bytes on the wire.
        status, rest = split_raw(raw_exchange(server, case.method, served.path, headers))
        assert status == reply.status
        assert rest == b"", f"{len(rest)} bytes after the headers of a {case.method} {status}"


def test_the_lean_path_answers_when_it_is_on(
    server: Server, served_files: dict[str, Served]
) -> None:
    # The view reads the session (who may see the file): Vary: Cookie. The lean path
    # does not, so its answers have no Vary: proof that it, not the view, answered.
    served = served_files["size10000"]
    reply = request(server, "GET", served.path, {"Range": "bytes=0-99"})
    assert reply.status == 206
    vary = Headers(reply.headers).get("Vary")
    if server.env.get("FILES_APP_TEST_LEAN") == "1":
        assert vary is None
    else:
        assert vary is not None and "Cookie" in vary


@pytest.fixture(scope="module", params=KINDS)
def wrapped_server(
    request: pytest.FixtureRequest, served_files: dict[str, Served]
) -> Iterator[Server]:
    """A real server with the lean path on, for a host whose URLconf guards files_app's
    download URLs with its own decorators (tests/urls_wrapped.py)."""
    env = {"FILES_APP_TEST_LEAN": "1", "FILES_APP_TEST_URLCONF": "tests.urls_wrapped"}
    with running_server(request.param, connection.settings_dict, env=env) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


def test_the_lean_path_keeps_the_hosts_decorators(
    wrapped_server: Server, served_files: dict[str, Served]
) -> None:
    served = served_files["size10000"]
    name = served.path.rsplit("/", 1)[1]
    guarded = f"/files/{served.uuid}/{name}"  # login_required, ahead of files_app's URLs
    for method in ("GET", "HEAD"):
        reply = request(wrapped_server, method, guarded, {"Range": "bytes=0-99"})
        assert reply.status == 302, (method, reply.status)
        assert Headers(reply.headers).get("Location") == f"/accounts/login/?next={guarded}"
    wrapper = f"/files/{served.uuid}/wrapper/{name}"
    assert request(wrapped_server, "GET", wrapper).status == 403
    reply = request(wrapped_server, "GET", wrapper, {"X-Host-Pass": "yes", "Range": "bytes=0-9"})
    assert (reply.status, reply.body) == (206, served.data(0, 9))
    cached = request(wrapped_server, "GET", f"/files/{served.uuid}/cache/{name}")
    assert cached.status == 200
    assert "max-age=7" in (Headers(cached.headers).get("Cache-Control") or "")


def test_the_lean_path_answers_the_stock_views_with_the_security_headers(
    wrapped_server: Server, served_files: dict[str, Served]
) -> None:
    # files_app's own views, which no host route covers: a share link, and a download
    # through the second include. The lean path answers them (no Vary), and every answer,
    # 304 and 412 included, carries SecurityMiddleware's headers as the views' do.
    served = served_files["size10000"]
    name = served.path.rsplit("/", 1)[1]
    share = make_share_url(uuid.UUID(served.uuid), name, timedelta(hours=1))
    for path, headers, status in [
        (share, {"Range": "bytes=0-9"}, 206),
        (share, {"If-None-Match": served.etag}, 304),
        (share, {"If-Match": '"another"'}, 412),
        (share, {"Range": "bytes=20000-"}, 416),
        (f"/mirror/{served.uuid}/{name}", {"Range": "bytes=0-9"}, 206),
    ]:
        reply = request(wrapped_server, "GET", path, headers)
        got = Headers(reply.headers)
        assert reply.status == status, path
        assert got.get("Vary") is None, f"the view answered {path}"
        assert got.get("X-Content-Type-Options") == "nosniff", status
        assert got.get("Referrer-Policy") == "same-origin", status
        assert got.get("Cross-Origin-Opener-Policy") == "same-origin", status


Request = tuple[str, dict[str, str], list[tuple[int, int]]]


def _random_request(rng: random.Random, size: int, etag: str) -> Request:
    """Return (method, headers, the inclusive ranges asked for) of a random request."""
    kind = rng.choice(["single", "single", "suffix", "open", "multi", "head", "304", "full"])
    if kind == "single":
        first = rng.randrange(size)
        last = first + rng.randrange(5000)
        return "GET", {"Range": f"bytes={first}-{last}"}, [(first, min(last, size - 1))]
    if kind == "suffix":
        length = rng.randrange(1, 3000)
        return "GET", {"Range": f"bytes=-{length}"}, [(max(size - length, 0), size - 1)]
    if kind == "open":
        first = rng.randrange(size)
        return "GET", {"Range": f"bytes={first}-"}, [(first, size - 1)]
    if kind == "multi":
        asked = [(a, min(a + rng.randrange(300), size - 1)) for a in rng.sample(range(size), 4)]
        specs = ",".join(f"{a}-{b}" for a, b in asked)
        return "GET", {"Range": f"bytes={specs}"}, asked
    if kind == "head":
        return "HEAD", {"Range": f"bytes=0-{rng.randrange(size)}"}, []
    if kind == "304":
        return "GET", {"If-None-Match": etag, "Range": "bytes=0-9"}, []
    return "GET", {}, []


def test_many_ranges_over_one_keep_alive_connection(
    server: Server, served_files: dict[str, Served]
) -> None:
    # A HEAD or 304 that sent a body, or a wrong Content-Length, would corrupt the
    # responses that follow on the same connection.
    served = served_files["size10000"]
    rng = random.Random(1234)
    conn = server.connection()
    try:
        first_socket = None
        for _ in range(50):
            method, headers, asked = _random_request(rng, served.size, served.etag)
            reply = request(server, method, served.path, headers, connection=conn)
            first_socket = first_socket or conn.sock
            assert conn.sock is first_socket, "the server closed the keep-alive connection"
            assert reply.status in (200, 206, 304)
            response_headers = Headers(reply.headers)
            claimed = check_consistent(method, reply.status, response_headers, reply.body, served)
            if asked:
                assert claimed is not None, f"{headers} got {reply.status}"
                check_parts_cover(asked, claimed)
    finally:
        conn.close()


def _stuck_backends(django_db_blocker: Any) -> list[tuple[Any, ...]]:
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, query, wait_event_type, wait_event, "
            "round(extract(epoch FROM now() - query_start)::numeric, 1) "
            "FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' "
            "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
        )
        return list(cursor.fetchall())


def test_client_disconnect_mid_download_leaves_server_and_database_healthy(
    server: Server, served_files: dict[str, Served], django_db_blocker: Any
) -> None:
    served = served_files[LARGE]
    request_bytes = (
        f"GET {served.path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n"
    ).encode("ascii")
    for _ in range(3):
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.sendall(request_bytes)
            received = b""
            while len(received) < 256 * 1024:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection early"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
            # Reset rather than a polite FIN: like a killed browser tab or player.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    reply = request(server, "GET", served.path, {"Range": "bytes=100-199"})
    assert (reply.status, reply.body) == (206, served.data(100, 199))
    server.check_alive()
    # The streaming worker notices the reset at its next write; give it a moment (CI saw a
    # read still running after 10 s once, on a loaded machine: each row says what it waits
    # on and for how long, should it happen again).
    deadline = time.monotonic() + 30
    while (stuck := _stuck_backends(django_db_blocker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stuck == []


# --- Real download clients ------------------------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
needs_wget = pytest.mark.skipif(shutil.which("wget") is None, reason="wget not installed")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=60, cwd=cwd, check=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_curl
def test_curl_fetches_a_range(server: Server, served_files: dict[str, Served]) -> None:
    served = served_files["size10000"]
    result = _run("curl", "-sS", "--fail", "-r", "0-99", server.base_url + served.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == served.data(0, 99)


@needs_curl
def test_curl_resumes_a_partial_download(
    server: Server, served_files: dict[str, Served], tmp_path: Path
) -> None:
    served = served_files[LARGE]
    url = server.base_url + served.path
    target = tmp_path / "download.bin"
    first = _run("curl", "-sS", "--fail", "-r", "0-999999", "-o", str(target), url)
    assert first.returncode == 0, first.stderr
    assert target.stat().st_size == 1_000_000
    resumed = _run(
        "curl", "-sS", "--fail", "-C", "-", "-o", str(target), "-w", "%{http_code}", url
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == b"206", "curl did not resume"
    assert _sha256(target) == served.sha256


@needs_curl
def test_curl_resume_of_a_complete_file_leaves_it_intact(
    server: Server, served_files: dict[str, Served], tmp_path: Path
) -> None:
    # curl asks for bytes=<size>-; the 416 tells it the file is complete.
    served = served_files["size10000"]
    target = tmp_path / "complete.bin"
    target.write_bytes(served.data(0, served.size - 1))
    url = server.base_url + served.path
    result = _run("curl", "-sS", "-C", "-", "-o", str(target), "-w", "%{http_code}", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"416"
    assert _sha256(target) == served.sha256


@needs_wget
def test_wget_continues_a_partial_file(
    server: Server, served_files: dict[str, Served], tmp_path: Path
) -> None:
    served = served_files[LARGE]
    target = tmp_path / "download.bin"
    target.write_bytes(served.data(0, 3 * MiB - 1))
    # -S prints the server's status line on stderr: proof that wget resumed.
    result = _run("wget", "-q", "-S", "-c", "-O", str(target), server.base_url + served.path)
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 206 " in result.stderr, result.stderr
    assert _sha256(target) == served.sha256


@needs_wget
def test_wget_continue_of_a_complete_file_leaves_it_intact(
    server: Server, served_files: dict[str, Served], tmp_path: Path
) -> None:
    served = served_files["size10000"]
    target = tmp_path / "complete.bin"
    target.write_bytes(served.data(0, served.size - 1))
    result = _run("wget", "-q", "-S", "-c", "-O", str(target), server.base_url + served.path)
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 416 " in result.stderr, result.stderr
    assert _sha256(target) == served.sha256


@pytest.fixture
def signed_private(served_files: dict[str, Served]) -> Iterator[Callable[[str], str]]:
    """Make served files private to a user of their own for the test, committed (the test
    runs in a transaction the servers do not see); return a function giving a served
    file's signed URL for that user. The rows are restored afterwards."""
    from django.db import connections
    from django.db.utils import load_backend

    alias = "committed"
    base = connection.settings_dict
    connections[alias] = load_backend(base["ENGINE"]).DatabaseWrapper(dict(base), alias)
    owner = User.objects.using(alias).create(username="signed-url-owner")
    changed: list[int] = []

    def signed(key: str) -> str:
        served = served_files[key]
        StoredFile.objects.using(alias).filter(pk=served.pk).update(public=False, owner=owner)
        changed.append(served.pk)
        return StoredFile.objects.using(alias).get(pk=served.pk).signed_url(owner)

    try:
        yield signed
    finally:
        StoredFile.objects.using(alias).filter(pk__in=changed).update(public=True, owner=None)
        User.objects.using(alias).filter(pk=owner.pk).delete()
        connections[alias].close()
        del connections[alias]


@needs_curl
@needs_wget
def test_curl_and_wget_resume_a_private_file_by_its_signed_url(
    server: Server,
    served_files: dict[str, Served],
    signed_private: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """No session: the signed URL is the permission, for every range of the download."""
    served = served_files[LARGE]
    path = signed_private(LARGE)
    url = server.base_url + path
    assert request(server, "GET", served.path).status == 404  # private: not to anyone
    target = tmp_path / "by-curl.bin"
    first = _run("curl", "-sS", "--fail", "-r", "0-999999", "-o", str(target), url)
    assert first.returncode == 0, first.stderr
    resumed = _run(
        "curl", "-sS", "--fail", "-C", "-", "-o", str(target), "-w", "%{http_code}", url
    )
    assert (resumed.returncode, resumed.stdout) == (0, b"206"), resumed.stderr
    assert _sha256(target) == served.sha256
    partial = tmp_path / "by-wget.bin"
    partial.write_bytes(served.data(0, 3 * MiB - 1))
    result = _run("wget", "-q", "-S", "-c", "-O", str(partial), url)
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 206 " in result.stderr, result.stderr
    assert _sha256(partial) == served.sha256
    # Another name in the URL, or an expired one: nothing.
    renamed = path.rsplit("/", 1)[0] + "/other.bin"
    assert request(server, "GET", renamed).status == 404
