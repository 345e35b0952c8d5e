"""All large-object SQL of files_app, on a Django database alias.

Uses the server-side functions (``lo_create``, ``lo_put``, ``lo_get``, ``lo_unlink``), which
behave the same on psycopg2 and psycopg 3 and need no descriptor, so reads work in
autocommit, after a transaction committed, and behind pgbouncer. Knows nothing of files or
HTTP. Offsets and sizes are 64-bit throughout.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from django.db import DatabaseError, NotSupportedError, connections

__all__ = [
    "OWNER_TAG",
    "count",
    "create",
    "created_at",
    "disk_usage",
    "exists",
    "install_unlink_trigger",
    "read",
    "read_pieces",
    "read_with_size",
    "size",
    "sweep_candidates",
    "Writer",
    "unlink",
    "write",
]

# Large objects created by files_app carry this comment (plus their creation time): the
# sweeper only ever frees large objects it can prove are ours.
OWNER_TAG = "files_app"
INV_READ = 0x40000
UNDEFINED_OBJECT = "42704"  # SQLSTATE: large object does not exist


def _check_vendor(using: str) -> Any:
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotSupportedError(
            f"Large objects need PostgreSQL; the database {using!r} is {connection.vendor!r}."
        )
    return connection


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)


@contextmanager
def _missing_is_file_not_found() -> Iterator[None]:
    try:
        yield
    except DatabaseError as exc:
        if _sqlstate(exc) == UNDEFINED_OBJECT:
            raise FileNotFoundError(str(exc.__cause__ or exc).strip()) from exc
        raise


@contextmanager
def _cursor(using: str, *, binary: bool = False) -> Iterator[Any]:
    """Yield a cursor; on psycopg 3 with ``binary``, one that returns binary results."""
    connection = _check_vendor(using)
    with _missing_is_file_not_found():
        if binary and _is_psycopg3(connection):
            # bytea in binary format is ~3x faster than hex text (DESIGN.md); Django's own
            # cursor uses client-side binding and text results, so open a raw one.
            import psycopg

            connection.ensure_connection()
            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.format = psycopg.pq.Format.BINARY
                yield cursor
        else:
            with connection.cursor() as cursor:
                yield cursor


def _is_psycopg3(connection: Any) -> bool:
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    return bool(is_psycopg3)


def create(using: str) -> int:
    """Create an empty large object owned by files_app and return its OID."""
    with _cursor(using) as cursor:
        cursor.execute("SELECT lo_create(0)")
        oid = int(cursor.fetchone()[0])
        # COMMENT takes no bind parameters; both values are numbers we made.
        cursor.execute(
            f"COMMENT ON LARGE OBJECT {oid:d} IS '{OWNER_TAG} created={time.time():.3f}'"
        )
    return oid


def write(oid: int, offset: int, data: bytes | memoryview, using: str) -> None:
    """Write ``data`` into the large object at ``offset``."""
    connection = _check_vendor(using)
    if not _is_psycopg3(connection) and connection.in_atomic_block:
        # psycopg2 can only send bytea as an escaped text literal (slow, and several
        # copies in memory); inside a transaction its binary lo_write is available.
        _write_psycopg2(connection, oid, offset, data)
        return
    with _cursor(using, binary=True) as cursor:
        if _is_psycopg3(connection):
            cursor.execute("SELECT lo_put(%s::oid, %s::int8, %b)", (oid, offset, data))
        else:
            cursor.execute("SELECT lo_put(%s::oid, %s::int8, %s)", (oid, offset, data))


def _write_psycopg2(connection: Any, oid: int, offset: int, data: bytes | memoryview) -> None:
    connection.ensure_connection()
    with _missing_is_file_not_found(), connection.wrap_database_errors:
        lobject = connection.connection.lobject(oid, "wb")
        try:
            lobject.seek(offset)
            lobject.write(bytes(data))
        finally:
            lobject.close()


def read(oid: int, offset: int, length: int, using: str) -> bytes:
    """Return up to ``length`` bytes of the large object from ``offset``."""
    with _cursor(using, binary=True) as cursor:
        cursor.execute("SELECT lo_get(%s::oid, %s::int8, %s::int4)", (oid, offset, length))
        return bytes(cursor.fetchone()[0])


def read_with_size(oid: int, offset: int, length: int, using: str) -> tuple[bytes, int]:
    """Return up to ``length`` bytes from ``offset``, and the object's size: one query."""
    with _cursor(using, binary=True) as cursor:
        cursor.execute(
            "SELECT lo_get(%s::oid, %s::int8, %s::int4), lo_lseek64(fd, 0, 2), lo_close(fd) "
            "FROM (SELECT lo_open(%s::oid, %s) AS fd) s",
            (oid, offset, length, oid, INV_READ),
        )
        row = cursor.fetchone()
        return bytes(row[0]), int(row[1])


