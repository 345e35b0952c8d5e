"""The download views through Django's test client (WSGI and ASGI handlers).

The same range cases also run against real servers in test_servers.py, with the same checker
(tests/rangecases.py).
"""

from __future__ import annotations

import email.utils
import re
import string
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import unquote

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import largeobjects, largeobjects_async
from files_app.models import StoredFile
from files_app.views import StoredFileView
from tests.rangecases import (
    CASES,
    CHOSEN_STATUS,
    VIEW_STATUSES,
    Headers,
    RangeCase,
    Served,
    check_consistent,
    check_parts_cover,
    check_response,
    content,
    create_served,
    expand,
    request_headers,
)
from tests.testapp.models import Document

pytestmark = pytest.mark.django_db(transaction=True)

MakeServed = Callable[[str], Served]


@pytest.fixture(autouse=True)
def _no_orphans(lo_count: Callable[[], int]) -> Iterator[None]:
    # Every test deletes what it stored: a large object left behind is a leak.
    before = lo_count()
    yield
    assert lo_count() == before


@pytest.fixture
def make_served() -> Iterator[MakeServed]:
    """Return a factory storing a range-case file by key; delete the rows afterwards.

    Deleting the rows (not the flush's TRUNCATE, which skips triggers) frees the objects.
    """
    created: list[int] = []

    def make(key: str) -> Served:
        served = create_served(key)
        created.append(served.pk)
        return served

    yield make
    StoredFile.objects.filter(pk__in=created).delete()


def _body(response: HttpResponseBase) -> bytes:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response)
    return bytes(response.content)  # type: ignore[attr-defined]


def _get(method: str, path: str, headers: dict[str, str], *, asgi: bool) -> Any:
    """Request through the WSGI or the ASGI handler; return (status, headers, body)."""
    if not asgi:
        response = Client().generic(method, path, headers=headers)
        return response.status_code, Headers(response.headers.items()), _body(response)

    async def fetch() -> tuple[int, Headers, bytes]:
        try:
            response = await AsyncClient().generic(method, path, headers=headers)
            if not isinstance(response, StreamingHttpResponse):
                body = bytes(response.content)
            elif hasattr(response.streaming_content, "__aiter__"):
                body = b"".join([chunk async for chunk in response.streaming_content])
            else:  # the client replaces a HEAD body with a plain list
                body = b"".join(response.streaming_content)
            return response.status_code, Headers(response.headers.items()), body
        finally:
            await largeobjects_async.close_pools()  # the body's reads used this event loop's pool

    return async_to_sync(fetch)()


# --- The range cases of tests/data/range_cases.json -------------------------------------


@pytest.mark.urls("tests.urls_attachment")
@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_range_case_gets_a_correct_answer(
    case: RangeCase, handler: str, make_served: MakeServed
) -> None:
    served = make_served(case.resource_key)
    status, headers, body = _get(
        case.method, served.path, request_headers(case, served), asgi=handler == "asgi"
    )
    check_response(case, served, status, headers, body)


ALTERNATIVES = [case for case in CASES if case.accept_also]


def test_every_case_with_alternatives_documents_the_one_we_pick() -> None:
    assert set(CHOSEN_STATUS) == {case.id for case in ALTERNATIVES}
    for case in ALTERNATIVES:
        assert CHOSEN_STATUS[case.id] in case.allowed_statuses


@pytest.mark.urls("tests.urls_attachment")
@pytest.mark.parametrize("case", ALTERNATIVES, ids=[case.id for case in ALTERNATIVES])
def test_view_picks_the_documented_alternative(case: RangeCase, make_served: MakeServed) -> None:
    served = make_served(case.resource_key)
    status, _, _ = _get(case.method, served.path, request_headers(case, served), asgi=False)
    assert status == CHOSEN_STATUS[case.id]


