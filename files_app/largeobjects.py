"""Large-object I/O for files_app, on a Django database alias: create, write, read, size,
exists, unlink. (Inventory, triggers and sweeping are in files_app.maintenance.)

Uses the server-side functions (``lo_create``, ``lo_put``, ``lo_get``, ``lo_unlink``), which
behave the same on psycopg2 and psycopg 3 and need no descriptor, so reads work in
autocommit, after a transaction committed, and behind pgbouncer. Knows nothing of files or
HTTP. Offsets and sizes are 64-bit throughout.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote

from django.db import DatabaseError, NotSupportedError, connections, transaction

from files_app import pipeline
from files_app._databases import sqlstate

# Large objects created by files_app carry this comment (plus their creation time): the
# sweeper only ever frees large objects it can prove are ours.
OWNER_TAG = "files_app"
# The mark of an object an upload handler wrote and no row has adopted yet: the default
# sweep frees these (and only these) once they are older than the grace period.
UNADOPTED = "unadopted"
# The SQL function, installed by migrate (files_app.maintenance), that says whether a
# reference column (any LargeObjectField, a resumable upload) holds an object.
REFERENCED_FUNCTION = "files_app_lo_referenced"
INV_READ = 0x40000
UNDEFINED_OBJECT = "42704"  # SQLSTATE: large object does not exist

logger = logging.getLogger("files_app")
READ_SQL = "SELECT lo_get(%s::oid, %s::int8, %s::int4)"  # one read by offset


def _check_vendor(using: str) -> Any:
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise NotSupportedError(
            f"Large objects need PostgreSQL; the database {using!r} is {connection.vendor!r}."
        )
    return connection


# A pooler in transaction mode that cannot keep prepared statements (PgBouncer before 1.22,
# or without max_prepared_statements) answers a statement prepared on another server
# connection with one of these: the name is taken there, or unknown here.
PREPARED_STATEMENT_LOST = frozenset({"42P05", "26000"})
_preparation_lost = False


def preparing(wanted: bool) -> bool:
    """Return whether to prepare statements: ``wanted`` (FILES_APP_PREPARE) unless the
    server lost them once already in this process (:func:`prepared_statements_lost`)."""
    return wanted and not _preparation_lost


def prepared_statements_lost(exc: BaseException) -> bool:
    """Return whether ``exc`` says the server does not keep prepared statements; the first
    time, turn preparing off for this process and say so once, so that the statement can
    run again unprepared (instead of failing every request behind such a pooler)."""
    global _preparation_lost
    if sqlstate(exc) not in PREPARED_STATEMENT_LOST:
        return False
    if not _preparation_lost:
        _preparation_lost = True
        logger.warning(
            "The database does not keep prepared statements (%s): files_app prepares none "
            "from now on in this process. Behind PgBouncer in transaction mode, set "
            "FILES_APP_PREPARE = False (minicloud: MINICLOUD_PGBOUNCER=1), or use PgBouncer "
            "1.22+ with max_prepared_statements.",
            str(exc.__cause__ or exc).strip(),
        )
    return True


def fetch_one(
    sql: str, params: tuple[Any, ...], using: str, *, prepare: bool
) -> tuple[Any, ...] | None:
    """Run one read-only statement with binary results (prepared if ``prepare`` and
    :func:`preparing`) and return its first row; a statement the server lost the
    preparation of runs once more, unprepared, outside a transaction."""
    try:
        with cursor(using, binary=True, prepare=preparing(prepare)) as cur:
            cur.execute(sql, params)
            return cur.fetchone()  # type: ignore[no-any-return]
    except DatabaseError as exc:
        in_transaction = connections[using].in_atomic_block
        if in_transaction or not prepared_statements_lost(exc):
            raise
    with cursor(using, binary=True) as cur:
        cur.execute(sql, params)
        return cur.fetchone()  # type: ignore[no-any-return]


@contextmanager
def _missing_is_file_not_found() -> Iterator[None]:
    try:
        yield
    except DatabaseError as exc:
        if sqlstate(exc) == UNDEFINED_OBJECT:
            raise FileNotFoundError(str(exc.__cause__ or exc).strip()) from exc
        raise


@contextmanager
def cursor(using: str, *, binary: bool = False, prepare: bool = False) -> Iterator[Any]:
    """Yield a Django cursor on ``using``; on psycopg 3 with ``binary``, one with binary
    results, whose statements are prepared on the server if ``prepare`` (parsed and
    planned once per connection). A missing large object raises FileNotFoundError.

    Every query goes through Django's cursor wrapper, so ``connection.execute_wrapper()``
    and ``connection.queries`` see it.
    """
    connection = _check_vendor(using)
    with _missing_is_file_not_found():
        if binary and _is_psycopg3(connection):
            # bytea in binary format is ~3x faster than hex text (docs/design.md, "Large
            # objects"); Django's cursors bind client-side, which allows no binary results.
            connection.ensure_connection()
            conn = connection.connection
            # Django turns psycopg's automatic preparation off (prepare_threshold=None);
            # 0 prepares this cursor's statements at once. Only server-binding cursors
            # prepare: Django's own (client-side) ones are not affected.
            # With queries logged (DEBUG, the debug toolbar), no preparation: Django cannot
            # show the SQL of a prepared statement.
            threshold = conn.prepare_threshold
            if prepare and not connection.queries_logged:
                conn.prepare_threshold = 0
            try:
                with connection.wrap_database_errors, _wrapped(connection, None) as wrapped:
                    yield wrapped
            finally:
                conn.prepare_threshold = threshold
        else:
            with connection.cursor() as wrapped:
                yield wrapped


def _wrapped(connection: Any, conn: Any) -> Any:
    """Return Django's wrapper around a binary-result psycopg 3 cursor on ``conn``."""
    import psycopg

    raw = psycopg.Cursor(conn if conn is not None else connection.connection)
    raw.format = psycopg.pq.Format.BINARY
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def _is_psycopg3(connection: Any) -> bool:
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    return bool(is_psycopg3)


