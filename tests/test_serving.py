"""The lean path (files_app.serving): public files and share links answered by
FileServingMiddleware, and under ASGI by StreamingASGIHandler, with the same status,
headers and bytes as the views, in one query, and everything else left to the views.

Real servers run the range cases against it in test_servers.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import unquote
from wsgiref.util import setup_testing_defaults

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import alo, lo
from files_app.asgi import StreamingASGIHandler
from files_app.models import StoredFile
from files_app.sharing import make_share_url
from files_app.wsgi import FilesWSGIHandler
from tests.rangecases import (
    CASES,
    Headers,
    RangeCase,
    Served,
    check_response,
    create_served,
    request_headers,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_attachment")]

LEAN = "files_app.middleware.FileServingMiddleware"
# Headers that the middleware after the lean one adds on the view's way, and so only there:
# SessionMiddleware's Vary, SecurityMiddleware's policies (and its nosniff on the bodiless
# 304 and 412, where files_app sets none).
SKIPPED_MIDDLEWARE_HEADERS = {
    "vary",
    "referrer-policy",
    "cross-origin-opener-policy",
    "x-content-type-options",
}
KiB = 1024
Reply = tuple[int, Headers, bytes]


@pytest.fixture
def lean(settings: SettingsWrapper) -> None:
    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE]


@pytest.fixture
def served_files() -> Iterator[dict[str, Served]]:
    files = {key: create_served(key) for key in sorted({case.resource_key for case in CASES})}
    yield files
    StoredFile.objects.filter(pk__in=[served.pk for served in files.values()]).delete()


def _wsgi(method: str, path: str, headers: dict[str, str]) -> Reply:
    response = Client().generic(method, path, headers=headers)
    if isinstance(response, StreamingHttpResponse):
        body = b"".join(response)
    else:
        body = bytes(response.content)
    return response.status_code, Headers(response.headers.items()), body


def _normalized(reply: Reply) -> tuple[int, dict[str, str], bytes]:
    """The reply with its multipart boundary (random per response) replaced."""
    status, headers, body = reply
    values = dict(headers._values)
    match = re.search(r"boundary=(\S+)", values.get("content-type", ""))
    if match:
        values["content-type"] = values["content-type"].replace(match[1], "BOUNDARY")
        body = body.replace(match[1].encode(), b"BOUNDARY")
    return status, values, body


def _drop(values: dict[str, str], names: set[str]) -> dict[str, str]:
    return {name: value for name, value in values.items() if name not in names}


# --- The same answers as the views -------------------------------------------------------


def _wsgi_handler(method: str, path: str, headers: dict[str, str]) -> Reply:
    """Call files_app.wsgi's handler directly, as a WSGI server would."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(path).encode().decode("latin-1"),
        "HTTP_HOST": "testserver",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.append((status, response_headers))

    body = FilesWSGIHandler()(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, response_headers = started[0]
    return int(status.split()[0]), Headers(response_headers), data


@pytest.mark.parametrize("entry", ["middleware", "handler"])
def test_every_range_case_gets_the_views_answer(
    entry: str, served_files: dict[str, Served], settings: SettingsWrapper
) -> None:
    """Through FileServingMiddleware in Django's handler, and through files_app.wsgi's
    handler before Django's."""
    middleware = list(settings.MIDDLEWARE)
    fetch = _wsgi if entry == "middleware" else _wsgi_handler
    for case in CASES:
        served = served_files[case.resource_key]
        headers = request_headers(case, served)
        settings.MIDDLEWARE = middleware
        view = _wsgi(case.method, served.path, headers)
        settings.MIDDLEWARE = [LEAN, *middleware]
        with CaptureQueriesContext(connection) as queries:
            lean = fetch(case.method, served.path, headers)
        check_response(case, served, *lean)
        view_status, view_headers, view_body = _normalized(view)
        lean_status, lean_headers, lean_body = _normalized(lean)
        assert (lean_status, lean_body) == (view_status, view_body), case.id
        assert _drop(lean_headers, SKIPPED_MIDDLEWARE_HEADERS) == _drop(
            view_headers, SKIPPED_MIDDLEWARE_HEADERS
        ), case.id
        if lean_status in (200, 206, 416):
            assert lean_headers["x-content-type-options"] == "nosniff", case.id
        if "/attachment/" not in served.path and lean_status != 405:
            # Answered by the lean path: no session was touched, so no Vary: Cookie.
            assert "vary" not in lean_headers, case.id
            assert queries.captured_queries, case.id
            assert "lo_open" in queries.captured_queries[0]["sql"], case.id


def _request_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
            ),
        ],
        "client": ("127.0.0.1", 4321),
        "server": ("testserver", 80),
    }


async def _asgi(app: Any, method: str, path: str, headers: dict[str, str]) -> Reply:
    """Call an ASGI application directly, as a server would."""
    sent: list[dict[str, Any]] = []
    requested = False
    never = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_request_scope(method, path, headers), receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert not sent[-1].get("more_body", False), "the body never ended"
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
    return start["status"], Headers(pairs), body


