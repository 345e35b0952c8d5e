"""Issue 11: hostile input through real servers (hypothesis). Every header the views read,
every path segment, every admin form field and multipart bodies of every odd shape get a
clear answer below 500; whatever is refused stores nothing and orphans nothing.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import OwnDatabase
from tests.servers import SERVER_KINDS, Server, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
TOKEN = "t" * 32
HEADERS = [
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Accept-Encoding",
    "Accept",
    "Cookie",
    "Origin",
    "Referer",
    "Content-Type",
]
# Header values: any byte but CR, LF and NUL (which end or break the header block itself).
values = st.binary(max_size=300).map(lambda b: re.sub(rb"[\r\n\x00]", b"", b))
near_ranges = st.builds(
    lambda parts, sep: b"bytes=" + sep.join(parts),
    st.lists(st.from_regex(rb"[0-9 ,-]{0,12}", fullmatch=True), min_size=1, max_size=20),
    st.sampled_from([b",", b", ", b" ,", b",,"]),
)


@pytest.fixture(scope="module")
def site(own_database: OwnDatabase) -> dict[str, str]:
    public = own_database.store("a.txt", b"0123456789" * 1000, content_type="text/plain")
    session = own_database.sessions({"hostile-admin": "superuser"})["hostile-admin"]
    pk = own_database.execute("SELECT id FROM files_app_storedfile WHERE uuid = %s", (public,))
    return {
        "file": f"/files/{public}/a.txt",
        "cookie": f"sessionid={session}; csrftoken={TOKEN}",
        "change": f"/admin/files_app/storedfile/{pk[0][0]}/change/",
    }


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with running_server(request.param, own_database.url, project="minicloud") as running:
        yield running
        running.check_alive()


def _exchange(server: Server, head: bytes, body: bytes = b"") -> int:
    """Send raw bytes; return the status the server answered (0 if it just closed)."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            received += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    assert match, received[:200]
    return int(match.group(1))


def _request(
    method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _unreferenced(own_database: OwnDatabase) -> int:
    return int(
        own_database.execute(
            "SELECT count(*) FROM pg_largeobject_metadata m WHERE NOT EXISTS "
            "(SELECT 1 FROM files_app_storedfile f WHERE f.file = m.oid)"
        )[0][0]
    )


def test_any_download_header_is_never_a_500(server: Server, site: dict[str, str]) -> None:
    @FUZZ
    @given(
        st.lists(st.tuples(st.sampled_from(HEADERS), st.one_of(values, near_ranges)), max_size=6),
        st.sampled_from([b"GET", b"HEAD", b"OPTIONS", b"POST", b"PUT", b"DELETE", b"PATCH"]),
    )
    def check(headers: list[tuple[str, bytes]], method: bytes) -> None:
        request = _request(method, site["file"].encode(), [(n.encode(), v) for n, v in headers])
        status = _exchange(server, request)
        assert 0 < status < 500, (headers, method, status)

    check()


def test_any_path_is_never_a_500(server: Server) -> None:
    segment = st.binary(max_size=60).map(lambda b: quote_from_bytes(b, safe="").encode())

    @FUZZ
    @given(
        st.sampled_from([b"/files/", b"/files/lo/", b"/files/share/", b"/admin/", b"/public/"]),
        st.lists(segment, min_size=0, max_size=4),
    )
    def check(prefix: bytes, segments: list[bytes]) -> None:
        status = _exchange(server, _request(b"GET", prefix + b"/".join(segments), []))
        assert 0 < status < 500, (prefix, segments, status)

    check()


def test_any_change_form_is_never_a_500(
    server: Server, site: dict[str, str], own_database: OwnDatabase
) -> None:
    field_value = st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))

    odd_types = st.sampled_from(
        [b"text/plain\r\nX-Injected: 1", b"text/html ; charset=utf-8", b"a/b\nc", b"\x7f/\x01"]
    )

    @FUZZ
    @given(field_value, st.one_of(odd_types, field_value), field_value, field_value)
    def check(name: bytes, content_type: bytes, public: bytes, owner: bytes) -> None:
        body = b"&".join(
            key + b"=" + quote_from_bytes(value).encode()
            for key, value in (
                (b"csrfmiddlewaretoken", TOKEN.encode()),
                (b"name", name),
                (b"content_type", content_type),
                (b"public", public),
                (b"owner", owner),
            )
        )
        headers = [
            (b"Cookie", site["cookie"].encode()),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ]
        status = _exchange(server, _request(b"POST", site["change"].encode(), headers, body), body)
        assert 0 < status < 500, (name, content_type, public, owner, status)
        # And the file is still served, whatever was saved.
        status = _exchange(server, _request(b"GET", site["file"].encode(), []))
        assert status in (200, 404), (name, content_type, public, owner, status)

    before = _unreferenced(own_database)
    check()
    assert _unreferenced(own_database) == before
    # Whatever was accepted, the row is still one the view serves.
    served = own_database.execute(
        "SELECT content_type FROM files_app_storedfile WHERE id = %s",
        (int(site["change"].split("/")[-3]),),
    )
    assert "\n" not in served[0][0] and "\r" not in served[0][0]