def _pipeline_connection(connection: Any) -> Any:
    """Return the psycopg 3 connection to use in pipeline mode, or None where there is none.

    Each statement sent through it is followed by a Sync (:func:`_end_statement`), so that
    in autocommit it is its own transaction, as without pipelining: a slow client does
    not hold one transaction, and its snapshot, open for a whole download or upload.
    psycopg has no public call that sends a Sync without waiting for the results.
    """
    if not _is_psycopg3(connection):
        return None
    import psycopg

    needed = ("_enqueue_sync", "_communicate_gen")
    if not all(hasattr(psycopg.Pipeline, name) for name in needed):  # pragma: no cover
        return None
    connection.ensure_connection()
    return connection.connection


def _end_statement(conn: Any, pipeline: Any) -> None:
    # Queue a Sync behind the statement and send both now, without waiting for results.
    pipeline._enqueue_sync()
    conn.wait(pipeline._communicate_gen())


def read_pieces(
    oid: int, pieces: Iterable[tuple[int, int]], using: str, *, ahead: int = 1
) -> Generator[bytes, None, None]:
    """Yield the bytes of each ``(offset, length)`` piece of the large object, in order.

    On psycopg 3 the next ``ahead`` reads are already sent (pipeline mode) while the
    caller handles a piece, so PostgreSQL reads piece n+1 while piece n goes to the
    client: at most ``ahead + 1`` pieces are in memory. Elsewhere, one read at a time.
    ``pieces`` is consumed lazily. A piece may come back shorter than asked at the end of
    the object.
    """
    connection = _check_vendor(using)
    pending = iter(pieces)
    first = next(pending, None)
    if first is None:
        return
    conn = _pipeline_connection(connection) if ahead >= 1 else None
    if conn is None:
        for offset, length in itertools.chain([first], pending):
            yield read(oid, offset, length, using)
        return
    import psycopg

    sql = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"
    inflight: deque[Any] = deque()
    upcoming: tuple[int, int] | None = first
    with (
        _missing_is_file_not_found(),
        connection.wrap_database_errors,
        conn.pipeline() as pipeline,
    ):
        try:
            while upcoming is not None or inflight:
                while upcoming is not None and len(inflight) <= ahead:
                    # Django's cursors bind client-side, which allows no binary results.
                    cursor = psycopg.Cursor(conn)
                    cursor.format = psycopg.pq.Format.BINARY
                    cursor.execute(sql, (oid, *upcoming))
                    _end_statement(conn, pipeline)
                    inflight.append(cursor)
                    upcoming = next(pending, None)
                cursor = inflight.popleft()
                row = cursor.fetchone()
                cursor.close()
                yield bytes(row[0])
        finally:
            for cursor in inflight:
                cursor.close()