async def _async_client(method: str, path: str, headers: dict[str, str]) -> Reply:
    response = await AsyncClient().generic(method, path, headers=headers)
    if not isinstance(response, StreamingHttpResponse):
        body = bytes(response.content)
    elif hasattr(response.streaming_content, "__aiter__"):
        body = b"".join([chunk async for chunk in response.streaming_content])
    else:
        body = b"".join(response.streaming_content)
    return response.status_code, Headers(response.headers.items()), body


@pytest.mark.parametrize("entry", ["handler", "middleware"])
def test_every_range_case_is_answered_on_the_event_loop_under_asgi(
    entry: str, served_files: dict[str, Served], lean: None, driver: str
) -> None:
    """Through StreamingASGIHandler (before Django's handler) and through the middleware
    under Django's async handling (AsyncClient), with the async pool (psycopg 3)."""
    app = StreamingASGIHandler()

    async def run() -> list[tuple[RangeCase, Served, Reply]]:
        replies = []
        try:
            for case in CASES:
                served = served_files[case.resource_key]
                headers = request_headers(case, served)
                if entry == "handler":
                    reply = await _asgi(app, case.method, served.path, headers)
                else:
                    reply = await _async_client(case.method, served.path, headers)
                replies.append((case, served, reply))
        finally:
            await alo.close_pools()
        return replies

    for case, served, reply in async_to_sync(run)():
        check_response(case, served, *reply)
        expected = _wsgi(case.method, served.path, request_headers(case, served))
        assert _normalized(reply)[0::2] == _normalized(expected)[0::2], case.id


# --- One query -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Range": "bytes=1000-66535"}),
        ("GET", {"Range": "bytes=-5000"}),
        ("GET", {"Range": "bytes=70000-"}),
        ("HEAD", {}),
        ("GET", {"If-None-Match": "*"}),
    ],
)
def test_a_small_or_ranged_request_is_one_query(
    method: str, headers: dict[str, str], lean: None, store: Callable[..., StoredFile]
) -> None:
    data = bytes(range(256)) * 400  # 102,400 bytes; the tests read 64 KiB per query
    stored = store(data, "small.bin")
    with CaptureQueriesContext(connection) as queries:
        status, reply_headers, body = _wsgi(method, stored.get_absolute_url(), headers)
    assert len(queries.captured_queries) == 1, [q["sql"] for q in queries.captured_queries]
    if "Range" in headers:
        assert status == 206
        first, last = map(int, re.findall(r"\d+", reply_headers.get("Content-Range") or "")[:2])
        assert body == data[first : last + 1]
    else:
        assert (status, body) == ((200, b"") if method == "HEAD" else (304, b""))


def test_a_guess_that_misses_reads_again(
    lean: None, store: Callable[..., StoredFile], settings: SettingsWrapper
) -> None:
    # If-Range with another ETag: the guess (the range) is wrong, the whole file is sent.
    data = b"x" * 100 + b"y" * 100
    stored = store(data, "guess.bin")
    headers = {"Range": "bytes=150-", "If-Range": '"not-the-etag"'}
    with CaptureQueriesContext(connection) as queries:
        status, _, body = _wsgi("GET", stored.get_absolute_url(), headers)
    assert (status, body) == (200, data)
    assert len(queries.captured_queries) == 2


def test_a_large_file_streams_in_chunks(lean: None, store: Callable[..., StoredFile]) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB reads
    stored = store(data, "big.bin")
    with CaptureQueriesContext(connection) as queries:
        status, _, body = _wsgi("GET", stored.get_absolute_url(), {})
    assert (status, body) == (200, data)
    assert len(queries.captured_queries) == 4


# --- What the lean path leaves to the views ------------------------------------------------


def test_private_files_go_through_django_auth(
    lean: None, store: Callable[..., StoredFile], django_user_model: type[User]
) -> None:
    owner = django_user_model.objects.create_user("owner", password="pw")
    stored = store(b"secret", "secret.txt", public=False, owner=owner)
    assert _wsgi("GET", stored.get_absolute_url(), {})[0] == 404
    client = Client()
    client.force_login(owner)
    response = client.get(stored.get_absolute_url())
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"secret"  # type: ignore[attr-defined]
    assert "Cookie" in response.headers.get("Vary", "")  # answered by the view


def test_share_links(lean: None, store: Callable[..., StoredFile]) -> None:
    stored = store(b"shared", "shared.txt", public=False)
    url = make_share_url(stored.uuid, stored.download_name, timedelta(hours=1))
    with CaptureQueriesContext(connection) as queries:
        status, headers, body = _wsgi("GET", url, {})
    assert (status, body) == (200, b"shared")
    assert headers.get("Cache-Control") == "private, no-cache"
    assert len(queries.captured_queries) == 1
    expired = make_share_url(stored.uuid, stored.download_name, timedelta(seconds=-1))
    assert _wsgi("GET", expired, {})[0] == 410
    tampered = url.replace("/share/", "/share/x")
    assert _wsgi("GET", tampered, {})[0] == 404