@dataclass(frozen=True)
class Description:
    """What files_app's comment on a large object says of it.

    ``created_ms``: when files_app created it (the database's clock, whole milliseconds),
    None for an object files_app did not create; ``key``: a random identity (objects made
    before keys have none), which names carry beside the OID; ``name`` and
    ``content_type``: the file name and media type it was saved with, if any.
    """

    created_ms: int | None = None
    key: str | None = None
    name: str | None = None
    content_type: str | None = None
    unadopted: bool = False

    @property
    def created(self) -> float | None:
        """Return :attr:`created_ms` as Unix time."""
        return None if self.created_ms is None else self.created_ms / 1000

    def comment(self) -> str:
        """Return the comment that says this (``files_app created=S.mmm [key=…] [name=…]
        [type=…] [unadopted]``; values percent-encoded, so the comment is plain ASCII
        without quotes, or spaces inside a value)."""
        assert self.created_ms is not None
        parts = [OWNER_TAG, f"created={self.created_ms // 1000}.{self.created_ms % 1000:03d}"]
        if self.key:
            parts.append(f"key={self.key}")
        if self.name:
            parts.append(f"name={quote(self.name, safe='')}")
        if self.content_type:
            parts.append(f"type={quote(self.content_type, safe='')}")
        if self.unadopted:
            parts.append(UNADOPTED)  # last: the sweeper matches "files_app % unadopted"
        return " ".join(parts)

    @classmethod
    def parse(cls, comment: str | None) -> Description:
        """Return what ``comment`` says; an empty Description if it is not files_app's."""
        found = _OWN_COMMENT.fullmatch(comment or "")
        if found is None:
            return cls()
        values = dict(
            item.split("=", 1) for item in (found["values"] or "").split() if "=" in item
        )
        return cls(
            created_ms=int(found["seconds"]) * 1000 + int((found["millis"] or "").ljust(3, "0")),
            key=values.get("key") or None,
            name=unquote(values["name"]) if "name" in values else None,
            content_type=unquote(values["type"]) if "type" in values else None,
            unadopted=found["unadopted"] is not None,
        )


