"""A database that does not keep prepared statements (PgBouncer in transaction mode with
FILES_APP_PREPARE left on, issue 24 point 4): the first statement that finds out runs again
unprepared, one warning says why, and nothing is prepared afterwards — no request fails.

The server connection of a pooler holds other clients' statements, or not the ones this
client prepared; here the same happens on one connection: a statement already holds the
name psycopg gives its first one ("already exists", 42P05), or the server forgot what
psycopg prepared ("does not exist", 26000). tests/reliability/test_pgbouncer.py shows it
behind a real PgBouncer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest
from django.db import connection
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from files_app import largeobjects, largeobjects_async
from files_app.models import StoredFile
from tests.lean import LEAN, spy_lean_answers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _psycopg3(driver: str) -> None:
    if driver != "psycopg":
        pytest.skip("psycopg2 prepares no statements: nothing to fall back from")


@pytest.fixture
def forgetful() -> Iterator[None]:
    """Preparation as a process starts: on, until a server loses a statement."""
    largeobjects._preparation_lost = False
    yield
    largeobjects._preparation_lost = False


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "prepared statements" in r.getMessage()]


@pytest.mark.parametrize("loss", ["name taken", "statement forgotten"])
def test_the_lean_path_falls_back_to_unprepared_statements(
    store: Callable[..., StoredFile],
    settings: SettingsWrapper,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    forgetful: None,
    loss: str,
) -> None:
    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE]
    settings.FILES_APP_PREPARE = True
    answers = spy_lean_answers(monkeypatch)
    stored = store(b"0123456789" * 100, "a.bin")
    client = Client()
    connection.close()  # a new connection: psycopg names its first statement _pg3_0
    connection.ensure_connection()
    raw = connection.connection
    if loss == "name taken":
        raw.execute("PREPARE _pg3_0 AS SELECT 1", prepare=False)
    else:
        # Prepared now (the same parameters' types: psycopg keys statements by them).
        first = client.get(stored.get_absolute_url(), headers={"Range": "bytes=10-19"})
        assert first.status_code == 206
        raw.execute("DEALLOCATE _pg3_0", prepare=False)  # psycopg does not see it
    caplog.set_level(logging.WARNING, logger="files_app")
    for _ in range(3):
        response = client.get(stored.get_absolute_url(), headers={"Range": "bytes=10-19"})
        body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
        assert (response.status_code, body) == (206, b"0123456789")
    assert len(_warnings(caplog)) == 1, caplog.text
    assert "FILES_APP_PREPARE = False" in _warnings(caplog)[0]
    assert len(answers) >= 3  # the lean path answered, no request went to the views
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name <> '_pg3_0'")
        assert cursor.fetchone()[0] == 0  # nothing prepared after the fallback


def test_the_async_pool_falls_back_to_unprepared_statements(
    store: Callable[..., StoredFile],
    settings: SettingsWrapper,
    caplog: pytest.LogCaptureFixture,
    forgetful: None,
) -> None:
    settings.FILES_APP_PREPARE = True
    stored = store(b"abcdefghij" * 10, "a.bin")
    oid = stored.file.oid
    assert oid is not None
    caplog.set_level(logging.WARNING, logger="files_app")

    async def scenario() -> list[bytes]:
        pool = await largeobjects_async._pool("default")
        try:
            async with pool.connection() as conn:  # the pool's one connection so far
                await conn.execute("PREPARE _pg3_0 AS SELECT 1", prepare=False)
            return [await largeobjects_async.read(oid, 5, 5, "default") for _ in range(3)]
        finally:
            await largeobjects_async.close_pools()

    assert asyncio.run(scenario()) == [b"fghij"] * 3
    assert len(_warnings(caplog)) == 1, caplog.text


def test_other_errors_are_not_taken_for_a_lost_preparation(forgetful: None) -> None:
    from django.db import ProgrammingError

    with pytest.raises(ProgrammingError):
        largeobjects.fetch_one("SELECT * FROM no_such_table", (), "default", prepare=True)
    assert largeobjects.preparing(True)
