"""Issue 14: downloads from a hot standby. minicloud with MINICLOUD_REPLICA_URL, under
gunicorn and uvicorn, against a primary and a streaming standby made from the embedded
binaries (``pg_basebackup -R``): downloads are read from the standby, and a file the
standby does not have yet (replay paused with ``pg_wal_replay_pause()``) from the primary.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from minicloud.pgserver import PostgresServer
from tests.reliability.conftest import MiB, OwnDatabase
from tests.servers import SERVER_KINDS, Server, request, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(1414).randbytes(2 * MiB + 777)


@pytest.fixture(scope="module")
def standby(own_database: OwnDatabase) -> Iterator[PostgresServer]:
    with tempfile.TemporaryDirectory(prefix="files-app-standby-") as tmp:
        os.chmod(tmp, 0o755)  # as root without user namespaces, "nobody" runs the server
        server = own_database.server.standby(Path(tmp) / "data")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def cookie(own_database: OwnDatabase) -> str:
    return f"sessionid={own_database.sessions({'replica-admin': 'superuser'})['replica-admin']}"


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, own_database: OwnDatabase, standby: PostgresServer
) -> Iterator[Server]:
    env = {"MINICLOUD_REPLICA_URL": standby.url("minicloud")}
    with running_server(request.param, own_database.url, project="minicloud", env=env) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


def _query(server: PostgresServer, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    import psycopg  # not at import time: the psycopg2 pass blocks it (and skips this module)

    with psycopg.connect(server.url("minicloud"), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _caught_up(own_database: OwnDatabase, standby: PostgresServer) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    # The insert position: with synchronous_commit off, commits may not be written yet.
    target = own_database.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _query(standby, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError("the standby did not catch up in 30 s")


@contextmanager
def _replay_paused(standby: PostgresServer) -> Iterator[None]:
    _query(standby, "SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + 30
    while _query(standby, "SELECT pg_get_wal_replay_pause_state()")[0][0] != "paused":
        assert time.monotonic() < deadline, "replay did not pause"
        time.sleep(0.05)
    try:
        yield
    finally:
        _query(standby, "SELECT pg_wal_replay_resume()")


def _on_standby(standby: PostgresServer, file_uuid: str) -> bool:
    rows = _query(standby, "SELECT 1 FROM files_app_storedfile WHERE uuid = %s", (file_uuid,))
    return bool(rows)


def test_downloads_are_read_from_the_standby(
    server: Server, own_database: OwnDatabase, standby: PostgresServer, cookie: str
) -> None:
    public = own_database.store(f"public-{server.kind}.bin", DATA)
    private = own_database.store(f"private-{server.kind}.bin", DATA, public=False)
    _caught_up(own_database, standby)
    paths = {
        public: f"/files/{public}/public-{server.kind}.bin",
        private: f"/files/{private}/private-{server.kind}.bin",
    }
    with _replay_paused(standby):
        # Deleted on the primary, still on the paused standby: only the standby can answer.
        for file_uuid in paths:
            own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (file_uuid,))
        assert all(_on_standby(standby, file_uuid) for file_uuid in paths)
        lean = request(server, "GET", paths[public])  # the lean path, several chunks
        assert (lean.status, lean.body) == (200, DATA)
        ranged = request(server, "GET", paths[public], {"Range": "bytes=-1000"})
        assert (ranged.status, ranged.body) == (206, DATA[-1000:])
        views = request(server, "GET", paths[private], {"Cookie": cookie})  # the views
        assert (views.status, views.body) == (200, DATA)
    _caught_up(own_database, standby)
    for path in paths.values():
        assert request(server, "GET", path, {"Cookie": cookie}).status == 404


def test_a_file_not_replicated_yet_is_read_from_the_primary(
    server: Server, own_database: OwnDatabase, standby: PostgresServer, cookie: str
) -> None:
    with _replay_paused(standby):
        public = own_database.store(f"fresh-{server.kind}.bin", DATA)
        private = own_database.store(f"fresh-private-{server.kind}.bin", DATA, public=False)
        assert not _on_standby(standby, public) and not _on_standby(standby, private)
        path = f"/files/{public}/fresh-{server.kind}.bin"
        whole = request(server, "GET", path)
        assert (whole.status, whole.body) == (200, DATA)
        ranged = request(server, "GET", path, {"Range": "bytes=1048570-1048589"})
        assert (ranged.status, ranged.body) == (206, DATA[1048570:1048590])
        mine = request(
            server, "GET", f"/files/{private}/fresh-private-{server.kind}.bin", {"Cookie": cookie}
        )
        assert (mine.status, mine.body) == (200, DATA)
        assert request(server, "GET", f"/files/{private}/x.bin").status == 404  # no session
