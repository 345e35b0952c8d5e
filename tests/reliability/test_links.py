"""Managed share links through real servers (issue 25, point 3): minicloud under gunicorn
and uvicorn, two workers each. A link with a download limit serves that many downloads
(curl, wget) and the seeks and resumes of each, whoever asks at once; revoked, it is
refused on the next request by every worker."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.conftest import OwnDatabase, minicloud_on
from tests.servers import SERVER_KINDS, Server, request

pytestmark = pytest.mark.minicloud_server

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(scope="module")
def file_id(own_database: OwnDatabase) -> int:
    uuid = own_database.store("lecture.bin", DATA, public=False)
    [(pk,)] = own_database.execute("SELECT id FROM files_app_storedfile WHERE uuid = %s", (uuid,))
    return int(pk)


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database, {"MINICLOUD_WORKERS": "2"}) as running:
        yield running


def _link(own_database: OwnDatabase, file_id: int, limit: int | None) -> str:
    token = secrets.token_urlsafe(16)
    own_database.execute(
        "INSERT INTO files_app_sharelink (token, stored_file_id, label, created, "
        "max_downloads, downloads) VALUES (%s, %s, '', now(), %s, 0)",
        (token, file_id, limit),
    )
    return f"/files/links/{token}/lecture.bin"


def _downloads(own_database: OwnDatabase, url: str) -> int:
    token = url.split("/")[3]
    [(count,)] = own_database.execute(
        "SELECT downloads FROM files_app_sharelink WHERE token = %s", (token,)
    )
    return int(count)


def test_a_limited_link_serves_its_downloads_to_curl_and_wget(
    server: Server, own_database: OwnDatabase, file_id: int, tmp_path: Path
) -> None:
    url = _link(own_database, file_id, 2)
    curl, wget = shutil.which("curl"), shutil.which("wget")
    assert curl and wget, "curl and wget are installed with the project's test tools"
    whole = tmp_path / "whole"
    got = subprocess.run([curl, "-sf", "-o", str(whole), server.base_url + url], timeout=60)
    assert got.returncode == 0 and whole.read_bytes() == DATA
    # wget resumes a cut download: its resume is the same download, not a new one.
    partial = tmp_path / "partial"
    partial.write_bytes(DATA[:300_000])
    resumed = subprocess.run(
        [wget, "-q", "-c", "-O", str(partial), server.base_url + url], timeout=60
    )
    assert resumed.returncode == 0 and partial.read_bytes() == DATA
    assert _downloads(own_database, url) == 1
    # A player: its first range is the second download, its seeks count nothing.
    assert request(server, "GET", url, {"Range": "bytes=0-1023"}).status == 206
    for start in (500_000, 900_000, 10):
        seek = request(server, "GET", url, {"Range": f"bytes={start}-{start + 99}"})
        assert (seek.status, seek.body) == (206, DATA[start : start + 100])
    assert _downloads(own_database, url) == 2
    used_up = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", server.base_url + url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert used_up.stdout == "410"
    # The downloads it counted may still seek (FILES_APP_LINK_RESUME, an hour).
    assert request(server, "GET", url, {"Range": "bytes=100-199"}).status == 206


def test_concurrent_downloads_never_pass_the_limit(
    server: Server, own_database: OwnDatabase, file_id: int
) -> None:
    url = _link(own_database, file_id, 3)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: request(server, "GET", url).status, range(12)))
    assert sorted(statuses) == [200] * 3 + [410] * 9
    assert _downloads(own_database, url) == 3


def test_a_revoked_link_is_refused_by_every_worker_at_once(
    server: Server, own_database: OwnDatabase, file_id: int
) -> None:
    url = _link(own_database, file_id, None)
    ranged = {"Range": "bytes=10-19"}
    # Several connections at once, to the two workers; ranges: the lean path answers.
    with ThreadPoolExecutor(4) as pool:
        before = list(pool.map(lambda _: request(server, "GET", url, ranged), range(8)))
    assert {(reply.status, reply.body) for reply in before} == {(206, DATA[10:20])}
    own_database.execute(
        "UPDATE files_app_sharelink SET revoked = now() WHERE token = %s", (url.split("/")[3],)
    )
    with ThreadPoolExecutor(4) as pool:
        after = list(pool.map(lambda _: request(server, "GET", url, ranged), range(8)))
    assert {(reply.status, reply.body) for reply in after} == {(410, b"This link was revoked.\n")}