@pytest.mark.parametrize("placeholder", ["{LM}", "{LM_RFC850}", "{LM_ASCTIME}"])
def test_if_range_matches_last_modified_in_every_http_date_format(
    placeholder: str, make_served: MakeServed
) -> None:
    # RFC 9110 §5.6.7: recipients accept all three HTTP-date formats.
    served = make_served("size10000")
    headers = {"Range": "bytes=10-19", "If-Range": expand(placeholder, served)}
    status, response_headers, body = _get("GET", served.path, headers, asgi=False)
    assert (status, body) == (206, served.data(10, 19))
    assert response_headers.get("Content-Range") == "bytes 10-19/10000"


# --- Properties: any header gets a valid answer --------------------------------------------

# Printable ASCII plus a few latin-1 characters: what a real server can pass on.
HEADER_TEXT = st.text(
    alphabet=st.sampled_from([*string.printable[:-5], "\xa0", "\xe9", "\xff", "\xb2"]),
    max_size=40,
)
POSITION = st.one_of(
    st.integers(0, 12000),
    st.sampled_from([0, 1, 9998, 9999, 10000, 2**31, 2**63, 10**30]),
)
OWS = st.sampled_from(["", " ", "\t", " \t "])


@st.composite
def range_specs(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["closed", "open", "suffix"]))
    if kind == "suffix":
        spec = f"-{draw(POSITION)}"
    elif kind == "open":
        spec = f"{draw(POSITION)}-"
    else:
        first = draw(POSITION)
        spec = f"{first}-{first + draw(st.integers(-5, 3000))}"
    return draw(OWS) + spec + draw(OWS)


RANGE_HEADERS = st.one_of(
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "Bytes", "BYTES", " bytes", "bits", "bytes "]),
        st.lists(range_specs(), min_size=0, max_size=8),
    ),
    st.builds(lambda text: f"bytes={text}", HEADER_TEXT),
    HEADER_TEXT,
)
IF_RANGE_HEADERS = st.one_of(
    st.none(),
    st.sampled_from(
        ["{ETAG}", "{WETAG}", "{LM}", "{LM_PLUS}", "{LM_RFC850}", "{LM_ASCTIME}", '"other"']
    ),
    HEADER_TEXT,
)
PROPERTY_SETTINGS = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_any_range_and_if_range_header_gets_a_correct_answer(make_served: MakeServed) -> None:
    # Files are stored once per test; hypothesis then only varies the request.
    files = [make_served(key) for key in ("size0", "size1", "size10000")]

    @PROPERTY_SETTINGS
    @given(
        served=st.sampled_from(files),
        range_header=RANGE_HEADERS,
        if_range=IF_RANGE_HEADERS,
        method=st.sampled_from(["GET", "GET", "GET", "HEAD"]),
    )
    def check(served: Served, range_header: str, if_range: str | None, method: str) -> None:
        headers = {"Range": range_header}
        if if_range is not None:
            headers["If-Range"] = expand(if_range, served)
        status, response_headers, body = _get(method, served.path, headers, asgi=False)
        assert status in VIEW_STATUSES
        check_consistent(method, status, response_headers, body, served)

    check()


def test_a_satisfiable_range_set_gets_exactly_the_requested_bytes(
    make_served: MakeServed,
) -> None:
    served = make_served("size10000")
    size = served.size
    spans = st.tuples(st.integers(0, size - 1), st.integers(0, 400)).map(
        lambda p: (p[0], min(p[0] + p[1], size - 1))
    )

    @PROPERTY_SETTINGS
    @given(requested=st.lists(spans, min_size=1, max_size=6), asgi=st.booleans())
    def check(requested: list[tuple[int, int]], asgi: bool) -> None:
        header = "bytes=" + ",".join(f"{a}-{b}" for a, b in requested)
        status, headers, body = _get("GET", served.path, {"Range": header}, asgi=asgi)
        assert status == 206
        claimed = check_consistent("GET", status, headers, body, served)
        assert claimed is not None
        check_parts_cover(requested, claimed)
        # Coalesced parts never overlap, and come in the order asked for (RFC 9110 §14.6):
        # each part where the first range it contains was in the header.
        ordered = sorted(claimed)
        assert all(b < c for (_, b), (c, _) in zip(ordered, ordered[1:], strict=False))
        firsts = [
            min(i for i, (a, b) in enumerate(requested) if first <= a and b <= last)
            for first, last in claimed
        ]
        assert firsts == sorted(firsts)

    check()


