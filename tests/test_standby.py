"""Issue 21, points 13, 14 and 16, in process and on both drivers: which database a download
reads from (a hot standby while it answers and keeps up, else the primary), and getting past
a database restart (dead pooled or persistent connections).

A primary and a streaming standby of their own (``PostgresServer.standby()``) stand in for a
deployment's; the download paths against a real standby under gunicorn and uvicorn are in
tests/reliability/test_replica.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections
from django.test import override_settings

from files_app import _databases
from files_app.checks import check_settings
from minicloud.pgserver import PostgresServer
from tests.pools import pooled_alias
from tests.test_restarts import fill_then_kill, own_pid, terminate_backends

pytestmark = pytest.mark.processes

LOGGER = "files_app"


class Pair:
    """A primary and its streaming standby."""

    def __init__(self, primary: PostgresServer, standby: PostgresServer) -> None:
        self.primary, self.standby = primary, standby

    def query(self, server: PostgresServer, sql: str) -> Any:
        return server.psql("-Atc", sql).strip()

    def caught_up(self) -> None:
        target = self.query(self.primary, "SELECT pg_current_wal_insert_lsn()")
        _wait(
            lambda: (
                self.query(self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'") == "t"
            ),
            30,
        )

    def write(self) -> None:
        """Commit a transaction on the primary (WAL for the standby to receive)."""
        self.query(self.primary, "CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)")

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.query(self.standby, "SELECT pg_wal_replay_pause()")
        _wait(
            lambda: self.query(self.standby, "SELECT pg_get_wal_replay_pause_state()") == "paused",
            30,
        )
        try:
            yield
        finally:
            self.query(self.standby, "SELECT pg_wal_replay_resume()")


def _wait(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with tempfile.TemporaryDirectory(prefix="files-app-standby-") as tmp:
        os.chmod(tmp, 0o755)  # as root without user namespaces, "nobody" runs the server
        primary = PostgresServer(Path(tmp) / "primary", ephemeral=True)
        primary.start()
        try:
            standby = primary.standby(Path(tmp) / "standby")
            standby.start()
            try:
                yield Pair(primary, standby)
            finally:
                standby.stop()
        finally:
            primary.stop()


@contextmanager
def _alias(name: str, port: int | None) -> Iterator[str]:
    """Add the database alias ``name`` for the server on ``port`` (the probe only)."""
    settings_dict = dict(connections.settings["default"])
    settings_dict.update(NAME="postgres", USER="postgres", HOST="127.0.0.1", PORT=port)
    settings_dict["OPTIONS"] = {}
    connections.settings[name] = connections.configure_settings(
        {"default": dict(connections.settings["default"]), name: settings_dict}
    )[name]
    try:
        yield name
    finally:
        _databases.forget()
        if hasattr(connections._connections, name):  # type: ignore[attr-defined]
            connections[name].close()
            del connections[name]
        del connections.settings[name]


@pytest.fixture
def standby(pair: Pair) -> Iterator[str]:
    with (
        _alias("standby", pair.standby.port) as alias,
        override_settings(
            FILES_APP_DOWNLOAD_DATABASE=alias,
            FILES_APP_STANDBY_MAX_LAG=0.5,
            FILES_APP_STANDBY_RETRY=0.5,
        ),
    ):
        yield alias


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_an_idle_primary_does_not_make_an_up_to_date_standby_lag(pair: Pair, standby: str) -> None:
    pair.write()
    pair.caught_up()
    time.sleep(1.2)  # longer than FILES_APP_STANDBY_MAX_LAG, nothing written meanwhile
    since_replay = float(
        pair.query(
            pair.standby,
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())",
        )
    )
    assert since_replay > 1  # what a timestamp alone would call lag
    assert _databases.choose("default") == standby


def test_a_standby_that_falls_behind_is_left_within_the_bound_and_logged_once(
    pair: Pair, standby: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    pair.caught_up()
    assert _databases.choose("default") == standby
    with pair.paused():
        pair.write()  # the standby receives it and cannot replay it
        changed = time.monotonic()
        took = _wait(lambda: _databases.choose("default") == "default", 10)
        # The bound (0.5 s) counts from the last commit replayed, before the write.
        assert time.monotonic() - changed <= 0.5 + 0.1, took
        for _ in range(20):
            assert _databases.choose("default") == "default"
            time.sleep(0.05)
    _wait(lambda: _databases.choose("default") == standby, 10)
    messages = _messages(caplog)
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO], messages
    assert "'standby' replays" in messages[0][1] and "caught up" in messages[1][1]


def test_a_stopped_standby_is_left_at_once_and_logged_once(
    pair: Pair, standby: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    assert _databases.choose("default") == standby
    port = pair.standby.port
    pair.standby.stop()
    # The reading just taken is fresh, but its connection heard the server go.
    try:
        for _ in range(30):  # 1.5 s: the breaker's retry (0.5 s) comes and goes
            started = time.monotonic()
            assert _databases.choose("default") == "default"
            assert time.monotonic() - started < 0.5
            time.sleep(0.05)
    finally:
        pair.standby.start(port=port)
    _wait(lambda: _databases.choose("default") == standby, 10)
    messages = _messages(caplog)
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO], messages
    assert "'standby' cannot be reached" in messages[0][1]
    assert "'standby' answers again" in messages[1][1]


def test_a_standby_on_no_server_costs_no_wait() -> None:
    with (
        _alias("nowhere", 9) as alias,  # the discard port: nothing listens
        override_settings(FILES_APP_DOWNLOAD_DATABASE=alias),
    ):
        started = time.monotonic()
        assert _databases.choose("default") == "default"
        assert time.monotonic() - started < 1


def test_without_a_lag_bound_the_standby_is_not_probed(pair: Pair, standby: str) -> None:
    with override_settings(FILES_APP_STANDBY_MAX_LAG=None), pair.paused():
        pair.write()
        time.sleep(0.7)
        assert _databases.choose("default") == standby


@pytest.mark.django_db
def test_a_failed_read_on_the_standby_is_answered_from_the_primary(
    standby: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert _databases.choose("default") == standby
    tried: list[str] = []

    def read(using: str) -> str:
        tried.append(using)
        if using == standby:  # a connection lost, as psycopg reports it: no SQLSTATE
            raise OperationalError("server closed the connection unexpectedly")
        return using

    with caplog.at_level(logging.WARNING, LOGGER):
        assert _databases.run("default", lambda using: read(using)) == "default"
        assert _databases.run("default", lambda using: read(using)) == "default"
    assert tried == [standby, "default", "default"]  # then the breaker kept it away
    assert len(_messages(caplog)) == 1


@pytest.mark.django_db
def test_a_statement_error_on_the_standby_keeps_it_in_use(standby: str) -> None:
    class Conflict(Exception):
        sqlstate = "40001"  # canceled: a conflict with recovery

    def read(using: str) -> str:
        if using == standby:
            raise OperationalError("conflict") from Conflict()
        return using

    assert _databases.run("default", read) == "default"
    assert _databases.choose("default") == standby


def test_the_async_path_chooses_and_falls_back_as_the_sync_one(
    standby: str, caplog: pytest.LogCaptureFixture
) -> None:
    tried: list[str] = []

    async def read(using: str) -> str:
        tried.append(using)
        if using == standby:
            raise OperationalError("server closed the connection unexpectedly")
        return using

    async def scenario() -> None:
        assert await _databases.achoose("default") == standby  # probed in a thread
        assert await _databases.arun("default", read) == "default"
        assert await _databases.arun("default", read) == "default"

    with caplog.at_level(logging.WARNING, LOGGER):
        asyncio.run(scenario())
    assert tried == [standby, "default", "default"]
    assert len(_messages(caplog)) == 1


def test_while_one_thread_reads_the_lag_the_others_use_the_last_reading(
    standby: str,
) -> None:
    assert _databases.choose("default") == standby  # a reading: 0 s behind
    state = _databases._standby(standby)
    state.probing = True  # as if another thread were reading the lag now
    try:
        assert _databases.choose("default") == standby
        state.read_at = time.monotonic() - 0.6  # older than the bound (0.5 s)
        assert _databases.choose("default") == "default"
    finally:
        state.probing = False
    assert _databases.choose("default") == standby  # read again


@pytest.mark.django_db(transaction=True)
def test_a_statement_error_on_the_primary_is_not_run_again() -> None:
    tried: list[str] = []

    def read(using: str) -> None:
        tried.append(using)
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(1)")  # canceled: an OperationalError

    with connections["default"].cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
    try:
        with pytest.raises(OperationalError, match="statement timeout"):
            _databases.run("default", read)
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("RESET statement_timeout")
    assert tried == ["default"]


def test_a_pool_without_a_check_is_left_alone() -> None:
    assert not _databases.check_all_on_failure(object())


@pytest.mark.django_db(transaction=True)
def test_a_read_mid_body_is_not_run_again_but_the_pool_is_cleaned(driver: str) -> None:
    if driver != "psycopg":
        pytest.skip("files_app's async pool is psycopg 3's")
    from files_app import largeobjects_async

    spared = own_pid()

    async def scenario() -> None:
        try:
            await fill_then_kill(spared)
            with pytest.raises(OperationalError):
                await largeobjects_async.execute("SELECT 1", (), "default", retry=False)
            assert await largeobjects_async.execute("SELECT 2", (), "default", retry=False) == (2,)
        finally:
            await largeobjects_async.close_pools()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_pool_checks_all_idle_connections_when_one_fails_its_check(driver: str) -> None:
    # psycopg_pool waits 1, 2, 4 s between failed checks: with 4 dead connections, 7 s.
    if driver != "psycopg":
        pytest.skip("Django's pool is psycopg 3's")
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        kwargs={**_databases.connect_kwargs("default"), "autocommit": True},
        min_size=4,
        open=False,
        check=ConnectionPool.check_connection,
        name="files_app-test",
    )
    pool.open(wait=True)
    try:
        assert _databases.check_all_on_failure(pool)  # psycopg_pool still has its _check
        terminate_backends(*_pids_but(_take(pool, 4)))
        started = time.monotonic()
        with pool.connection(timeout=2.5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started < 2.5
    finally:
        pool.close()


def _pids_but(pooled: list[Any]) -> list[int]:
    """Return the pids of this database's client connections that are not ``pooled``."""
    mine = {conn.info.backend_pid for conn in pooled}
    killer = connections.create_connection("default")
    try:
        with killer.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return [pid for (pid,) in cursor.fetchall() if pid not in mine]
    finally:
        killer.close()


