"""Issue 14: downloads from a hot standby. minicloud with MINICLOUD_REPLICA_URL, under
gunicorn and uvicorn, against a primary and a streaming standby made from the embedded
binaries (``pg_basebackup -R``): downloads are read from the standby, and a file the
standby does not have yet (replay paused with ``pg_wal_replay_pause()``) from the primary.

Issue 21: a standby that lags more than MINICLOUD_STANDBY_MAX_LAG (point 14) or does not
answer (point 13) is left for the primary, quickly, with one warning.
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
from tests.reliability.conftest import MiB, OwnDatabase, share_link
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
    # No bound on lag: with replay paused, the standby answers whatever the primary did.
    env = {"MINICLOUD_REPLICA_URL": standby.url("minicloud"), "MINICLOUD_STANDBY_MAX_LAG": "none"}
    with running_server(request.param, own_database.url, project="minicloud", env=env) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


MAX_LAG = 1.0


@pytest.fixture(scope="module", params=SERVER_KINDS)
def bounded(
    request: pytest.FixtureRequest, own_database: OwnDatabase, standby: PostgresServer
) -> Iterator[Server]:
    """minicloud with a standby that may lag 1 s, and is tried again 1 s after it failed."""
    env = {
        "MINICLOUD_REPLICA_URL": standby.url("minicloud"),
        "MINICLOUD_STANDBY_MAX_LAG": str(MAX_LAG),
        "MINICLOUD_STANDBY_RETRY": "1",
    }
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


def test_a_managed_link_is_checked_on_the_primary(
    server: Server, own_database: OwnDatabase, standby: PostgresServer
) -> None:
    # Issue 25: a revoke is seen on the next request, however far behind the standby is.
    stored = own_database.store(f"linked-{server.kind}.bin", DATA, public=False)
    token = f"link-{server.kind}-{random.randrange(10**9)}"
    own_database.execute(
        "INSERT INTO files_app_sharelink (token, stored_file_id, label, created, downloads) "
        "SELECT %s, id, '', now(), 0 FROM files_app_storedfile WHERE uuid = %s",
        (token, stored),
    )
    path = f"/files/links/{token}/linked.bin"
    _caught_up(own_database, standby)
    ranged = {"Range": "bytes=100-199"}
    assert request(server, "GET", path, ranged).body == DATA[100:200]
    with _replay_paused(standby):
        own_database.execute(
            "UPDATE files_app_sharelink SET revoked = now() WHERE token = %s", (token,)
        )
        assert request(server, "GET", path, ranged).status == 410


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


def _until(condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_access_changes_reach_downloads_within_the_lag_bound(
    bounded: Server, own_database: OwnDatabase, standby: PostgresServer, cookie: str
) -> None:
    # Regression (issue 21, point 14): a file made private on the primary was served to
    # anyone by a standby whose replay was paused, for as long as it stayed paused.
    kind = bounded.kind
    public = own_database.store(f"made-private-{kind}.bin", DATA)
    shared = own_database.store(f"shared-deleted-{kind}.bin", DATA, public=False)
    path = f"/files/{public}/made-private-{kind}.bin"
    link = share_link(own_database.url, shared, f"shared-deleted-{kind}.bin")
    _caught_up(own_database, standby)
    assert request(bounded, "GET", path).status == 200
    assert request(bounded, "GET", link).status == 200
    with _replay_paused(standby):
        own_database.execute(
            "UPDATE files_app_storedfile SET public = false WHERE uuid = %s", (public,)
        )
        own_database.execute("DELETE FROM files_app_storedfile WHERE uuid = %s", (shared,))
        changed = time.monotonic()
        assert _on_standby(standby, shared)  # the standby still has both as they were
        _until(lambda: request(bounded, "GET", path, {"Range": "bytes=0-9"}).status == 404, 5)
        _until(lambda: request(bounded, "GET", link, {"Range": "bytes=0-9"}).status == 404, 5)
        # The bound counts from the last change the standby replayed, before these.
        assert time.monotonic() - changed < MAX_LAG + 0.5
        for _ in range(5):
            assert request(bounded, "GET", path).status == 404
        # The owner (here, a superuser) still gets it, from the primary.
        mine = request(bounded, "GET", path, {"Cookie": cookie})
        assert (mine.status, mine.body) == (200, DATA)
    assert bounded.output().count("replays") <= 1, bounded.output()


def _standby_read(standby: PostgresServer) -> bool:
    """Return whether some connection to the standby last ran a download's query (the
    lookup, or a read)."""
    rows = _query(
        standby,
        "SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' "
        "AND (query LIKE '%%files_app_storedfile%%' OR query LIKE '%%lo_get%%')",
    )
    return bool(rows)


def test_a_stopped_standby_leaves_downloads_to_the_primary_quickly(
    bounded: Server, own_database: OwnDatabase, standby: PostgresServer, cookie: str
) -> None:
    # Regression (issue 21, point 13): with the standby down, every download was a 503
    # after the pool's 5 s timeout, though the primary was up.
    kind = bounded.kind
    public = own_database.store(f"standby-down-{kind}.bin", DATA)
    private = own_database.store(f"standby-down-private-{kind}.bin", DATA, public=False)
    requests = [
        (f"/files/{public}/standby-down-{kind}.bin", {}),  # the lean path
        (f"/files/{private}/standby-down-private-{kind}.bin", {"Cookie": cookie}),  # views
    ]
    _caught_up(own_database, standby)
    for path, headers in requests:
        assert request(bounded, "GET", path, headers).status == 200
    warned = bounded.output().count("cannot be reached")
    port = standby.port
    standby.stop()
    try:
        took = []
        for round_ in range(8):
            for path, headers in requests:
                started = time.monotonic()
                reply = request(bounded, "GET", path, {**headers, "Range": "bytes=5-14"})
                took.append(time.monotonic() - started)
                assert (reply.status, reply.body) == (206, DATA[5:15]), (round_, path, reply)
            time.sleep(0.2)  # past the retry interval (1 s): tried again, still down
        assert max(took) < 1, took
    finally:
        standby.start(port=port)
    assert bounded.output().count("cannot be reached") == warned + 1, bounded.output()
    # Back: after the retry interval, downloads read from the standby again.
    _caught_up(own_database, standby)
    _until(
        lambda: request(bounded, "GET", requests[0][0]).status == 200 and _standby_read(standby),
        10,
    )
