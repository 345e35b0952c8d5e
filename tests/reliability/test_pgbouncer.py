"""Issue 14: minicloud behind Debian's PgBouncer in transaction mode (MINICLOUD_PGBOUNCER=1),
as docs/deployment.md, "Scaling out" deploys it: downloads, ranges, admin uploads, share links, the
storage API and every management command, under gunicorn and uvicorn, with fewer server
connections in PgBouncer's pool than clients.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pgbouncer import PgBouncer, running_pgbouncer
from tests.reliability.clients import admin_upload
from tests.reliability.conftest import MiB, OwnDatabase, manage, share_link
from tests.servers import SERVER_KINDS, Server, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(14).randbytes(3 * MiB + 12345)
BEHIND = {"MINICLOUD_PGBOUNCER": "1"}


@pytest.fixture(scope="module")
def bouncer(own_database: OwnDatabase) -> Iterator[PgBouncer]:
    with running_pgbouncer(own_database.url, pool_size=3) as running:
        yield running


@pytest.fixture(scope="module")
def url(own_database: OwnDatabase, bouncer: PgBouncer) -> str:
    """minicloud's database, through PgBouncer."""
    return bouncer.url(own_database.url)


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, url: str) -> Iterator[Server]:
    with running_server(request.param, url, project="minicloud", env=BEHIND) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


@pytest.fixture(scope="module")
def stored(own_database: OwnDatabase) -> dict[str, str]:
    public = own_database.store("public.bin", DATA)
    private = own_database.store("private.bin", DATA, public=False)
    return {"public": f"/files/{public}/public.bin", "private": private}


def _transactions(bouncer: PgBouncer) -> int:
    """Transactions PgBouncer has passed on to minicloud's database so far."""
    for row in bouncer.show("STATS"):
        if row[0] == "minicloud":
            return int(row[1])  # total_xact_count
    return 0


def _concurrent_ranges(server: Server, path: str, count: int) -> bool:
    """Ask for ``count`` random 64 KiB ranges of ``path`` from 12 clients at once; return
    whether every answer was right."""

    def ranged(offset: int) -> bool:
        reply = request(server, "GET", path, {"Range": f"bytes={offset}-{offset + 65535}"})
        return reply.status == 206 and reply.body == DATA[offset : offset + 65536]

    offsets = [random.Random(i).randrange(len(DATA) - 65536) for i in range(count)]
    with ThreadPoolExecutor(12) as pool:
        return all(pool.map(ranged, offsets))


def _manage(url: str, *args: str) -> str:
    result = manage(url, *args, env=BEHIND)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_downloads_and_ranges(server: Server, stored: dict[str, str], bouncer: PgBouncer) -> None:
    path = stored["public"]
    before = _transactions(bouncer)
    whole = request(server, "GET", path)
    assert whole.status == 200 and whole.body == DATA
    etag = {name.lower(): value for name, value in whole.headers}["etag"]
    cases = {
        "bytes=100-199": DATA[100:200],
        "bytes=-10": DATA[-10:],
        f"bytes={MiB - 5}-": DATA[MiB - 5 :],  # across chunks, read after the first
    }
    for value, expected in cases.items():
        reply = request(server, "GET", path, {"Range": value})
        assert (reply.status, reply.body) == (206, expected), value
    multi = request(server, "GET", path, {"Range": "bytes=0-9,2000000-2000009"})
    assert multi.status == 206 and DATA[:10] in multi.body and DATA[2000000:2000010] in multi.body
    assert request(server, "GET", path, {"If-None-Match": etag}).status == 304
    assert request(server, "HEAD", path).status == 200
    assert _transactions(bouncer) > before  # the requests went through PgBouncer

    # More clients than PgBouncer has server connections (3): each range is its own
    # transaction, so they share them.
    assert _concurrent_ranges(server, path, 48)