# files_app's own comment; old ones have only "created=".
_OWN_COMMENT = re.compile(
    rf"{OWNER_TAG} created=(?P<seconds>[0-9]+)(?:\.(?P<millis>[0-9]{{1,3}})[0-9]*)?"
    rf"(?P<values>(?: [a-z]+=[A-Za-z0-9%._~-]*)*)(?P<unadopted> {UNADOPTED})?"
)


KEY_LENGTH = 8
KEY_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"  # base 36


def new_key() -> str:
    """Return a random key for a new object (8 base-36 digits, 41 bits)."""
    number, text = secrets.randbelow(36**KEY_LENGTH), ""
    for _ in range(KEY_LENGTH):
        number, digit = divmod(number, 36)
        text = KEY_DIGITS[digit] + text
    return text


def _set_comment(cur: Any, oid: int, description: Description) -> None:
    comment = description.comment()
    # COMMENT takes no bind parameters: the comment is built of digits, letters and
    # percent-encoded values only (checked here), and is run without parameters.
    if not _OWN_COMMENT.fullmatch(comment):
        raise ValueError(f"Not a comment files_app writes: {comment!r}")
    cur.execute(f"COMMENT ON LARGE OBJECT {oid:d} IS '{comment}'")


def create_described(
    using: str,
    *,
    unadopted: bool = False,
    name: str | None = None,
    content_type: str | None = None,
) -> tuple[int, Description]:
    """Create an empty large object owned by files_app; return its OID and its description.

    ``unadopted`` marks it as an upload's that no row has adopted yet (see :func:`adopt`);
    ``name`` and ``content_type`` are recorded with it.
    """
    with cursor(using) as cur:
        # The database's clock, as the sweeper's cutoff (one clock, however many app
        # servers), in whole milliseconds rounded down: never later than the creation.
        cur.execute(
            "SELECT lo_create(0), floor(extract(epoch FROM clock_timestamp()) * 1000)::int8"
        )
        oid, millis = (int(value) for value in cur.fetchone())
        description = Description(millis, new_key(), name or None, content_type or None, unadopted)
        _set_comment(cur, oid, description)
    return oid, description


def create(using: str, *, unadopted: bool = False) -> int:
    """Create an empty large object owned by files_app and return its OID
    (:func:`create_described`)."""
    return create_described(using, unadopted=unadopted)[0]


def describe(oid: int, using: str) -> Description | None:
    """Return what files_app's comment says of the object (an empty Description for an
    object files_app did not create), or None if there is no such object."""
    with cursor(using) as cur:
        cur.execute(
            "SELECT d.description FROM pg_catalog.pg_largeobject_metadata m "
            "LEFT JOIN pg_catalog.pg_description d ON d.objoid = m.oid "
            "AND d.classoid = 'pg_catalog.pg_largeobject'::regclass AND d.objsubid = 0 "
            "WHERE m.oid = %s::oid",
            (oid,),
        )
        row = cur.fetchone()
    return None if row is None else Description.parse(row[0])


def adopt(
    oid: int, using: str, *, name: str | None = None, content_type: str | None = None
) -> Description | None:
    """Take the "unadopted" mark off an object :func:`create` made for an upload, and
    record ``name`` and ``content_type`` (when given) with it; return its description, or
    None for an object files_app did not create (left as it is).

    Transactional like any statement: if the caller's transaction rolls back, the object
    is unadopted again, and the sweeper frees it.
    """
    described = describe(oid, using)
    if described is None:
        raise FileNotFoundError(f"Large object {oid} does not exist.")
    if described.created_ms is None:
        return None
    adopted = replace(
        described,
        name=name or described.name,
        content_type=content_type or described.content_type,
        unadopted=False,
    )
    if adopted != described:
        with cursor(using) as cur:
            _set_comment(cur, oid, adopted)
    return adopted