class Writer:
    """Write a large object piece by piece; on psycopg 3 without waiting for each write.

    psycopg 3 sends each ``lo_put`` in pipeline mode and goes straight back to the caller,
    so the next piece can be received while the database stores this one; the socket
    buffers bound what is in flight. Errors surface in a later :meth:`write` or at the
    latest in :meth:`close`. In autocommit each write is its own transaction, as with
    :func:`write`. With psycopg2, each :func:`write` completes before the next.
    """

    def __init__(self, oid: int, using: str) -> None:
        self.oid = oid
        self.using = using
        self._mode: Any = None  # psycopg 3's pipeline mode, entered until _end()
        conn = _pipeline_connection(_check_vendor(using))
        if conn is not None:
            import psycopg

            self._conn = conn
            self._mode = conn.pipeline()
            self._pipeline = self._mode.__enter__()
            self._cursor = psycopg.Cursor(conn)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self._mode is None:
            write(self.oid, offset, data, self.using)
            return
        with _missing_is_file_not_found(), connections[self.using].wrap_database_errors:
            self._cursor.execute("SELECT lo_put(%s::oid, %s::int8, %b)", (self.oid, offset, data))
            _end_statement(self._conn, self._pipeline)

    def close(self) -> None:
        """Wait for every write; raise the first error."""
        self._end()

    def abort(self) -> None:
        """Stop writing, ignoring what is in flight and any error it had."""
        with suppress(DatabaseError, FileNotFoundError):
            self._end()

    def _end(self) -> None:
        mode, self._mode = self._mode, None
        if mode is None:
            return
        try:
            with _missing_is_file_not_found(), connections[self.using].wrap_database_errors:
                mode.__exit__(None, None, None)
        finally:
            self._cursor.close()


def size(oid: int, using: str) -> int:
    """Return the size of the large object in bytes."""
    # lo_lseek64 needs a descriptor; one opened in this statement lives only as long as
    # its transaction, so close it right away for callers inside a long transaction.
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT lo_lseek64(fd, 0, 2), lo_close(fd) FROM (SELECT lo_open(%s::oid, %s) AS fd) s",
            (oid, INV_READ),
        )
        return int(cursor.fetchone()[0])


def exists(oid: int, using: str) -> bool:
    """Return whether the large object exists."""
    # pg_largeobject_metadata, not pg_largeobject: an empty object has no data pages, and
    # pg_largeobject is unreadable to ordinary roles.
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s::oid)", (oid,)
        )
        return bool(cursor.fetchone()[0])


def unlink(oid: int, using: str) -> bool:
    """Delete the large object; return False if it did not exist."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = %s::oid", (oid,)
        )
        return cursor.fetchone() is not None


def created_at(oid: int, using: str) -> float | None:
    """Return when files_app created the large object (Unix time), or None if unknown."""
    with _cursor(using) as cursor:
        cursor.execute(
            "SELECT m.oid, substring(obj_description(m.oid, 'pg_largeobject') "
            "FROM 'created=([0-9.]+)') FROM pg_largeobject_metadata m WHERE m.oid = %s::oid",
            (oid,),
        )
        row = cursor.fetchone()
    if row is None:
        raise FileNotFoundError(f"Large object {oid} does not exist.")
    return float(row[1]) if row[1] else None


def count(using: str, *, owned: bool = False) -> int:
    """Return how many large objects exist (only files_app's own with ``owned``)."""
    sql = "SELECT count(*) FROM pg_largeobject_metadata m"
    if owned:
        sql += " WHERE obj_description(m.oid, 'pg_largeobject') LIKE %s"
    with _cursor(using) as cursor:
        cursor.execute(sql, [f"{OWNER_TAG} %"] if owned else [])
        return int(cursor.fetchone()[0])


# Unlinks one transaction does itself; the rest wait in files_app_pendingunlink until
# after commit. Each lo_unlink holds a lock until the end of its transaction, and the lock
# table has room for max_locks_per_transaction (64) x max_connections locks in all: a
# statement deleting 100,000 rows must not take 100,000 of them.
IMMEDIATE_UNLINKS = 500

UNLINK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION files_app_unlink_lo() RETURNS trigger
LANGUAGE plpgsql
-- Index lookups whatever the statistics say (a plan made while a table looked empty would
-- scan it whole for every deleted row).
SET enable_seqscan = off
AS $$
DECLARE
    old_oid oid := (to_jsonb(OLD) ->> TG_ARGV[0])::oid;
    new_oid oid;
    still_used boolean;
    unlinked int4;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        new_oid := (to_jsonb(NEW) ->> TG_ARGV[0])::oid;
    END IF;
    IF old_oid IS NULL OR old_oid IS NOT DISTINCT FROM new_oid THEN
        RETURN NULL;
    END IF;
    -- An AFTER trigger sees the whole statement's changes: another row may still use it.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE %I = $1)',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0])
        INTO still_used USING old_oid;
    -- Tolerant, unlike the lo extension's lo_manage: the object may already be gone.
    IF still_used OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = old_oid
    ) THEN
        RETURN NULL;
    END IF;
    unlinked := coalesce(nullif(current_setting('files_app.unlinks', true), ''), '0')::int4;
    IF unlinked < {IMMEDIATE_UNLINKS} THEN
        PERFORM set_config('files_app.unlinks', (unlinked + 1)::text, true);
        PERFORM pg_catalog.lo_unlink(old_oid);
    ELSE
        INSERT INTO files_app_pendingunlink (oid) VALUES (old_oid::int8);
    END IF;
    RETURN NULL;