def _part(headers: bytes, data: bytes) -> bytes:
    return headers + b"\r\n\r\n" + data


def test_any_multipart_upload_is_never_a_500_and_orphans_nothing(
    server: Server, site: dict[str, str], own_database: OwnDatabase
) -> None:
    boundary = b"fuzzboundary"
    filename = st.binary(max_size=40).map(lambda b: re.sub(rb'[\r\n"]', b"", b))
    part_type = st.one_of(values, st.just(b"text/html ; charset=utf-8"), st.just(b"image/svg+xml"))

    @FUZZ
    @given(
        filename,
        part_type,
        st.binary(max_size=3000),
        st.integers(0, 4),  # how the body ends: whole, cut, no closing, garbage, doubled
        st.booleans(),
    )
    def check(name: bytes, ctype: bytes, data: bytes, ending: int, with_token: bool) -> None:
        parts = []
        if with_token:
            parts.append(
                _part(b'Content-Disposition: form-data; name="csrfmiddlewaretoken"', b"t" * 32)
            )
        parts.append(
            _part(
                b'Content-Disposition: form-data; name="file"; filename="'
                + name
                + b'"\r\nContent-Type: '
                + ctype,
                data,
            )
        )
        body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
        body += [
            b"--" + boundary + b"--\r\n",
            b"",
            b"--" + boundary,
            b"garbage",
            b"--" + boundary + b"--\r\n--" + boundary + b"--\r\n",
        ][ending]
        if ending == 1:
            body = body[: len(body) // 2]
        headers = [
            (b"Cookie", site["cookie"].encode()),
            (b"Content-Type", b"multipart/form-data; boundary=" + boundary),
        ]
        status = _exchange(
            server, _request(b"POST", b"/admin/files_app/storedfile/add/", headers, body), body
        )
        assert 0 < status < 500, (name, ctype, ending, status)

    before_rows = own_database.execute("SELECT count(*) FROM files_app_storedfile")[0][0]
    before = _unreferenced(own_database)
    check()
    assert _unreferenced(own_database) == before
    # Every stored row is true to its object.
    rows = own_database.execute(
        "SELECT count(*) FROM files_app_storedfile WHERE size <> octet_length(lo_get(file))"
    )
    assert rows == [(0,)]
    added = own_database.execute("SELECT count(*) FROM files_app_storedfile")[0][0] - before_rows
    print(f"{added} fuzzed uploads were stored")


def test_a_body_of_unknown_length_is_answered_before_it_ends(
    server: Server, site: dict[str, str]
) -> None:
    """A chunked body that never ends: under gunicorn Django never reads it (no
    Content-Length, an empty body), under uvicorn files_app.asgi answers 411 before
    reading it — Django's own ASGI handler would spool all of it to a temporary file."""
    head = _request(
        b"POST",
        b"/admin/files_app/storedfile/add/",
        [
            (b"Cookie", site["cookie"].encode()),
            (b"Content-Type", b"multipart/form-data; boundary=x"),
            (b"Transfer-Encoding", b"chunked"),
        ],
    )
    status = _exchange(server, head, b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
    if server.kind == "uvicorn":
        assert status == 411
    else:
        assert status == 403  # CSRF: the form Django saw is empty