def unlink_unadopted(oid: int, using: str) -> bool:
    """Unlink the object if it still carries the "unadopted" mark as this connection sees
    it; return whether it did."""
    with cursor(using) as cur:
        cur.execute(
            "SELECT pg_catalog.lo_unlink(d.objoid) FROM pg_catalog.pg_description d "
            "WHERE d.objoid = %s::oid AND d.classoid = 'pg_catalog.pg_largeobject'::regclass "
            "AND d.objsubid = 0 AND d.description LIKE %s",
            (oid, f"{OWNER_TAG} % {UNADOPTED}"),
        )
        return cur.fetchone() is not None


def write(oid: int, offset: int, data: bytes | memoryview, using: str) -> None:
    """Write ``data`` into the large object at ``offset``."""
    connection = _check_vendor(using)
    if not _is_psycopg3(connection) and connection.in_atomic_block:
        # psycopg2 can only send bytea as an escaped text literal (slow, and several
        # copies in memory); inside a transaction its binary lo_write is available.
        _write_psycopg2(connection, oid, offset, data)
        return
    with cursor(using, binary=True) as cur:
        if _is_psycopg3(connection):
            cur.execute("SELECT lo_put(%s::oid, %s::int8, %b)", (oid, offset, data))
        else:
            cur.execute("SELECT lo_put(%s::oid, %s::int8, %s)", (oid, offset, data))


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
    with cursor(using, binary=True) as cur:
        cur.execute(READ_SQL, (oid, offset, length))
        return bytes(cur.fetchone()[0])


def read_with_size(oid: int, offset: int, length: int, using: str) -> tuple[bytes, int]:
    """Return up to ``length`` bytes from ``offset``, and the object's size: one query."""
    with cursor(using, binary=True) as cur:
        cur.execute(
            "SELECT lo_get(%s::oid, %s::int8, %s::int4), lo_lseek64(fd, 0, 2), lo_close(fd) "
            "FROM (SELECT lo_open(%s::oid, %s) AS fd) s",
            (oid, offset, length, oid, INV_READ),
        )
        row = cur.fetchone()
        return bytes(row[0]), int(row[1])


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
    conn = pipeline.connection_for(connection) if ahead >= 1 else None
    if conn is None:
        for offset, length in itertools.chain([first], pending):
            yield read(oid, offset, length, using)
        return
    sql = READ_SQL
    inflight: deque[Any] = deque()
    upcoming: tuple[int, int] | None = first
    with (
        _missing_is_file_not_found(),
        connection.wrap_database_errors,
        conn.pipeline() as mode,
    ):
        try:
            while upcoming is not None or inflight:
                while upcoming is not None and len(inflight) <= ahead:
                    cur = _wrapped(connection, conn)
                    cur.execute(sql, (oid, *upcoming))
                    pipeline.end_statement(conn, mode)
                    inflight.append(cur)
                    upcoming = next(pending, None)
                cur = inflight.popleft()
                row = cur.fetchone()
                cur.close()
                yield bytes(row[0])
        finally:
            for cur in inflight:
                cur.close()


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
        connection = _check_vendor(using)
        conn = pipeline.connection_for(connection)
        if conn is not None:
            self._conn = conn
            self._mode = conn.pipeline()
            self._pipeline = self._mode.__enter__()
            self._cursor = _wrapped(connection, conn)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self._mode is None:
            write(self.oid, offset, data, self.using)
            return
        with _missing_is_file_not_found(), connections[self.using].wrap_database_errors:
            self._cursor.execute("SELECT lo_put(%s::oid, %s::int8, %b)", (self.oid, offset, data))
            pipeline.end_statement(self._conn, self._pipeline)

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