def test_a_missing_object_is_the_views_404(lean: None, store: Callable[..., StoredFile]) -> None:
    stored = store(b"gone", "gone.txt")
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_unlink(%s)", [int(stored.file.name)])
    assert _wsgi("GET", stored.get_absolute_url(), {})[0] == 404


def test_an_object_of_another_size_is_left_to_the_view(
    lean: None, store: Callable[..., StoredFile], caplog: pytest.LogCaptureFixture
) -> None:
    stored = store(b"12345", "grown.txt")
    lo.write(int(stored.file.name), 5, b"678", "default")  # behind the row's back
    status, headers, body = _wsgi("GET", stored.get_absolute_url(), {})
    assert (status, body) == (200, b"12345678")
    assert headers.get("ETag") is None
    assert "serving its actual size" in caplog.text


@pytest.mark.parametrize(
    ("method", "extra", "status"),
    [
        ("POST", {}, 405),
        ("GET", {"Host": "evil.example"}, 400),
    ],
)
def test_other_requests_are_left_to_django(
    method: str,
    extra: dict[str, str],
    status: int,
    lean: None,
    store: Callable[..., StoredFile],
) -> None:
    stored = store()
    assert _wsgi(method, stored.get_absolute_url(), extra)[0] == status


def test_plain_http_is_redirected_when_https_is_required(
    lean: None, store: Callable[..., StoredFile], settings: SettingsWrapper
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    stored = store()
    response = Client().get(stored.get_absolute_url())
    assert response.status_code == 301
    assert response.headers["Location"].startswith("https://")
    assert Client().get(stored.get_absolute_url(), secure=True).status_code == 200


def test_the_handler_leaves_private_files_and_other_paths_to_django(
    lean: None, store: Callable[..., StoredFile]
) -> None:
    stored = store(b"secret", "secret.txt", public=False)
    public = store(b"public", "public.txt")
    app = StreamingASGIHandler()

    async def run() -> tuple[Reply, Reply, Reply]:
        try:
            return (
                await _asgi(app, "GET", stored.get_absolute_url(), {}),
                await _asgi(app, "GET", "/nowhere/", {}),
                await _asgi(app, "GET", public.get_absolute_url(), {"Range": "bytes=1-2"}),
            )
        finally:
            await alo.close_pools()

    private, elsewhere, ranged = async_to_sync(run)()
    assert private[0] == 404
    assert elsewhere[0] == 404
    assert (ranged[0], ranged[2]) == (206, b"ub")


def test_a_client_leaving_mid_body_stops_the_reads(
    lean: None, store: Callable[..., StoredFile], driver: str
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: sixteen 64 KiB reads
    stored = store(data, "long.bin")
    app = StreamingASGIHandler()
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        leave = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)
            if sum(1 for m in sent if m["type"] == "http.response.body") == 2:
                leave.set()
            await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(
                app(_request_scope("GET", stored.get_absolute_url(), {}), receive, send), 30
            )
        finally:
            await alo.close_pools()

    started = time.monotonic()
    async_to_sync(run)()
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 2 <= len(bodies) < 16, f"{len(bodies)} body messages after the client left"
    assert time.monotonic() - started < 30


# --- Prepared statements ---------------------------------------------------------------------


def _prepared_lookups(cursor: Any) -> int:
    cursor.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
        ["%lo_lseek64(o.fd%"],
    )
    return int(cursor.fetchone()[0])


@pytest.mark.parametrize("prepare", [True, False])
def test_the_lookup_is_prepared_on_the_server(
    prepare: bool,
    lean: None,
    store: Callable[..., StoredFile],
    settings: SettingsWrapper,
    driver: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.FILES_APP_PREPARE = prepare
    # One connection in the async pool, so that the check below sees the one that served
    # (a pool may open a second connection while the first is still being made).
    options = alo._pool_options
    monkeypatch.setattr(alo, "_pool_options", lambda d: {**options(d), "max_size": 1})
    stored = store(b"prepared", "prepared.txt")
    connection.close()
    for _ in range(2):
        assert _wsgi("GET", stored.get_absolute_url(), {})[2] == b"prepared"
    with connection.cursor() as cursor:
        # psycopg2 has no server-side parameters: it prepares nothing.
        assert _prepared_lookups(cursor) == (1 if prepare and driver == "psycopg" else 0)
    if driver != "psycopg":
        return  # no async pool either
    # Django's own setting on its connection is left as it was.
    assert connection.connection.prepare_threshold is None

    async def run() -> int:
        try:
            headers = {"Range": "bytes=0-3"}
            app = StreamingASGIHandler()
            for _ in range(2):
                reply = await _asgi(app, "GET", stored.get_absolute_url(), headers)
                assert reply[2] == b"prep"
            async with alo.connection("default") as conn:
                cursor = conn.cursor()
                await cursor.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                    ["%lo_lseek64(o.fd%"],
                )
                row = await cursor.fetchone()
                return int(row[0])
        finally:
            await alo.close_pools()

    assert async_to_sync(run)() == (1 if prepare else 0)