# --- Who may download what ------------------------------------------------------------------


@pytest.fixture
def private_file(store: Callable[..., StoredFile], django_user_model: type[User]) -> StoredFile:
    owner = django_user_model.objects.create_user("owner", password="pw")
    return store(b"secret\n", "secret.txt", public=False, owner=owner)


def test_private_file_is_404_for_anonymous(private_file: StoredFile, client: Client) -> None:
    assert client.get(private_file.get_absolute_url()).status_code == 404


def test_private_file_is_404_for_another_user(
    private_file: StoredFile, client: Client, django_user_model: type[User]
) -> None:
    client.force_login(django_user_model.objects.create_user("other", password="pw"))
    assert client.get(private_file.get_absolute_url()).status_code == 404


def test_private_file_is_served_to_its_owner(private_file: StoredFile, client: Client) -> None:
    assert private_file.owner is not None
    client.force_login(private_file.owner)
    response = client.get(private_file.get_absolute_url())
    assert response.status_code == 200
    assert _body(response) == b"secret\n"
    assert response["Cache-Control"] == "private, no-cache"


def test_private_file_is_served_to_a_user_with_view_permission(
    private_file: StoredFile, client: Client, django_user_model: type[User]
) -> None:
    user = django_user_model.objects.create_user("staff", password="pw")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="files_app", codename="view_storedfile")
    )
    client.force_login(user)
    response = client.get(private_file.get_absolute_url())
    assert response.status_code == 200
    assert _body(response) == b"secret\n"


def test_unknown_uuid_is_404(client: Client) -> None:
    path = reverse(
        "files_app:download",
        kwargs={"uuid": "00000000-0000-4000-8000-000000000000", "filename": "x.txt"},
    )
    assert client.get(path).status_code == 404


def test_missing_large_object_is_404_not_500(client: Client) -> None:
    oid = largeobjects.create("default")
    largeobjects.write(oid, 0, b"soon gone", "default")
    stored = StoredFile.objects.create(
        file=str(oid), name="gone.txt", size=9, sha256="0" * 64, public=True
    )
    largeobjects.unlink(oid, "default")
    try:
        assert client.get(stored.get_absolute_url()).status_code == 404
        assert client.head(stored.get_absolute_url()).status_code == 404
    finally:
        stored.delete()