def size_sql(oid: str) -> str:
    """Return an SQL expression for the size of the large object ``oid`` (an SQL expression).

    lo_lseek64 needs a descriptor; one opened in a statement lives as long as its
    transaction, so it is closed at once for callers inside a long transaction.
    """
    return (
        "(SELECT x.size FROM (SELECT pg_catalog.lo_lseek64(o.fd, 0, 2) AS size, "
        "pg_catalog.lo_close(o.fd) FROM "
        f"(SELECT pg_catalog.lo_open({oid}, {INV_READ}) AS fd) o) x)"
    )


def size(oid: int, using: str) -> int:
    """Return the size of the large object in bytes."""
    with cursor(using) as cur:
        cur.execute(f"SELECT {size_sql('%s::oid')}", (oid,))
        return int(cur.fetchone()[0])


def exists(oid: int, using: str) -> bool:
    """Return whether the large object exists."""
    # pg_largeobject_metadata, not pg_largeobject: an empty object has no data pages, and
    # pg_largeobject is unreadable to ordinary roles.
    with cursor(using) as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s::oid)", (oid,)
        )
        return bool(cur.fetchone()[0])


def unlink(oid: int, using: str) -> bool:
    """Delete the large object; return False if it did not exist."""
    with cursor(using) as cur:
        cur.execute(
            "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = %s::oid", (oid,)
        )
        return cur.fetchone() is not None


def unlink_many(oids: list[int], using: str, *, dry_run: bool = False) -> tuple[int, int]:
    """Unlink ``oids`` in one statement (unless ``dry_run``); return how many, and bytes.

    Objects already gone are skipped.
    """
    unlinked = "0" if dry_run else "count(pg_catalog.lo_unlink(s.oid))"
    with transaction.atomic(using=using), cursor(using) as cur:
        # Each object's size is read (in the CTE's row) before it is unlinked.
        cur.execute(
            f"WITH s AS MATERIALIZED (SELECT m.oid, {size_sql('m.oid')} AS size "
            "FROM unnest(%s::oid[]) AS q(oid) "
            "JOIN pg_catalog.pg_largeobject_metadata m ON m.oid = q.oid) "
            f"SELECT {unlinked}, coalesce(sum(s.size), 0) FROM s",
            [oids],
        )
        freed, total = cur.fetchone()
    return int(freed), int(total)


def unlink_unreferenced(oid: int, using: str) -> bool:
    """Delete the large object unless a reference column holds it; return whether it did.

    The columns are those of ``files_app_lo_referenced()``, which ``migrate`` installs: every
    ``LargeObjectField`` (their rows free the object through the unlink trigger when the
    last of them lets go) and the resumable uploads in progress. On a database where
    files_app was never migrated there is no such function, and the object is unlinked.
    """
    referenced = referenced_function(using)
    condition = f" AND NOT {referenced}(m.oid)" if referenced else ""
    with cursor(using) as cur:
        cur.execute(
            "SELECT pg_catalog.lo_unlink(m.oid) FROM pg_catalog.pg_largeobject_metadata m "
            f"WHERE m.oid = %s::oid{condition}",
            (oid,),
        )
        return cur.fetchone() is not None


# Databases (alias, name, host, port) known to have files_app_lo_referenced(): it is only
# ever replaced, never dropped, so a positive answer is kept.
_withreferenced_function: set[tuple[str, ...]] = set()


def referenced_function(using: str) -> str | None:
    """Return the name of ``files_app_lo_referenced`` if it is installed on ``using``."""
    settings = connections[using].settings_dict
    key = (using, *(str(settings.get(name)) for name in ("NAME", "HOST", "PORT")))
    if key not in _withreferenced_function:
        with cursor(using) as cur:
            cur.execute("SELECT to_regproc(%s) IS NOT NULL", (REFERENCED_FUNCTION,))
            if not cur.fetchone()[0]:
                return None
        _withreferenced_function.add(key)
    return REFERENCED_FUNCTION
