"""Issue 14: several app servers behind one database. Two minicloud processes (gunicorn and
uvicorn, on their own ports) with the same DJANGO_SECRET_KEY serve the same files, sessions
and share links; a third with another key shows why the key must match.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import pytest

from tests.reliability.clients import admin_upload
from tests.reliability.conftest import MiB, OwnDatabase, share_link
from tests.servers import Server, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(5).randbytes(MiB + 99)


@pytest.fixture(scope="module")
def servers(own_database: OwnDatabase) -> Iterator[tuple[Server, Server]]:
    with (
        running_server("gunicorn", own_database.url, project="minicloud") as first,
        running_server("uvicorn", own_database.url, project="minicloud") as second,
    ):
        yield first, second
        for server in (first, second):
            server.check_alive()
            assert "Traceback" not in server.output(), server.output()


def test_two_servers_share_files_sessions_and_links(
    servers: tuple[Server, Server], own_database: OwnDatabase
) -> None:
    first, second = servers
    session = own_database.sessions({"many-admin": "superuser"})["many-admin"]
    cookie = f"sessionid={session}"
    # A session made for one is valid on the other: the admin answers both.
    for server in servers:
        assert request(server, "GET", "/admin/", {"Cookie": cookie}).status == 200
    # Uploaded through one, served by the other, private, to the same session.
    assert admin_upload(first, session, "shared.bin", DATA) == 302
    rows = own_database.execute(
        "SELECT uuid, sha256 FROM files_app_storedfile WHERE name = 'shared.bin'"
    )
    assert rows and rows[0][1] == hashlib.sha256(DATA).hexdigest()
    path = f"/files/{rows[0][0]}/shared.bin"
    reply = request(second, "GET", path, {"Cookie": cookie, "Range": "bytes=-64"})
    assert (reply.status, reply.body) == (206, DATA[-64:])
    # A share link signed by one process (its key) opens on both.
    link = share_link(own_database.url, rows[0][0], "shared.bin")
    for server in servers:
        shared = request(server, "GET", link)
        assert (shared.status, shared.body) == (200, DATA)


def test_a_server_with_another_secret_key_refuses_them(own_database: OwnDatabase) -> None:
    session = own_database.sessions({"many-other": "superuser"})["many-other"]
    file_uuid = own_database.store("secret.bin", DATA, public=False)
    link = share_link(own_database.url, file_uuid, "secret.bin")
    other = {"DJANGO_SECRET_KEY": "another-key-" + "x" * 40}
    with running_server("gunicorn", own_database.url, project="minicloud", env=other) as server:
        path = f"/files/{file_uuid}/secret.bin"
        assert request(server, "GET", path, {"Cookie": f"sessionid={session}"}).status == 404
        assert request(server, "GET", link).status == 404
        admin = request(server, "GET", "/admin/", {"Cookie": f"sessionid={session}"})
        assert admin.status == 302  # to the login page: the session is not accepted