# --- Methods and headers --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_are_405_with_allow(
    method: str, store: Callable[..., StoredFile], client: Client
) -> None:
    response = client.generic(method, store().get_absolute_url())
    assert response.status_code == 405
    assert set(response["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


def test_post_is_405_not_a_csrf_403(store: Callable[..., StoredFile]) -> None:
    # Regression: CsrfViewMiddleware rejected POST before the view could answer 405 + Allow
    # (range case H05); real clients send no CSRF token.
    response = Client(enforce_csrf_checks=True).post(store().get_absolute_url())
    assert response.status_code == 405
    assert "GET" in response["Allow"]


def test_head_has_no_body_and_the_full_content_length(store: Callable[..., StoredFile]) -> None:
    stored = store(content(5000), "data.bin")
    # RequestFactory, not the test client: the client strips HEAD bodies itself.
    request = RequestFactory().head(stored.get_absolute_url())
    request.user = AnonymousUser()
    response = StoredFileView.as_view()(request, uuid=stored.uuid, filename="data.bin")
    assert response.status_code == 200
    assert response["Content-Length"] == "5000"
    assert _body(response) == b""


def test_responses_say_nosniff(store: Callable[..., StoredFile], client: Client) -> None:
    url = store().get_absolute_url()
    for headers in ({}, {"Range": "bytes=0-1"}, {"Range": "bytes=999-"}):
        assert client.get(url, headers=headers)["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=utf-8", "image/svg+xml", "application/xhtml+xml"],
)
def test_active_content_is_an_attachment_in_a_sandbox(
    content_type: str, store: Callable[..., StoredFile], client: Client
) -> None:
    stored = store(b"<script>alert(1)</script>", "page.html", content_type=content_type)
    for headers in ({}, {"Range": "bytes=0-3"}):
        response = client.get(stored.get_absolute_url(), headers=headers)
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["Content-Security-Policy"] == "sandbox"


def test_passive_content_is_inline_without_sandbox(
    store: Callable[..., StoredFile], client: Client
) -> None:
    stored = store(b"%PDF-1.4\n", "doc.pdf", content_type="application/pdf")
    response = client.get(stored.get_absolute_url())
    assert response["Content-Disposition"] == 'inline; filename="doc.pdf"'
    assert "Content-Security-Policy" not in response.headers


DISPOSITION = re.compile(
    r"(inline|attachment); filename=\"((?:[^\"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*)\""
    r"(?:; filename\*=utf-8''([A-Za-z0-9%!#$&+.^_`|~-]+))?"
)


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        'a"b\\c.txt',
        "two\r\nSet-Cookie: x=1.txt",
        'end"; filename="evil.exe',
        "naïve résumé.pdf",
        "日本語 ファイル.txt",
        "tab\tand\x7fdel\x01.txt",
        "dir/name.txt",
        "   ",
    ],
)
def test_content_disposition_cannot_be_broken_by_the_name(
    name: str, store: Callable[..., StoredFile], client: Client
) -> None:
    stored = store(b"x", name)
    # The URL's file name is cosmetic (the UUID selects the file), and a name with CR/LF
    # has no URL of its own.
    path = reverse("files_app:download", kwargs={"uuid": stored.uuid, "filename": "x"})
    value = client.get(path)["Content-Disposition"]
    match = DISPOSITION.fullmatch(value)
    assert match is not None, value
    fallback, encoded = match[2], match[3]
    assert fallback.strip(), "an empty fallback name"
    expected = stored.download_name
    if encoded is None:
        assert re.sub(r"\\(.)", r"\1", fallback) == expected
    else:
        # RFC 8187 ext-value, decoded by the standard library rather than by us.
        params = email.utils.decode_params([(match[1], ""), ("filename*", f"utf-8''{encoded}")])
        decoded = email.utils.unquote(email.utils.collapse_rfc2231_value(params[1][1]))
        assert decoded == unquote(encoded, errors="strict") == expected


def test_storage_url_serves_the_file_of_another_apps_model(client: Client) -> None:
    data = content(3000)
    document = Document.objects.create(attachment=ContentFile(data, name="notes.bin"))
    try:
        url = document.attachment.url
        response = client.get(url)
        assert response.status_code == 200
        assert _body(response) == data
        partial = client.get(url, headers={"Range": "bytes=100-199"})
        assert (partial.status_code, _body(partial)) == (206, data[100:200])
        # Strong validator from the object's creation: a resume with If-Range still works.
        resumed = client.get(url, headers={"Range": "bytes=-10", "If-Range": response["ETag"]})
        assert (resumed.status_code, _body(resumed)) == (206, data[-10:])
    finally:
        document.delete()


def test_storage_url_of_a_named_file_uses_its_base_name(client: Client) -> None:
    name = default_storage.save("attachments/letter.txt", ContentFile(b"Dear reader,\n"))
    try:
        url = default_storage.url(name)
        assert url.endswith("/letter.txt")
        response = client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        assert response["Content-Disposition"] == 'inline; filename="letter.txt"'
        assert _body(response) == b"Dear reader,\n"
    finally:
        default_storage.delete(name)


