"""Async large-object reads on psycopg 3's ``AsyncConnectionPool``, for serving under ASGI.

Django has no async database connections: under ASGI every query of a view runs in a worker
thread, one hand-off per query. files_app's ASGI paths read large objects here instead, on
the event loop, from a pool of async connections made with the same settings as the Django
database alias (``DATABASES[alias]``, its ``OPTIONS`` and its ``OPTIONS["pool"]`` sizes and
timeouts). Each process keeps one pool per alias and event loop, so a process holds up to
twice the connections of Django's own pool. Every read is its own statement in autocommit,
on a connection taken from the pool for that read only: a slow client holds no connection
and no snapshot between chunks.

A connection found dead when a statement runs on it (PostgreSQL restarted since it was
pooled) makes the pool check all its idle connections at once (``pool.check()``: after a
restart every one of them is dead), and the lookup and first read of a download run once
more, on a new connection: the first request after PostgreSQL is back succeeds. A read in
the middle of a body is not run again (that body ends short), nor is a statement on a hot
standby (the caller reads from the primary instead: files_app._databases).

Available with psycopg 3 and psycopg-pool (:func:`available`); elsewhere files_app reads
through Django's connections in a worker thread, as before.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from functools import cache
from typing import Any

from django.db import connections
from django.db import utils as db_utils

from files_app import _databases, largeobjects
from files_app.conf import app_settings

# One pool per event loop and alias: a pool's locks and workers belong to the loop that
# opened it.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


@cache
def available() -> bool:
    """Return whether Django uses psycopg 3 and psycopg-pool is installed."""
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    if not is_psycopg3:
        return False
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        return False
    return True


def _pool_options(settings_dict: dict[str, Any]) -> dict[str, Any]:
    options = settings_dict.get("OPTIONS", {}).get("pool")
    chosen = dict(options) if isinstance(options, dict) else {}
    for name in ("check", "configure", "reset", "kwargs", "connection_class", "open"):
        chosen.pop(name, None)  # these are about Django's sync connections
    chosen.setdefault("min_size", 1)
    chosen.setdefault("max_size", max(chosen["min_size"], 16))
    chosen.setdefault("timeout", 5.0)
    # While PostgreSQL is down, psycopg_pool retries with a growing backoff until
    # reconnect_timeout (300 s by default: minutes between attempts in the end); giving up
    # sooner lets the next request try at once, so service resumes when the database does.
    chosen.setdefault("reconnect_timeout", 5.0)
    return chosen


async def _pool(using: str) -> Any:
    loop = asyncio.get_running_loop()
    pools = _pools.setdefault(loop, {})
    pool = pools.get(using)
    if pool is None:
        from psycopg import AsyncConnection
        from psycopg_pool import AsyncConnectionPool

        wrapper = connections[using]
        if wrapper.vendor != "postgresql":
            raise db_utils.NotSupportedError(f"The database {using!r} is not PostgreSQL.")
        # Without Django's adapters (psycopg's "context"): they assume the session time
        # zone Django sets on its own connections. files_app's results are binary, which
        # they leave to psycopg anyway, and its parameters UUIDs and integers.
        params = _databases.connect_kwargs(using)
        params.pop("cursor_factory", None)  # a sync cursor class in OPTIONS
        params["autocommit"] = True
        # Our few statements, prepared at once (FILES_APP_PREPARE): planning the lean
        # path's lookup costs more than running it.
        params["prepare_threshold"] = 0 if app_settings.PREPARE else None
        pool = AsyncConnectionPool(
            kwargs=params,
            connection_class=AsyncConnection,
            open=False,
            name=f"files_app-{using}",
            **_pool_options(wrapper.settings_dict),
        )
        pool = pools.setdefault(using, pool)  # no await since get(): no other task won
    await pool.open()  # safe to call again
    return pool


async def close_pools() -> None:
    """Close the pools of the running event loop (tests; a server's loop ends with them)."""
    pools = _pools.pop(asyncio.get_running_loop(), {})
    for pool in pools.values():
        await pool.close()


def _django_error(exc: Exception) -> Exception:
    """Return the django.db exception for a psycopg one, as Django's cursors raise it."""
    import psycopg

    if getattr(exc, "sqlstate", None) == largeobjects.UNDEFINED_OBJECT:
        return FileNotFoundError(str(exc).strip())
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
        "DatabaseError",
        "InterfaceError",
        "Error",
    ):
        if isinstance(exc, getattr(psycopg, name)):
            return getattr(db_utils, name)(*exc.args)  # type: ignore[no-any-return]
    return exc


