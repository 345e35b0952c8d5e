"""The lean path (files_app.fastpath): public files and share links answered by
FileServingMiddleware, and under ASGI by StreamingASGIHandler, with the same status,
headers and bytes as the views, in one query, and everything else left to the views.

Real servers run the range cases against it in test_servers.py; the host's decorators and
middleware rules, which send a request to the views, are in test_lean_access.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.db.models import Q
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import fastpath, largeobjects, largeobjects_async
from files_app.asgi import StreamingASGIHandler
from files_app.models import StoredFile
from files_app.sharing import make_share_url
from tests.lean import (
    ENTRIES,
    LEAN,
    Reply,
    asgi,
    fetch,
    fetch_all,
    normalized,
    request_scope,
)
from tests.lean import client as _wsgi
from tests.rangecases import (
    CASES,
    VIEW_STATUSES,
    Served,
    check_response,
    create_served,
    request_headers,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_attachment")]

SECURITY = "django.middleware.security.SecurityMiddleware"
# The headers Django's security middleware put on the views' answers, with the settings of
# the `hardened` fixture: a lean answer must carry each of them too, whatever its status.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "strict-transport-security": "max-age=3600; includeSubDomains",  # over HTTPS only
    "x-frame-options": "DENY",
}
# Only the views' answers carry SessionMiddleware's Vary: Cookie: a view reads the session
# to learn who asks, and a lean answer (a public file, a share link) is the same for all.
VIEW_ONLY_HEADERS = {"vary"}
KiB = 1024


@pytest.fixture
def hardened(settings: SettingsWrapper) -> list[str]:
    """Every header Django's security middleware may add to a download: the test settings'
    SecurityMiddleware with HSTS, plus XFrameOptionsMiddleware last (as startproject has
    it). Return MIDDLEWARE, without the lean path."""
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    return list(settings.MIDDLEWARE)


def _with_lean(middleware: list[str], placement: str) -> list[str]:
    if placement == "first":
        return [LEAN, *middleware]
    at = middleware.index(SECURITY) + 1  # where whitenoise puts its own
    return [*middleware[:at], LEAN, *middleware[at:]]


@pytest.fixture
def served_files() -> Iterator[dict[str, Served]]:
    files = {key: create_served(key) for key in sorted({case.resource_key for case in CASES})}
    yield files
    StoredFile.objects.filter(pk__in=[served.pk for served in files.values()]).delete()


def _drop(values: dict[str, str], names: set[str]) -> dict[str, str]:
    return {name: value for name, value in values.items() if name not in names}


# --- The same answers as the views -------------------------------------------------------


def test_the_cases_cover_every_status_of_a_download() -> None:
    assert {case.expect_status for case in CASES} >= VIEW_STATUSES


@pytest.mark.parametrize("placement", ["first", "after-security"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_every_range_case_gets_the_views_answer_with_every_header(
    entry: str,
    placement: str,
    served_files: dict[str, Served],
    hardened: list[str],
    lean_answers: list[str],
    settings: SettingsWrapper,
) -> None:
    """Status, body and every header but Vary, for each door: Django's handlers with the
    middleware (WSGI, ASGI) and files_app's handlers before Django's; with the lean
    middleware first or right after SecurityMiddleware; over HTTPS (HSTS)."""
    requests = []
    views = []
    for case in CASES:
        served = served_files[case.resource_key]
        request = (case.method, served.path, request_headers(case, served))
        requests.append(request)
        views.append(_wsgi(*request, secure=True))
    settings.MIDDLEWARE = _with_lean(hardened, placement)
    replies = fetch_all(entry, requests, secure=True)
    lean_paths = 0
    for case, view, reply in zip(CASES, views, replies, strict=True):
        served = served_files[case.resource_key]
        check_response(case, served, *reply)
        view_status, view_headers, view_body = normalized(view)
        lean_status, lean_headers, lean_body = normalized(reply)
        assert (lean_status, lean_body) == (view_status, view_body), case.id
        assert _drop(lean_headers, VIEW_ONLY_HEADERS) == _drop(view_headers, VIEW_ONLY_HEADERS), (
            case.id
        )
        assert lean_headers.items() >= SECURITY_HEADERS.items(), case.id
        if "/attachment/" not in served.path and lean_status != 405:
            # Answered by the lean path: no session was touched, so no Vary: Cookie.
            assert "vary" not in lean_headers, case.id
            lean_paths += 1
    assert len(lean_answers) == lean_paths


def test_a_lean_answer_is_one_query_that_opens_the_object(
    served_files: dict[str, Served], lean: None
) -> None:
    for case in CASES:
        served = served_files[case.resource_key]
        if "/attachment/" in served.path or case.method not in ("GET", "HEAD"):
            continue
        with CaptureQueriesContext(connection) as queries:
            _wsgi(case.method, served.path, request_headers(case, served))
        assert queries.captured_queries, case.id
        assert "lo_open" in queries.captured_queries[0]["sql"], case.id


def _share_links(files: dict[str, Served]) -> dict[str, str]:
    return {
        key: make_share_url(uuid.UUID(served.uuid), served.name, timedelta(hours=1))
        for key, served in files.items()
    }


def _signed_urls(files: dict[str, Served]) -> dict[str, str]:
    owner = User.objects.create_user("signed-owner")
    StoredFile.objects.filter(pk__in=[served.pk for served in files.values()]).update(owner=owner)
    return {
        key: StoredFile.objects.get(pk=served.pk).signed_url(owner)
        for key, served in files.items()
    }


@pytest.mark.parametrize("links_of", [_share_links, _signed_urls], ids=["share", "signed"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_every_range_case_through_a_share_link_gets_the_views_answer(
    entry: str,
    links_of: Callable[[dict[str, Served]], dict[str, str]],
    served_files: dict[str, Served],
    hardened: list[str],
    lean_answers: list[str],
    settings: SettingsWrapper,
) -> None:
    """The whole matrix again through share links and signed URLs, to private files (the
    link is the permission; a signed URL's grounds are its owner's): status, body and
    every header but Vary, lean path against the view."""
    StoredFile.objects.filter(pk__in=[served.pk for served in served_files.values()]).update(
        public=False
    )
    links = links_of(served_files)
    requests = [
        (
            case.method,
            links[case.resource_key],
            request_headers(case, served_files[case.resource_key]),
        )
        for case in CASES
    ]
    views = [_wsgi(*request, secure=True) for request in requests]
    settings.MIDDLEWARE = _with_lean(hardened, "first")
    replies = fetch_all(entry, requests, secure=True)
    for case, view, reply in zip(CASES, views, replies, strict=True):
        view_status, view_headers, view_body = normalized(view)
        lean_status, lean_headers, lean_body = normalized(reply)
        assert lean_status == case.expect_status, case.id
        assert (lean_status, lean_body) == (view_status, view_body), case.id
        assert _drop(lean_headers, VIEW_ONLY_HEADERS) == _drop(view_headers, VIEW_ONLY_HEADERS), (
            case.id
        )
        assert lean_headers.items() >= SECURITY_HEADERS.items(), case.id
        if lean_status in (200, 206, 304):  # a link's holder is not the public
            assert lean_headers["cache-control"] == "private, no-cache", case.id
    assert len(lean_answers) == sum(case.method in ("GET", "HEAD") for case in CASES)


@pytest.mark.parametrize("entry", ENTRIES)
def test_share_links_get_the_views_answer_with_every_header(
    entry: str,
    hardened: list[str],
    lean_answers: list[str],
    settings: SettingsWrapper,
    store: Callable[..., StoredFile],
) -> None:
    stored = store(b"0123456789" * 10, "shared.txt", public=False)
    url = make_share_url(stored.uuid, stored.download_name, timedelta(hours=1))
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", url, {}),
        ("GET", url, {"Range": "bytes=2-4"}),
        ("GET", url, {"If-None-Match": stored.etag}),
        ("GET", url, {"If-Match": '"another"'}),
        ("GET", url, {"Range": "bytes=500-"}),
        ("HEAD", url, {}),
    ]
    views = [_wsgi(*request, secure=True) for request in requests]
    settings.MIDDLEWARE = _with_lean(hardened, "first")
    replies = fetch_all(entry, requests, secure=True)
    assert [reply[0] for reply in replies] == [200, 206, 304, 412, 416, 200]
    assert [normalized(reply) for reply in replies] == [normalized(view) for view in views]
    for reply in replies:
        assert normalized(reply)[1].items() >= SECURITY_HEADERS.items()
    assert len(lean_answers) == len(requests)


@pytest.mark.parametrize("entry", ENTRIES)
def test_plain_http_answers_have_no_hsts_on_either_path(
    entry: str,
    hardened: list[str],
    lean_answers: list[str],
    settings: SettingsWrapper,
    store: Callable[..., StoredFile],
) -> None:
    stored = store(b"plain", "plain.txt")
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", stored.get_absolute_url(), {}),
        ("GET", stored.get_absolute_url(), {"If-None-Match": stored.etag}),
    ]
    views = [_wsgi(*request) for request in requests]
    settings.MIDDLEWARE = _with_lean(hardened, "after-security")
    replies = fetch_all(entry, requests)
    for view, reply in zip(views, replies, strict=True):
        view_values, lean_values = normalized(view)[1], normalized(reply)[1]
        assert "strict-transport-security" not in lean_values
        assert _drop(lean_values, VIEW_ONLY_HEADERS) == _drop(view_values, VIEW_ONLY_HEADERS)
    assert len(lean_answers) == len(requests)


@pytest.mark.parametrize("entry", ["client", "wsgi-handler"])
def test_a_lean_503_carries_the_security_headers(
    entry: str,
    hardened: list[str],
    settings: SettingsWrapper,
    store: Callable[..., StoredFile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = store()
    settings.MIDDLEWARE = _with_lean(hardened, "first")

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")  # simulated: the database is down

    monkeypatch.setattr(fastpath, "serve", down)
    status, headers, _ = fetch(entry, "GET", stored.get_absolute_url(), secure=True)
    assert status == 503
    assert normalized((status, headers, b""))[1].items() >= SECURITY_HEADERS.items()


@pytest.mark.parametrize(
    ("setting", "value", "header"),
    [
        ("SECURE_CONTENT_TYPE_NOSNIFF", False, "x-content-type-options"),
        ("SECURE_REFERRER_POLICY", None, "referrer-policy"),
        ("SECURE_CROSS_ORIGIN_OPENER_POLICY", None, "cross-origin-opener-policy"),
        ("SECURE_HSTS_SECONDS", 0, "strict-transport-security"),
    ],
)
def test_a_setting_that_turns_a_header_off_turns_it_off_on_both_paths(
    setting: str,
    value: Any,
    header: str,
    hardened: list[str],
    settings: SettingsWrapper,
    store: Callable[..., StoredFile],
) -> None:
    # 304: the responder sets no nosniff of its own there, so the setting decides.
    stored = store()
    setattr(settings, setting, value)
    request = ("GET", stored.get_absolute_url(), {"If-None-Match": stored.etag})
    view = normalized(_wsgi(*request, secure=True))
    settings.MIDDLEWARE = _with_lean(hardened, "first")
    reply = normalized(fetch("wsgi-handler", *request, secure=True))
    assert (reply[0], view[0]) == (304, 304)
    assert header not in reply[1]
    assert _drop(reply[1], VIEW_ONLY_HEADERS) == _drop(view[1], VIEW_ONLY_HEADERS)


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


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_lean_path_serves_only_what_the_one_access_rule_allows_anyone(
    entry: str,
    lean: None,
    store: Callable[..., StoredFile],
    monkeypatch: pytest.MonkeyPatch,
    lean_answers: list[str],
) -> None:
    """StoredFile.visible_to is the rule of both paths: a host (or a later change) that
    narrows it narrows the lean path too, which compiles it into its query."""
    shown = store(b"shown", "shown.txt")
    embargoed = store(b"embargoed", "report.embargoed")
    rule = StoredFile.visible_to.__func__  # type: ignore[attr-defined]

    def narrower(cls: type[StoredFile], user: Any) -> Any:
        return rule(cls, user) & ~Q(name__endswith=".embargoed")

    monkeypatch.setattr(StoredFile, "visible_to", classmethod(narrower))
    fastpath._lookup.cache_clear()
    try:
        replies = fetch_all(
            entry,
            [("GET", shown.get_absolute_url(), {}), ("GET", embargoed.get_absolute_url(), {})],
        )
    finally:
        fastpath._lookup.cache_clear()
    assert [reply[0] for reply in replies] == [200, 404]
    assert replies[0][2] == b"shown"
    assert lean_answers == [str(shown.uuid)]  # the embargoed file went to the view


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
    largeobjects.write(int(stored.file.name), 5, b"678", "default")  # behind the row's back
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
                await asgi(app, "GET", stored.get_absolute_url(), {}),
                await asgi(app, "GET", "/nowhere/", {}),
                await asgi(app, "GET", public.get_absolute_url(), {"Range": "bytes=1-2"}),
            )
        finally:
            await largeobjects_async.close_pools()

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
                app(request_scope("GET", stored.get_absolute_url(), {}), receive, send), 30
            )
        finally:
            await largeobjects_async.close_pools()

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
    options = largeobjects_async._pool_options
    monkeypatch.setattr(
        largeobjects_async, "_pool_options", lambda d: {**options(d), "max_size": 1}
    )
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
                reply = await asgi(app, "GET", stored.get_absolute_url(), headers)
                assert reply[2] == b"prep"
            async with largeobjects_async.connection("default") as conn:
                cursor = conn.cursor()
                await cursor.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                    ["%lo_lseek64(o.fd%"],
                )
                row = await cursor.fetchone()
                return int(row[0])
        finally:
            await largeobjects_async.close_pools()

    assert async_to_sync(run)() == (1 if prepare else 0)