def test_storage_url_with_a_tampered_token_is_404(client: Client) -> None:
    name = default_storage.save("t.txt", ContentFile(b"x"))
    other = default_storage.save("u.txt", ContentFile(b"y"))
    try:
        url = default_storage.url(name)
        token = url.split("/")[-2]
        payload, signature = token.rsplit(":", 1)
        forged = [
            url.replace(
                token, f"{payload}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
            ),
            url.replace(token, payload),
            url.replace(token, default_storage.url(other).split("/")[-2]),  # another's token
        ]
        for path in forged:
            assert client.get(path).status_code == 404, path
    finally:
        default_storage.delete(name)
        default_storage.delete(other)


def test_a_storage_link_serves_its_file_under_its_own_name_only(client: Client) -> None:
    name = default_storage.save("notes/readme.txt", ContentFile(b"plain text"))
    try:
        url = default_storage.url(name)
        assert client.get(url).status_code == 200
        # The file name is inside the signature: the same token under another name (one a
        # browser would render, say) is not a link to anything.
        for renamed in ("evil.html", "readme.txt.html", "README.txt"):
            assert client.get(url.replace("/readme.txt", f"/{renamed}")).status_code == 404
    finally:
        default_storage.delete(name)


def test_a_storage_link_expires(client: Client, settings: SettingsWrapper) -> None:
    from django.core.files.storage import storages

    from files_app.storage import LargeObjectStorage

    storage = storages["default"]
    assert isinstance(storage, LargeObjectStorage)
    name = storage.save("soon.txt", ContentFile(b"for a while"))
    try:
        assert _body(client.get(storage.url(name, expire=60))) == b"for a while"
        expired = client.get(storage.url(name, expire=timedelta(seconds=-1)))
        assert expired.status_code == 410
        assert b"expired" in expired.content
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "files_app.storage.LargeObjectStorage",
                "OPTIONS": {"url_expire": 0},
            },
        }
        from django.core.files.storage import default_storage as configured

        assert client.get(configured.url(name)).status_code == 410  # the storage's default
    finally:
        default_storage.delete(name)


@pytest.mark.parametrize("name", ["manuals/legacy.pdf", "docs/999999/nope.txt", "", "x/y/z"])
def test_a_storage_url_never_raises_and_a_missing_file_is_404(client: Client, name: str) -> None:
    """Like other storages' url(): a well-formed name always gets a URL (a legacy name, one
    whose object is gone, one of no object at all), and the view says 404."""
    url = default_storage.url(name)
    assert client.get(url).status_code == 404


@pytest.fixture
def second_database() -> Iterator[str]:
    """A second PostgreSQL database, on the same server, as the alias ``"second"``."""
    from django.db import connections
    from django.db.utils import load_backend

    alias = "second"
    base = connections["default"].settings_dict
    name = f"{base['NAME']}_second"
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
        cursor.execute(f"CREATE DATABASE {quoted}")
    # A connection made at run time, as a project may add one (and Django's test case
    # allows those): the alias is in ``connections``, not in the settings of this suite.
    wrapper = load_backend(base["ENGINE"]).DatabaseWrapper({**base, "NAME": name}, alias)
    connections[alias] = wrapper
    try:
        yield alias
    finally:
        wrapper.close()
        del connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")


def test_a_storage_link_of_another_database_downloads(
    client: Client, second_database: str
) -> None:
    from files_app.storage import LargeObjectStorage

    storage = LargeObjectStorage(using=second_database)
    data = b"kept in the second database"
    name = storage.save("manuals/guide.txt", ContentFile(data))
    url = storage.url(name)
    response = client.get(url)
    assert (response.status_code, _body(response)) == (200, data)
    partial = client.get(url, headers={"Range": "bytes=8-13"})
    assert (partial.status_code, _body(partial)) == (206, data[8:14])
    # The same name in the default database is another object, or none: never served.
    assert client.get(default_storage.url(name)).status_code == 404


def test_storage_url_of_a_deleted_object_is_404(client: Client) -> None:
    name = default_storage.save("t.txt", ContentFile(b"x"))
    url = default_storage.url(name)
    default_storage.delete(name)
    assert client.get(url).status_code == 404