def test_admin_upload_private_download_and_share_link(
    server: Server, own_database: OwnDatabase, url: str
) -> None:
    session = own_database.sessions({"bouncer-admin": "superuser"})["bouncer-admin"]
    cookie = f"sessionid={session}"
    name = f"upload-{server.kind}.bin"
    assert admin_upload(server, session, name, DATA) == 302
    rows = own_database.execute(
        "SELECT uuid, sha256, public FROM files_app_storedfile WHERE name = %s", (name,)
    )
    assert len(rows) == 1 and rows[0][1] == hashlib.sha256(DATA).hexdigest()
    file_uuid = rows[0][0]
    assert not rows[0][2]  # private: through the views, with the session
    path = f"/files/{file_uuid}/{name}"
    assert request(server, "GET", path).status == 404
    mine = request(server, "GET", path, {"Cookie": cookie, "Range": "bytes=1000-1999"})
    assert (mine.status, mine.body) == (206, DATA[1000:2000])

    link = share_link(url, file_uuid, name, env=BEHIND)
    shared = request(server, "GET", link, {"Range": "bytes=-100"})
    assert (shared.status, shared.body) == (206, DATA[-100:])


def test_the_storage_api(url: str) -> None:
    script = (
        "import hashlib, json\n"
        "from django.core.files.base import ContentFile\n"
        "from django.core.files.storage import default_storage as s\n"
        "name = s.save('api.bin', ContentFile(bytes(range(256)) * 4096))\n"
        "with s.open(name) as f:\n"
        "    f.seek(1000); part = f.read(10); f.seek(-5, 2); tail = f.read()\n"
        "result = {'size': s.size(name), 'exists': s.exists(name), 'part': list(part), "
        "'tail': list(tail)}\n"
        "s.delete(name); result['deleted'] = not s.exists(name)\n"
        "print(json.dumps(result))\n"
    )
    result = json.loads(_manage(url, "shell", "-c", script).strip().splitlines()[-1])
    assert result == {
        "size": 256 * 4096,
        "exists": True,
        "part": [(1000 + i) % 256 for i in range(10)],
        "tail": [251, 252, 253, 254, 255],
        "deleted": True,
    }


def test_every_management_command(url: str, own_database: OwnDatabase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "in"), Path(tmp, "out")
        source.mkdir()
        (source / "one.bin").write_bytes(DATA[:5000])
        (source / "two.txt").write_bytes(b"two\n" * 1000)
        imported = _manage(url, "files_import", str(source), "--public")
        uuids = re.findall(r"^([0-9a-f-]{36})\s", imported, re.MULTILINE)
        assert len(uuids) == 2, imported
        exported = [arg for file_uuid in uuids for arg in ("--uuid", file_uuid)]
        _manage(url, "files_export", str(target), *exported)
        assert (target / "one.bin").read_bytes() == DATA[:5000]
        assert (target / "two.txt").read_bytes() == b"two\n" * 1000
    assert "Verified 2 stored file(s)" in _manage(url, "files_verify", *exported)
    stats = json.loads(_manage(url, "files_stats", "--json"))
    assert stats["stored_files"]["count"] >= 2
    # An object nothing references, made behind the app's back, is found and freed when asked.
    orphan = own_database.execute("SELECT lo_from_bytea(0, '\\x00ff')")[0][0]
    own_database.execute(f"COMMENT ON LARGE OBJECT {int(orphan)} IS 'files_app created=0'")
    sweep = ("files_sweep", "--unreferenced", "--grace", "0")
    assert "Found 1 unreferenced" in _manage(url, *sweep, "--dry-run")
    assert "freed 1." in _manage(url, *sweep)
    assert not own_database.execute(
        "SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s", (orphan,)
    )


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_downloads_keep_working_when_the_flag_is_forgotten(
    kind: str, url: str, stored: dict[str, str]
) -> None:
    """Behind PgBouncer in transaction mode without MINICLOUD_PGBOUNCER=1 (issue 24, point
    4): the lean path prepares its statements, PgBouncer's shared server connections lose
    them ("prepared statement … already exists" / "does not exist"), and files_app falls
    back to unprepared statements with one warning per process instead of failing
    requests."""
    path = stored["public"]
    forgotten = {"MINICLOUD_PGBOUNCER": "0"}
    with running_server(kind, url, project="minicloud", env=forgotten) as server:
        assert _concurrent_ranges(server, path, 60)
        whole = request(server, "GET", path)
        assert (whole.status, whole.body) == (200, DATA)
        server.check_alive()
        log = server.output()
    assert "Traceback" not in log, log
    warnings = log.count("does not keep prepared statements")
    # Once: the server runs one worker process (PgBouncer 1.18 keeps no statements).
    assert warnings == 1, log
