"""Issue 21, point 16, in process: a download after PostgreSQL restarted, when the
connections it kept (Django's persistent one, files_app's async pool) died while idle.

Under gunicorn and uvicorn with Django's pool: tests/reliability/test_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections

from files_app import fastpath
from tests.pools import pooled_alias


def terminate_backends(*spared: int) -> None:
    """Terminate this test database's client connections but ``spared`` ones, as a
    restart of PostgreSQL would."""
    killer = connections.create_connection("default")
    try:
        with killer.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
                [list(spared)],
            )
    finally:
        killer.close()


def own_pid() -> int:
    """Return the backend pid of this thread's connection to the test database."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.django_db(transaction=True)
def test_the_lean_path_gets_past_a_dead_persistent_connection(
    store: Callable[..., Any],
) -> None:
    # Regression: a connection that died while idle was a 503 for the next download.
    stored = store(b"after the restart\n", name="restart.txt")
    target = fastpath.Target(stored.uuid, "public", "public", "default")
    own_pid()  # connected
    terminate_backends()  # the test's own connection among them
    answer = fastpath.serve("GET", lambda name: None, target)
    assert answer is not None and answer.status == 200
    assert b"".join(answer.body) == b"after the restart\n"  # type: ignore[arg-type]


async def fill_then_kill(spared: int) -> None:
    """Leave several idle connections in files_app's async pool, then kill them all."""
    from files_app import largeobjects_async

    sleeps = [largeobjects_async.execute("SELECT pg_sleep(0.05)", (), "default") for _ in range(4)]
    await asyncio.gather(*sleeps)
    await asyncio.to_thread(terminate_backends, spared)


@pytest.mark.django_db(transaction=True)
def test_the_async_pool_gets_past_dead_connections(driver: str) -> None:
    # Regression: the async pool handed out its dead connections, one 503 each.
    if driver != "psycopg":
        pytest.skip("files_app's async pool is psycopg 3's")
    from files_app import largeobjects_async

    spared = own_pid()  # the test's connection: the transactional test flushes with it

    async def scenario() -> None:
        try:
            await fill_then_kill(spared)
            started = time.monotonic()
            assert await largeobjects_async.execute("SELECT 42", (), "default") == (42,)
            assert await largeobjects_async.execute("SELECT 43", (), "default") == (43,)
            assert time.monotonic() - started < 1
        finally:
            await largeobjects_async.close_pools()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_the_lean_path_gets_past_dead_connections_in_djangos_pool(
    driver: str, store: Callable[..., Any], django_db_blocker: Any
) -> None:
    # Regression: without CONN_HEALTH_CHECKS, Django's pool handed out its dead
    # connections, one 503 each.
    if driver != "psycopg":
        pytest.skip("Django's pool is psycopg 3's")
    stored = store(b"pooled\n", name="pooled.txt")
    spared = own_pid()
    with pooled_alias(health_checks=False) as wrapper, django_db_blocker.unblock():
        target = fastpath.Target(stored.uuid, "public", "public", "pooled")
        for _ in range(2):  # two connections used, back in the pool
            answer = fastpath.serve("GET", lambda name: None, target)
            assert answer is not None
            b"".join(answer.body)  # type: ignore[arg-type]
            wrapper.close()
        terminate_backends(spared)
        for _ in range(3):
            answer = fastpath.serve("GET", lambda name: None, target)
            assert answer is not None and answer.status == 200
            assert b"".join(answer.body) == b"pooled\n"  # type: ignore[arg-type]
            wrapper.close()