def test_gzip_middleware_leaves_partial_responses_and_etag_alone(
    store: Callable[..., StoredFile], client: Client, settings: SettingsWrapper
) -> None:
    assert settings.MIDDLEWARE[0] == "django.middleware.gzip.GZipMiddleware"
    data = b"compressible " * 2000
    url = store(data, "text.txt", content_type="text/plain").get_absolute_url()
    full = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in full.headers
    assert full["ETag"].startswith('"')
    resumed = client.get(
        url,
        headers={"Accept-Encoding": "gzip", "Range": "bytes=100-", "If-Range": full["ETag"]},
    )
    assert resumed.status_code == 206
    assert "Content-Encoding" not in resumed.headers
    assert _body(resumed) == data[100:]


# --- Streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("range_header", [None, "bytes=100-8999", "bytes=0-2999,6000-9999"])
def test_body_is_streamed_lazily_in_chunks_of_the_chunk_size(
    range_header: str | None,
    store: Callable[..., StoredFile],
    client: Client,
    settings: SettingsWrapper,
) -> None:
    # Regression guard: the body must come out piece by piece, never as one bytes object of
    # the whole file (docs/design.md, "Constant memory").
    settings.FILES_APP_CHUNK_SIZE = 1000
    data = content(10000)
    url = store(data, "data.bin").get_absolute_url()
    headers = {"Range": range_header} if range_header else {}
    response = client.get(url, headers=headers)
    assert isinstance(response, StreamingHttpResponse)
    chunks = list(response.streaming_content)
    data_chunks = [c for c in chunks if not c.startswith(b"--") and c != b"\r\n"]
    assert len(data_chunks) >= 5
    assert all(len(chunk) <= 1000 for chunk in data_chunks)
    assert sum(map(len, chunks)) == int(response["Content-Length"])


def test_asgi_body_is_an_async_iterator(store: Callable[..., StoredFile]) -> None:
    # Regression guard: under ASGI, Django reads a sync iterator whole into memory before
    # sending it (docs/design.md, "HTTP").
    url = store(content(10000), "data.bin").get_absolute_url()

    async def fetch() -> tuple[bool, bytes]:
        response = await AsyncClient().get(url, headers={"Range": "bytes=0-99,5000-5099"})
        assert isinstance(response, StreamingHttpResponse)
        body = b"".join([chunk async for chunk in response])
        await largeobjects_async.close_pools()
        return response.is_async, body

    is_async, body = async_to_sync(fetch)()
    assert is_async
    assert len(body) > 200


def test_asgi_body_reads_on_the_event_loop(
    store: Callable[..., StoredFile], settings: SettingsWrapper, driver: str
) -> None:
    # Issue 13: with psycopg 3 the views' body reads go through the async pool, no read is
    # handed to a thread; with psycopg2 (no async pool) they are.
    settings.FILES_APP_CHUNK_SIZE = 1000
    data = content(10000)
    url = store(data, "data.bin").get_absolute_url()
    in_threads = []
    sync_reads = largeobjects.read_pieces

    def counted(*args: Any, **kwargs: Any) -> Any:
        in_threads.append(args)
        return sync_reads(*args, **kwargs)

    async def fetch() -> bytes:
        try:
            response = await AsyncClient().get(url)
            assert isinstance(response, StreamingHttpResponse)
            return b"".join([chunk async for chunk in response])
        finally:
            await largeobjects_async.close_pools()

    with mock.patch.object(largeobjects, "read_pieces", counted):
        assert async_to_sync(fetch)() == data
    assert len(in_threads) == (0 if driver == "psycopg" else 1)


def test_body_is_read_only_when_iterated(
    store: Callable[..., StoredFile], client: Client, settings: SettingsWrapper
) -> None:
    # Regression guard for laziness: the view returns before reading any data, so an object
    # that disappears in between is noticed while streaming, not before.
    settings.FILES_APP_CHUNK_SIZE = 1000
    stored = store(content(10000), "data.bin")
    response = client.get(stored.get_absolute_url())
    assert isinstance(response, StreamingHttpResponse)
    iterator = iter(response.streaming_content)
    first = next(iterator)
    assert len(first) == 1000
    oid = stored.file.oid
    assert oid is not None
    largeobjects.unlink(oid, "default")
    with pytest.raises(FileNotFoundError):
        next(iterator)
    response.close()