@asynccontextmanager
async def connection(using: str) -> AsyncIterator[Any]:
    """Lend an async connection of the pool; psycopg errors come out as django.db's
    (a missing large object as FileNotFoundError)."""
    import psycopg

    try:
        pool = await _pool(using)
        async with pool.connection() as conn:
            yield conn
    except psycopg.Error as exc:
        raise _django_error(exc) from exc


class _ConnectionLost(Exception):
    """A pooled connection turned out dead when a statement ran on it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


async def _fetchone(pool: Any, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    import psycopg

    async with pool.connection() as conn:
        cursor = conn.cursor(binary=True)
        try:
            # The pool's connections prepare (FILES_APP_PREPARE) until the server turns
            # out not to keep prepared statements (a pooler): then none does, and the
            # statement that found out runs again unprepared.
            prepare = None if largeobjects.preparing(app_settings.PREPARE) else False
            try:
                await cursor.execute(sql, params, prepare=prepare)
            except psycopg.Error as exc:
                if prepare is False or not largeobjects.prepared_statements_lost(exc):
                    raise
                await cursor.execute(sql, params, prepare=False)
            return await cursor.fetchone()  # type: ignore[no-any-return]
        except psycopg.OperationalError as exc:
            if conn.broken:  # the pool drops it when it comes back
                raise _ConnectionLost(exc) from exc
            raise
        finally:
            await cursor.close()


async def execute(
    sql: str, params: tuple[Any, ...], using: str, *, retry: bool = True
) -> tuple[Any, ...] | None:
    """Run one statement with binary results and return its first row.

    With ``retry`` (read-only statements before a response's first byte), a statement
    whose pooled connection was dead runs once more on a new one, except on a hot standby.
    """
    import psycopg

    try:
        pool = await _pool(using)
        try:
            return await _fetchone(pool, sql, params)
        except _ConnectionLost as lost:
            # PostgreSQL restarted (or the network dropped): the pool's other idle
            # connections are dead too. Replace them now, not one failed request each.
            await pool.check()
            if not retry or using == app_settings.DOWNLOAD_DATABASE:
                raise lost.error from None
        return await _fetchone(pool, sql, params)
    except _ConnectionLost as lost:  # again
        raise _django_error(lost.error) from lost.error
    except psycopg.Error as exc:
        raise _django_error(exc) from exc


async def read(oid: int, offset: int, length: int, using: str, *, retry: bool = True) -> bytes:
    """Return up to ``length`` bytes of the large object from ``offset`` (``retry``: see
    :func:`execute`)."""
    row = await execute(largeobjects.READ_SQL, (oid, offset, length), using, retry=retry)
    assert row is not None
    return bytes(row[0])


async def read_pieces(
    oid: int, pieces: Iterable[tuple[int, int]], using: str, *, ahead: int = 2
) -> AsyncIterator[bytes]:
    """Yield the bytes of each ``(offset, length)`` piece, the next ``ahead`` reads already
    running (each on a connection of its own) while the caller sends this one: at most
    ``ahead + 1`` pieces in memory."""
    pending = iter(pieces)
    inflight: deque[asyncio.Task[bytes]] = deque()

    def start() -> None:
        while len(inflight) < ahead and (upcoming := next(pending, None)) is not None:
            # Not run again on a new connection: this body has begun (see the module).
            inflight.append(asyncio.ensure_future(read(oid, *upcoming, using, retry=False)))

    start()
    try:
        while inflight:
            data = await inflight.popleft()
            start()
            yield data
    finally:
        for task in inflight:
            # Let reads in flight finish (a chunk each) rather than cancel them mid-query,
            # which would leave their connections unusable.
            with suppress(Exception):  # the body is being abandoned anyway
                await task
