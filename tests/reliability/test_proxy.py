"""Issue 14: minicloud behind nginx with the shipped caching configuration
(deploy/nginx/minicloud.conf): public files are served from nginx's cache, byte-exact,
ranges and seeks included; private files, share links and the admin are never cached; a
file made private or deleted stops being served once its max-age has passed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from tests.nginx import Nginx, running_nginx
from tests.reliability.conftest import MiB, OwnDatabase, share_link
from tests.servers import Reply, Server, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(3).randbytes(3 * MiB + 12345)
MAX_AGE = 2  # MINICLOUD_PUBLIC_MAX_AGE: seconds a cache may keep a public file


@pytest.fixture(scope="module")
def app(own_database: OwnDatabase) -> Iterator[Server]:
    env = {"MINICLOUD_PUBLIC_MAX_AGE": str(MAX_AGE)}
    with running_server("gunicorn", own_database.url, project="minicloud", env=env) as running:
        yield running
        running.check_alive()


@pytest.fixture(scope="module")
def proxy(app: Server) -> Iterator[Nginx]:
    with running_nginx(app.port) as running:
        yield running


def _headers(reply: Reply) -> dict[str, str]:
    return {name.lower(): value for name, value in reply.headers}


def _cache(reply: Reply) -> str:
    return _headers(reply).get("x-cache-status", "")


def test_ranges_through_the_cache_are_byte_exact(proxy: Nginx, own_database: OwnDatabase) -> None:
    path = f"/files/{own_database.store('cached.bin', DATA)}/cached.bin"
    whole = request(proxy, "GET", path)
    assert (whole.status, whole.body) == (200, DATA)
    assert _headers(whole)["cache-control"] == f"public, max-age={MAX_AGE}"
    cases = {
        "bytes=0-0": DATA[:1],
        "bytes=100-199": DATA[100:200],
        f"bytes={MiB - 10}-{MiB + 9}": DATA[MiB - 10 : MiB + 10],  # across two slices
        "bytes=-1000": DATA[-1000:],
        f"bytes={2 * MiB}-": DATA[2 * MiB :],
    }
    for value, expected in cases.items():
        first = request(proxy, "GET", path, {"Range": value})
        again = request(proxy, "GET", path, {"Range": value})
        assert (first.status, first.body) == (206, expected), value
        assert (again.status, again.body) == (206, expected), value
        assert _cache(again) == "HIT", (value, again.headers)
    # A seek into a file nginx has not seen fetches only the slice it needs.
    fresh = f"/files/{own_database.store('seek.bin', DATA)}/seek.bin"
    seek = request(proxy, "GET", fresh, {"Range": f"bytes={3 * MiB}-{3 * MiB + 99}"})
    assert (seek.status, seek.body) == (206, DATA[3 * MiB : 3 * MiB + 100])
    assert _cache(seek) == "MISS"
    assert _cache(request(proxy, "GET", fresh, {"Range": "bytes=0-99"})) == "MISS"


def test_private_files_share_links_and_the_admin_are_never_cached(
    proxy: Nginx, own_database: OwnDatabase
) -> None:
    session = own_database.sessions({"proxy-admin": "superuser"})["proxy-admin"]
    cookie = {"Cookie": f"sessionid={session}"}
    file_uuid = own_database.store("private.bin", DATA, public=False)
    path = f"/files/{file_uuid}/private.bin"
    for _ in range(2):
        mine = request(proxy, "GET", path, {**cookie, "Range": "bytes=0-99"})
        assert (mine.status, mine.body) == (206, DATA[:100])
        assert _headers(mine)["cache-control"] == "private, no-cache"
        assert _cache(mine) != "HIT"
    # Had it been cached, this would be its bytes: it is the app's 404.
    assert request(proxy, "GET", path, {"Range": "bytes=0-99"}).status == 404

    link = share_link(own_database.url, file_uuid, "private.bin")
    for _ in range(2):
        shared = request(proxy, "GET", link, {"Range": "bytes=-10"})
        assert (shared.status, shared.body) == (206, DATA[-10:])
        assert _headers(shared)["cache-control"] == "private, no-cache"
        assert "x-cache-status" not in _headers(shared)  # not even looked up
    admin = request(proxy, "GET", "/admin/files_app/storedfile/", cookie)
    assert admin.status == 200
    assert "no-store" in _headers(admin)["cache-control"]


@pytest.mark.parametrize("change", ["made private", "deleted"])
def test_a_changed_file_stops_being_served_after_its_max_age(
    proxy: Nginx, own_database: OwnDatabase, change: str
) -> None:
    file_uuid = own_database.store(f"{change}.bin", DATA)
    path = f"/files/{file_uuid}/{change.replace(' ', '%20')}.bin"
    request(proxy, "GET", path, {"Range": "bytes=0-99"})
    assert _cache(request(proxy, "GET", path, {"Range": "bytes=0-99"})) == "HIT"
    if change == "made private":
        own_database.execute(
            "UPDATE files_app_storedfile SET public = false WHERE uuid = %s", (file_uuid,)
        )
    else:
        own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (file_uuid,))
    changed_at = time.monotonic()
    while request(proxy, "GET", path, {"Range": "bytes=0-99"}).status == 206:
        assert time.monotonic() - changed_at < MAX_AGE + 2, "still served after its max-age"
        time.sleep(0.2)
    assert request(proxy, "GET", path).status == 404