@pytest.mark.django_db(transaction=True)
def test_if_range_with_the_old_date_after_a_replacement_sends_the_whole_new_file() -> None:
    # Regression: Last-Modified came from "created", which a replacement keeps, so a resume
    # with If-Range: <old date> got a 206 of the new file spliced onto the old one.
    stored = StoredFile(file=ContentFile(b"old" * 1000, name="r.bin"), public=True)
    stored.save()
    client = Client()
    first = client.get(stored.get_absolute_url())
    old_date = first.headers["Last-Modified"]
    b"".join(first.streaming_content)  # type: ignore[attr-defined]
    time.sleep(1.1)  # HTTP dates have one-second resolution
    stored = StoredFile.objects.get(pk=stored.pk)
    stored.file = ContentFile(b"new" * 1000, name="r.bin")
    stored.save()
    resumed = client.get(
        stored.get_absolute_url(), headers={"Range": "bytes=100-", "If-Range": old_date}
    )
    assert resumed.status_code == 200
    assert b"".join(resumed.streaming_content) == b"new" * 1000  # type: ignore[attr-defined]
    stored.delete()


@pytest.mark.parametrize(
    ("range_header", "expected"),
    [
        ("bytes=100-199", slice(100, 200)),  # a range: the first read is the whole answer
        ("bytes=-50", slice(-50, None)),  # a suffix, resolved in SQL from the row's size
        (None, slice(None)),  # a small file, whole
    ],
)
def test_a_private_file_costs_one_query_for_the_row_and_its_bytes(
    admin_user: User, range_header: str | None, expected: slice
) -> None:
    # Issue 13: get_object() reads the object's size and the first bytes with the row.
    data = content(5000)
    stored = StoredFile(file=ContentFile(data, name="p.bin"), public=False)
    stored.save()
    client = Client()
    client.force_login(admin_user)
    headers = {"range": range_header} if range_header else {}
    with CaptureQueriesContext(connection) as queries:
        response = client.get(stored.get_absolute_url(), headers=headers)
        body = _body(response)
    assert body == data[expected]
    file_queries = [q["sql"] for q in queries if "lo_" in q["sql"] or "storedfile" in q["sql"]]
    assert len(file_queries) == 1, file_queries
    stored.delete()


def test_a_first_read_guessed_wrong_is_read_again(store: Callable[..., StoredFile]) -> None:
    data = content(5000)
    url = store(data, "d.bin").get_absolute_url()
    # The guess is the first range asked for, which is past the end: the answer is the
    # second, read after the row.
    response = Client().get(url, headers={"range": "bytes=9000-9100,10-19"})
    assert response.status_code == 206
    assert _body(response) == data[10:20]


def test_a_missing_object_is_404_without_aborting_the_transaction(
    store: Callable[..., StoredFile],
) -> None:
    stored = store(content(100), "gone.bin")
    assert stored.file.oid is not None
    largeobjects.unlink(stored.file.oid, "default")
    with transaction.atomic():
        assert Client().get(stored.get_absolute_url()).status_code == 404
        assert StoredFile.objects.filter(pk=stored.pk).exists()  # still usable


def test_a_form_shows_a_legacy_name_of_a_file_field(client: Client) -> None:
    """A row whose name is not of files_app's form (written before STORAGES changed, or by
    loaddata) renders in a form or the admin, with a link that answers 404."""
    from django import forms

    from tests.testapp.models import Photo

    photo = Photo(image="photos/1/a.png", width=1, height=1)
    photo.attachment.name = "manuals/legacy.pdf"
    form = forms.modelform_factory(Photo, fields=["attachment"])(instance=photo)
    html = form.as_p()
    assert "manuals/legacy.pdf" in html
    (link,) = re.findall(r'href="([^"]+)"', html)
    assert client.get(link).status_code == 404
