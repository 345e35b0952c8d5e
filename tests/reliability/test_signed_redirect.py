"""FILES_APP_SIGNED_REDIRECT (issue 24, point 1): a private file's own URL answers its user
with a redirect to a signed URL, and real clients follow it with their ranges.

minicloud under gunicorn and uvicorn with ``MINICLOUD_SIGNED_REDIRECT=1``: ``curl -L -r``
and ``wget -c`` with a session cookie are sent once through the session and get their bytes
from the signed URL, which the lean path serves (its answers carry no ``Vary: Cookie``);
without the session, or as another user, the URL is a 404 as before.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import MiB, OwnDatabase, minicloud_on
from tests.servers import SERVER_KINDS, Server, request

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(24).randbytes(3 * MiB + 5)


@pytest.fixture(scope="module")
def site(own_database: OwnDatabase) -> dict[str, str]:
    sessions = own_database.sessions({"viewer": "user", "stranger": "user"})
    private = own_database.store("lecture.bin", DATA, public=False, owner="viewer")
    return {
        "path": f"/files/{private}/lecture.bin",
        "viewer": f"sessionid={sessions['viewer']}",
        "stranger": f"sessionid={sessions['stranger']}",
    }


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database, {"MINICLOUD_SIGNED_REDIRECT": "1"}) as running:
        yield running


def test_the_private_url_redirects_its_user_only(server: Server, site: dict[str, str]) -> None:
    moved = request(server, "GET", site["path"], {"Cookie": site["viewer"], "Range": "bytes=0-9"})
    assert moved.status == 302, moved.body[:300]
    location = moved.header("Location") or ""
    assert location.startswith("/files/signed/") and location.endswith("/lecture.bin")
    assert moved.header("Cache-Control") == "private, max-age=1800"
    assert "Cookie" in (moved.header("Vary") or "")
    # The signed URL is served by the lean path: no session read, so no Vary: Cookie.
    part = request(server, "GET", location, {"Range": "bytes=10-19"})
    assert (part.status, part.body) == (206, DATA[10:20])
    assert part.header("Vary") is None
    for cookie in ("", site["stranger"]):
        refused = request(server, "GET", site["path"], {"Cookie": cookie})
        assert refused.status == 404 and refused.header("Location") is None


def test_curl_follows_the_redirect_with_its_range(
    server: Server, site: dict[str, str], tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is installed with the project's test tools"
    headers, body = tmp_path / "headers", tmp_path / "body"
    ranged = subprocess.run(
        [
            *(curl, "-sfL", "-r", "1000-1999", "-H", f"Cookie: {site['viewer']}"),
            *("-D", str(headers), "-o", str(body), server.base_url + site["path"]),
        ],
        capture_output=True,
        timeout=60,
    )
    assert ranged.returncode == 0, ranged.stderr
    assert body.read_bytes() == DATA[1000:2000]
    statuses = [
        line.split()[1]
        for line in headers.read_text().splitlines()
        if " " in line and line.startswith("HTTP/")
    ]
    assert statuses == ["302", "206"], headers.read_text()


def test_wget_resumes_through_the_redirect(
    server: Server, site: dict[str, str], tmp_path: Path
) -> None:
    wget = shutil.which("wget")
    assert wget, "wget is installed with the project's test tools"
    target = tmp_path / "lecture.bin"
    target.write_bytes(DATA[:123_456])
    result = subprocess.run(
        [
            *(wget, "-c", "-S", "--header", f"Cookie: {site['viewer']}"),
            *("-O", str(target), server.base_url + site["path"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The session's request is redirected; the signed URL answers the resumed range.
    assert "HTTP/1.1 302 " in result.stderr and "HTTP/1.1 206 " in result.stderr, result.stderr
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(DATA).digest()
