"""Issue 11: who may do what, asked of minicloud on real servers as each kind of user.

Every URL as anonymous, the owner, another user, staff without permissions and a superuser;
signed and share links tampered with, truncated and expired; CSRF on every unsafe method;
names that try to be HTML are escaped everywhere; stored HTML and SVG never run in the
site's origin.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings

from files_app.sharing import make_share_url
from files_app.storage import LargeObjectStorage
from tests.reliability.clients import Download, download
from tests.reliability.conftest import OwnDatabase
from tests.servers import MINICLOUD_ENV, SERVER_KINDS, Server, running_server

pytestmark = pytest.mark.minicloud_server

ROLES = {
    "anonymous": None,
    "owner": "user",
    "other": "user",
    "staff": "staff",
    "superuser": "superuser",
}
EVIL_NAME = "<img src=x onerror=alert(1)>\"'.html"
HTML_PAYLOAD = b"<script>document.title='pwned'</script>"
SVG_PAYLOAD = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


@pytest.fixture(scope="module")
def site(own_database: OwnDatabase) -> dict[str, str]:
    """Users with sessions, and the files and links the tests ask for."""
    sessions = own_database.sessions({name: role for name, role in ROLES.items() if role})
    public = own_database.store("public.txt", b"for everyone", content_type="text/plain")
    private = own_database.store(
        "private.txt", b"for the owner", public=False, owner="owner", content_type="text/plain"
    )
    evil = own_database.store(
        EVIL_NAME, HTML_PAYLOAD, public=True, owner="owner", content_type="text/html"
    )
    svg = own_database.store("drawing.svg", SVG_PAYLOAD, content_type="image/svg+xml")
    oid = own_database.execute("SELECT file FROM files_app_storedfile WHERE uuid = %s", (private,))
    with override_settings(SECRET_KEY=MINICLOUD_ENV["DJANGO_SECRET_KEY"]):
        share = make_share_url(uuid.UUID(private), "private.txt", timedelta(hours=1))
        expired = make_share_url(uuid.UUID(private), "private.txt", timedelta(seconds=-10))
        signed = LargeObjectStorage().url(f"{oid[0][0]}/private.txt")
    with override_settings(SECRET_KEY="another-key-entirely-" + "x" * 40):
        foreign = make_share_url(uuid.UUID(private), "private.txt", timedelta(hours=1))
    return {
        **{f"session:{name}": key for name, key in sessions.items()},
        "public": f"/files/{public}/public.txt",
        "private": f"/files/{private}/private.txt",
        "private_uuid": private,
        "evil": f"/files/{evil}/x.html",
        "evil_uuid": evil,
        "svg": f"/files/{svg}/drawing.svg",
        "share": share,
        "expired": expired,
        "foreign": foreign,
        "signed": signed,
    }


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, own_database: OwnDatabase) -> Iterator[Server]:
    with running_server(request.param, own_database.url, project="minicloud") as running:
        yield running
        running.check_alive()


def _as(site: dict[str, str], role: str, **headers: str) -> dict[str, str]:
    cookie = f"csrftoken={'c' * 32}"
    if ROLES[role]:
        cookie += f"; sessionid={site[f'session:{role}']}"
    return {"Cookie": cookie, **headers}


def _get(server: Server, site: dict[str, str], role: str, path: str) -> Download:
    return download(server, path, _as(site, role))


EXPECTED_DOWNLOADS = {
    # url key: status per role (anonymous, owner, other, staff, superuser)
    "public": (200, 200, 200, 200, 200),
    "private": (404, 200, 404, 404, 200),
    "share": (200, 200, 200, 200, 200),
    "signed": (200, 200, 200, 200, 200),
    "expired": (410, 410, 410, 410, 410),
    "foreign": (404, 404, 404, 404, 404),
}


@pytest.mark.parametrize("key", EXPECTED_DOWNLOADS)
def test_downloads_by_role(server: Server, site: dict[str, str], key: str) -> None:
    for role, expected in zip(ROLES, EXPECTED_DOWNLOADS[key], strict=True):
        reply = _get(server, site, role, site[key])
        assert reply.status == expected, (key, role, reply.status, reply.body[:200])
        if expected == 200:
            assert reply.complete and reply.body.startswith(b"for ")


def _tampered(path: str) -> list[str]:
    prefix, token, name = path.rsplit("/", 2)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    return [
        f"{prefix}/{flipped}/{name}",
        f"{prefix}/{token[: len(token) // 2]}/{name}",
        f"{prefix}/{token[:-1]}/{name}",
        f"{prefix}/{token}x/{name}",
        f"{prefix}/%00{token}/{name}",
        f"{prefix}/{'A' * 3000}/{name}",  # (gunicorn answers 414 from 4094 bytes on)
    ]


@pytest.mark.parametrize("key", ["share", "signed"])
def test_tampered_and_truncated_links_are_404(
    server: Server, site: dict[str, str], key: str
) -> None:
    for path in _tampered(site[key]):
        reply = _get(server, site, "anonymous", path)
        assert reply.status == 404, (path, reply.status)
        assert b"for the owner" not in reply.body


ADMIN_PAGES = (
    "/admin/files_app/storedfile/",
    "/admin/files_app/storedfile/add/",
    "/admin/files_app/storedfile/{pk}/change/",
    "/admin/files_app/storedfile/{pk}/delete/",
    "/admin/auth/user/",
)


def _pk(own_database: OwnDatabase, file_uuid: str) -> int:
    return int(
        own_database.execute("SELECT id FROM files_app_storedfile WHERE uuid = %s", (file_uuid,))[
            0
        ][0]
    )


def test_admin_pages_by_role(
    server: Server, site: dict[str, str], own_database: OwnDatabase
) -> None:
    pk = _pk(own_database, site["private_uuid"])
    expected = {"anonymous": 302, "owner": 302, "other": 302, "staff": 403, "superuser": 200}
    for page in ADMIN_PAGES:
        path = page.format(pk=pk)
        for role, status in expected.items():
            reply = _get(server, site, role, path)
            assert reply.status == status, (path, role, reply.status)
            if status == 302:
                assert reply.headers["location"].startswith("/admin/login/")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_methods_on_downloads_are_405(
    server: Server, site: dict[str, str], method: str
) -> None:
    for key in ("public", "private", "share", "signed"):
        for role in ("anonymous", "superuser"):
            reply = download(server, site[key], _as(site, role), method=method)
            assert reply.status == 405, (key, role, method, reply.status)
            assert set(reply.headers["allow"].replace(" ", "").split(",")) == {
                "GET",
                "HEAD",
                "OPTIONS",
            }


def test_admin_posts_without_a_csrf_token_are_403(
    server: Server, site: dict[str, str], own_database: OwnDatabase
) -> None:
    pk = _pk(own_database, site["private_uuid"])
    body = b"name=changed&content_type=text%2Fplain&post=yes&action=make_public&_selected_action="
    for path in (
        "/admin/files_app/storedfile/add/",
        f"/admin/files_app/storedfile/{pk}/change/",
        f"/admin/files_app/storedfile/{pk}/delete/",
        "/admin/files_app/storedfile/",
        "/admin/logout/",
        "/admin/password_change/",
    ):
        headers = _as(site, "superuser", **{"Content-Type": "application/x-www-form-urlencoded"})
        reply = _post(server, path, body + str(pk).encode(), headers)
        assert reply.status == 403, (path, reply.status)
    name = own_database.execute(
        "SELECT name, public FROM files_app_storedfile WHERE id = %s", (pk,)
    )
    assert name == [("private.txt", False)]


def _post(server: Server, path: str, body: bytes, headers: dict[str, str]) -> Download:
    conn = server.connection()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return Download(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
            True,
        )
    finally:
        conn.close()


def test_names_that_try_to_be_html_are_escaped_everywhere(
    server: Server, site: dict[str, str], own_database: OwnDatabase
) -> None:
    pk = _pk(own_database, site["evil_uuid"])
    pages = [
        ("anonymous", "/public/"),
        ("superuser", "/admin/files_app/storedfile/"),
        ("superuser", f"/admin/files_app/storedfile/{pk}/change/"),
        ("superuser", f"/admin/files_app/storedfile/{pk}/delete/"),
        ("superuser", "/admin/files_app/storedfile/?q=%3Cimg"),
    ]
    for role, path in pages:
        reply = _get(server, site, role, path)
        assert reply.status == 200, path
        assert b"<img src=x" not in reply.body, path
        assert html.escape("<img src=x").encode() in reply.body, path
    # The download names it safely too: no quote or CR/LF breaks out of the header.
    served = _get(server, site, "anonymous", site["evil"])
    disposition = served.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert disposition.count('"') - disposition.count('\\"') == 2


@pytest.mark.parametrize("key", ["evil", "svg"])
def test_stored_html_and_svg_never_run_in_the_sites_origin(
    server: Server, site: dict[str, str], key: str
) -> None:
    for headers in ({}, {"Range": "bytes=0-"}, {"Accept": "text/html"}):
        reply = download(server, site[key], headers)
        assert reply.status in (200, 206)
        assert reply.headers["content-disposition"].startswith("attachment;")
        assert reply.headers["content-security-policy"] == "sandbox"
        assert reply.headers["x-content-type-options"] == "nosniff"
