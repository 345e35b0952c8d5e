"""Versions through real servers (issue 25, point 2): minicloud with
``MINICLOUD_VERSIONS=3`` under gunicorn and uvicorn. Replacing a file through the admin's
change form keeps the earlier content; curl downloads that version, ranges and all, with
its own ETag, logged in and only then; restoring it through the admin makes it current."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.clients import Named, admin_post
from tests.reliability.conftest import OwnDatabase, minicloud_on
from tests.servers import SERVER_KINDS, Server, request

pytestmark = pytest.mark.minicloud_server

FIRST = b"the first draft\n" * 4000
SECOND = b"the second draft, longer\n" * 4000


@pytest.fixture(scope="module")
def session(own_database: OwnDatabase) -> str:
    return own_database.sessions({"editor": "superuser"})["editor"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database, {"MINICLOUD_VERSIONS": "3"}) as running:
        yield running


def test_replace_download_a_version_and_restore_it(
    server: Server, own_database: OwnDatabase, session: str, tmp_path: Path
) -> None:
    uuid = own_database.store("draft.txt", FIRST, owner="editor", content_type="text/plain")
    [(pk, owner)] = own_database.execute(
        "SELECT id, owner_id FROM files_app_storedfile WHERE uuid = %s", (uuid,)
    )
    change = f"/admin/files_app/storedfile/{pk}/change/"
    fields = {"file": Named("draft-2.txt", SECOND), "public": "on", "owner": str(owner)}
    assert admin_post(server, session, change, {**fields, "name": "", "content_type": ""}) == 302
    [(number, name, sha)] = own_database.execute(
        "SELECT number, v.name, v.sha256 FROM files_app_fileversion v "
        "JOIN files_app_storedfile f ON f.id = v.stored_file_id WHERE f.uuid = %s",
        (uuid,),
    )
    assert (number, name, sha) == (1, "draft.txt", hashlib.sha256(FIRST).hexdigest())
    current = request(server, "GET", f"/files/{uuid}/draft-2.txt")
    assert current.body == SECOND

    version = f"/files/versions/{uuid}/1/draft.txt"
    cookie = {"Cookie": f"sessionid={session}"}
    part = request(server, "GET", version, {**cookie, "Range": "bytes=100-199"})
    assert (part.status, part.body) == (206, FIRST[100:200])
    assert part.header("ETag") == f'"{sha}"' != current.header("ETag")
    assert request(server, "GET", version, {**cookie, "If-None-Match": f'"{sha}"'}).status == 304
    assert request(server, "GET", version).status == 404  # not the public's
    curl = shutil.which("curl")
    assert curl, "curl is installed with the project's test tools"
    body = tmp_path / "version"
    fetched = subprocess.run(
        [curl, "-sf", "-r", "1000-", "-H", f"Cookie: {cookie['Cookie']}", "-o", str(body)]
        + [server.base_url + version],
        capture_output=True,
        timeout=60,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert body.read_bytes() == FIRST[1000:]

    restore = f"/admin/files_app/storedfile/{pk}/versions/1/restore/"
    assert admin_post(server, session, restore, {}) == 302
    assert request(server, "GET", f"/files/{uuid}/draft.txt").body == FIRST
    [(number, name)] = own_database.execute(
        "SELECT number, v.name FROM files_app_fileversion v "
        "JOIN files_app_storedfile f ON f.id = v.stored_file_id WHERE f.uuid = %s",
        (uuid,),
    )
    assert (number, name) == (2, "draft-2.txt")
