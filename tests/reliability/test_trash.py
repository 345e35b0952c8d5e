"""The trash through real servers (issue 25, point 1): minicloud with
``MINICLOUD_TRASH_DAYS=30`` under gunicorn and uvicorn. A file in the trash answers 404 at
its own URL, by a share link and by a signed URL — the lean path's compiled rule and the
views alike — and downloads again, ranges and all, once restored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings

from files_app.sharing import SignedGrant, make_share_url, make_signed_url
from tests.reliability.conftest import OwnDatabase, minicloud_on
from tests.servers import MINICLOUD_ENV, SERVER_KINDS, Server, request

pytestmark = pytest.mark.minicloud_server

DATA = b"in and out of the trash\n" * 500


@pytest.fixture(scope="module")
def site(own_database: OwnDatabase) -> dict[str, str]:
    sessions = own_database.sessions({"keeper": "user"})
    public = own_database.store("public.txt", DATA, owner="keeper")
    private = own_database.store("private.txt", DATA, public=False, owner="keeper")
    [(owner_id, sha)] = own_database.execute(
        "SELECT owner_id::text, sha256 FROM files_app_storedfile WHERE uuid = %s", (private,)
    )
    with override_settings(SECRET_KEY=MINICLOUD_ENV["DJANGO_SECRET_KEY"]):
        share = make_share_url(uuid.UUID(private), "private.txt", timedelta(hours=1))
        grant = SignedGrant(uuid.UUID(private), sha, "private.txt", owner_id, False, 2**40)
        signed = make_signed_url(grant)
    return {
        "public": public,
        "private": private,
        "cookie": f"sessionid={sessions['keeper']}",
        "urls": "\n".join(
            [f"/files/{public}/public.txt", f"/files/{private}/private.txt", share, signed]
        ),
    }


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with minicloud_on(request.param, own_database, {"MINICLOUD_TRASH_DAYS": "30"}) as running:
        yield running


def _statuses(server: Server, site: dict[str, str]) -> list[int]:
    headers = {"Cookie": site["cookie"], "Range": "bytes=10-19"}
    replies = [request(server, "GET", url, headers) for url in site["urls"].split("\n")]
    for reply in replies:
        assert reply.status != 206 or reply.body == DATA[10:20]
    return [reply.status for reply in replies]


def test_a_trashed_file_answers_404_by_every_url_until_restored(
    server: Server, own_database: OwnDatabase, site: dict[str, str]
) -> None:
    assert _statuses(server, site) == [206, 206, 206, 206]
    own_database.execute(
        "UPDATE files_app_storedfile SET trashed = now() WHERE uuid IN (%s, %s)",
        (site["public"], site["private"]),
    )
    try:
        assert _statuses(server, site) == [404, 404, 404, 404]
    finally:
        own_database.execute(
            "UPDATE files_app_storedfile SET trashed = NULL WHERE uuid IN (%s, %s)",
            (site["public"], site["private"]),
        )
    assert _statuses(server, site) == [206, 206, 206, 206]