END
$$
"""


def install_unlink_trigger(table: str, column: str, using: str) -> None:
    """Make deleting or updating a row of ``table`` unlink the object in ``column``."""
    connection = _check_vendor(using)
    qn = connection.ops.quote_name
    trigger = qn(f"files_app_unlink_{column}"[:63])
    with _cursor(using) as cursor:
        cursor.execute(UNLINK_FUNCTION)
        cursor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {qn(table)}")
        cursor.execute(
            f"CREATE TRIGGER {trigger} AFTER DELETE OR UPDATE OF {qn(column)} ON {qn(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION files_app_unlink_lo(%s)",
            [column],
        )


# A storage name is "[dir/]<oid>/<basename>" or "<oid>"; this is the same rule in SQL.
NAME_OID_PATTERN = r"^(?:.*/)?([0-9]{1,10})(?:/[^/]+)?$"


def sweep_candidates(
    using: str,
    *,
    grace: float,
    oid_columns: Sequence[tuple[str, str]],
    name_columns: Sequence[tuple[str, str]],
    after: int = 0,
    limit: int = 1000,
) -> list[int]:
    """Return files_app's large objects older than ``grace`` seconds that nothing references.

    ``oid_columns`` are (table, column) pairs holding OIDs; ``name_columns`` hold storage
    names. Returns at most ``limit`` OIDs above ``after``, in ascending order.
    """
    connection = _check_vendor(using)
    qn = connection.ops.quote_name
    conditions = []
    params: list[Any] = [f"{OWNER_TAG} %", time.time() - grace, after]
    for table, column in oid_columns:
        conditions.append(f"NOT EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} = m.oid)")
    for table, column in name_columns:
        conditions.append(
            f"NOT EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} <> '' AND "
            f"substring(r.{qn(column)} FROM %s)::int8 = m.oid::int8)"
        )
        params.append(NAME_OID_PATTERN)
    where = "".join(f" AND {c}" for c in conditions)
    sql = (
        "SELECT m.oid FROM pg_largeobject_metadata m "
        "CROSS JOIN LATERAL (SELECT obj_description(m.oid, 'pg_largeobject') AS d) c "
        "WHERE c.d LIKE %s "
        "AND substring(c.d FROM 'created=([0-9.]+)')::float8 < %s "
        f"AND m.oid > %s::oid{where} ORDER BY m.oid LIMIT {int(limit):d}"
    )
    with _cursor(using) as cursor:
        cursor.execute(sql, params)
        return [int(row[0]) for row in cursor.fetchall()]


def disk_usage(using: str) -> int:
    """Return the bytes that ``pg_largeobject`` (with its index) takes on disk."""
    # Any role may ask for a relation's size, though pg_largeobject itself is unreadable
    # to ordinary roles. It holds every large object of the database, whoever made it.
    with _cursor(using) as cursor:
        cursor.execute("SELECT pg_total_relation_size('pg_catalog.pg_largeobject')")
        return int(cursor.fetchone()[0])
