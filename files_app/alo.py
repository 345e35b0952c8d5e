"""Async large-object reads on psycopg 3's ``AsyncConnectionPool``, for serving under ASGI.

Django has no async database connections: under ASGI every query of a view runs in a worker
thread, one hand-off per query. files_app's ASGI paths read large objects here instead, on
the event loop, from a pool of async connections made with the same settings as the Django
database alias (``DATABASES[alias]``, its ``OPTIONS`` and its ``OPTIONS["pool"]`` sizes and
timeouts). Each process keeps one pool per alias and event loop, so a process holds up to
twice the connections of Django's own pool. Every read is its own statement in autocommit,
on a connection taken from the pool for that read only: a slow client holds no connection
and no snapshot between chunks.

Available with psycopg 3 and psycopg-pool (:func:`available`); elsewhere files_app reads
through Django's connections in a worker thread, as before.
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

from files_app import lo
from files_app.conf import app_settings

__all__ = ["available", "close_pools", "connection", "execute", "read_pieces"]


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
        params = wrapper.get_connection_params()
        params.pop("cursor_factory", None)  # Django's is a sync cursor
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

    if getattr(exc, "sqlstate", None) == lo.UNDEFINED_OBJECT:
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


async def execute(sql: str, params: tuple[Any, ...], using: str) -> tuple[Any, ...] | None:
    """Run one statement with binary results and return its first row."""
    async with connection(using) as conn:
        cursor = conn.cursor(binary=True)
        await cursor.execute(sql, params)
        row = await cursor.fetchone()
        await cursor.close()
        return row  # type: ignore[no-any-return]


async def read(oid: int, offset: int, length: int, using: str) -> bytes:
    """Return up to ``length`` bytes of the large object from ``offset``."""
    row = await execute(lo.READ_SQL, (oid, offset, length), using)
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
            inflight.append(asyncio.ensure_future(read(oid, *upcoming, using)))

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