def _take(pool: Any, count: int) -> list[Any]:
    """Take ``count`` connections out of the pool at once and give them back."""
    taken = [pool.getconn() for _ in range(count)]
    for conn in taken:
        pool.putconn(conn)
    return taken


def test_djangos_pool_checks_all_on_failure(driver: str, django_db_blocker: Any) -> None:
    if driver != "psycopg":
        pytest.skip("Django's pool is psycopg 3's")
    with pooled_alias(health_checks=True, min_size=1) as wrapper, django_db_blocker.unblock():
        wrapper.ensure_connection()  # connection_created: files_app's receiver runs
        assert getattr(wrapper.pool._check, "files_app_checks_all", False)


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("FILES_APP_STANDBY_MAX_LAG", 0, "files_app.E009"),
        ("FILES_APP_STANDBY_MAX_LAG", -1.5, "files_app.E009"),
        ("FILES_APP_STANDBY_MAX_LAG", "5s", "files_app.E009"),
        ("FILES_APP_STANDBY_MAX_LAG", float("nan"), "files_app.E009"),
        ("FILES_APP_STANDBY_MAX_LAG", float("inf"), "files_app.E009"),
        ("FILES_APP_STANDBY_MAX_LAG", True, "files_app.E009"),
        ("FILES_APP_STANDBY_RETRY", None, "files_app.E010"),
        ("FILES_APP_STANDBY_RETRY", 0, "files_app.E010"),
        ("FILES_APP_STANDBY_RETRY", "10", "files_app.E010"),
    ],
)
def test_bad_standby_settings(setting: str, value: object, check_id: str) -> None:
    with override_settings(**{setting: value}):
        errors = check_settings()
    assert [e.id for e in errors] == [check_id]
    assert repr(value) in errors[0].msg
    assert errors[0].hint


@pytest.mark.parametrize(
    ("setting", "value"),
    [("FILES_APP_STANDBY_MAX_LAG", None), ("FILES_APP_STANDBY_MAX_LAG", 0.25)],
)
def test_good_standby_settings(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        assert check_settings() == []
