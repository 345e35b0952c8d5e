"""The large-object SQL layer, against the real database, on both drivers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from unittest import mock

import pytest
from django.db import NotSupportedError, connection, connections, transaction

from files_app import largeobjects, maintenance
from tests.polling import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DB = "default"


def test_create_write_read_round_trip() -> None:
    oid = largeobjects.create(DB)
    largeobjects.write(oid, 0, b"hello ", DB)
    largeobjects.write(oid, 6, memoryview(b"world"), DB)
    assert largeobjects.read(oid, 0, 100, DB) == b"hello world"
    assert largeobjects.read(oid, 6, 3, DB) == b"wor"
    assert largeobjects.size(oid, DB) == 11
    largeobjects.unlink(oid, DB)


def test_read_past_the_end_returns_short_or_empty() -> None:
    oid = largeobjects.create(DB)
    largeobjects.write(oid, 0, b"abc", DB)
    assert largeobjects.read(oid, 1, 10, DB) == b"bc"
    assert largeobjects.read(oid, 3, 10, DB) == b""
    assert largeobjects.read(oid, 10**10, 10, DB) == b""
    largeobjects.unlink(oid, DB)


def test_empty_object_exists_with_size_zero() -> None:
    # An empty object has no rows in pg_largeobject: existence must come from the metadata.
    oid = largeobjects.create(DB)
    assert largeobjects.exists(oid, DB)
    assert largeobjects.size(oid, DB) == 0
    assert largeobjects.read(oid, 0, 10, DB) == b""
    largeobjects.unlink(oid, DB)


def test_unlink_reports_whether_the_object_existed() -> None:
    oid = largeobjects.create(DB)
    assert largeobjects.unlink(oid, DB) is True
    assert largeobjects.unlink(oid, DB) is False
    assert not largeobjects.exists(oid, DB)


@pytest.mark.parametrize(
    "operation",
    [
        lambda oid: largeobjects.read(oid, 0, 10, DB),
        lambda oid: largeobjects.size(oid, DB),
        lambda oid: largeobjects.write(oid, 0, b"x", DB),
    ],
    ids=["read", "size", "write"],
)
def test_missing_object_is_file_not_found(operation: Callable[[int], object]) -> None:
    oid = largeobjects.create(DB)
    largeobjects.unlink(oid, DB)
    with pytest.raises(FileNotFoundError):
        operation(oid)
    assert largeobjects.describe(oid, DB) is None


def test_offsets_beyond_4_gib_work() -> None:
    # Sparse write: pages never written read back as zeros, so this costs a few bytes.
    oid = largeobjects.create(DB)
    offset = 4 * 2**30 + 12345
    largeobjects.write(oid, offset, b"far away", DB)
    assert largeobjects.size(oid, DB) == offset + 8
    assert largeobjects.read(oid, offset - 2, 12, DB) == b"\0\0far away"
    assert largeobjects.read(oid, 2**31 + 5, 4, DB) == b"\0\0\0\0"
    largeobjects.unlink(oid, DB)


def test_oids_above_2_31_work() -> None:
    big = 2**31 + 7919
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(%s::oid)", [big])
        assert cursor.fetchone()[0] == big
    largeobjects.write(big, 0, b"big oid", DB)
    assert largeobjects.read(big, 0, 7, DB) == b"big oid"
    assert largeobjects.size(big, DB) == 7
    assert largeobjects.exists(big, DB)
    assert largeobjects.unlink(big, DB)


def test_created_objects_are_marked_as_ours_with_their_creation_time() -> None:

    before = time.time()
    oid = largeobjects.create(DB)
    described = largeobjects.describe(oid, DB)
    assert described is not None and described.key is not None
    created = described.created
    assert created is not None
    assert before - 1 <= created <= time.time() + 1
    assert maintenance.count(DB, owned=True) >= 1
    largeobjects.unlink(oid, DB)


def test_foreign_objects_have_no_creation_time() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT lo_create(0)")
        oid = cursor.fetchone()[0]
    assert largeobjects.describe(oid, DB) == largeobjects.Description()  # nothing recorded
    largeobjects.unlink(oid, DB)


def test_creation_rolls_back_with_its_transaction(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    with pytest.raises(RuntimeError), transaction.atomic():
        oid = largeobjects.create(DB)
        largeobjects.write(oid, 0, b"x" * 1000, DB)
        raise RuntimeError("boom")
    assert lo_count() == before


def test_non_postgresql_database_is_not_supported() -> None:
    with (
        mock.patch.object(connection, "vendor", "sqlite"),
        pytest.raises(NotSupportedError, match="need PostgreSQL"),
    ):
        largeobjects.create(DB)


def _pattern(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def _assert_out_of_pipeline_mode() -> None:
    pgconn = getattr(connection.connection, "pgconn", None)
    if pgconn is not None:  # psycopg 3; psycopg2 has no pipeline mode
        assert pgconn.pipeline_status == 0, "the connection was left in pipeline mode"


def test_read_pieces_returns_each_piece_in_order() -> None:
    data = _pattern(300_000)
    oid = largeobjects.create(DB)
    largeobjects.write(oid, 0, data, DB)
    pieces = [(0, 100), (250_000, 60_000), (5, 0), (299_990, 10), (100, 1)]
    for ahead in (0, 1, 3):
        got = list(largeobjects.read_pieces(oid, pieces, DB, ahead=ahead))
        assert got == [data[o : o + n] for o, n in pieces]
        lazily = largeobjects.read_pieces(oid, (piece for piece in pieces), DB, ahead=ahead)
        assert list(lazily) == got
    assert list(largeobjects.read_pieces(oid, [], DB)) == []
    largeobjects.unlink(oid, DB)


def test_read_pieces_stopped_early_leaves_the_connection_usable() -> None:
    oid = largeobjects.create(DB)
    largeobjects.write(oid, 0, b"x" * 10_000, DB)
    reads = largeobjects.read_pieces(oid, [(i * 100, 100) for i in range(100)], DB, ahead=4)
    assert next(reads) == b"x" * 100
    reads.close()  # a client that went away
    _assert_out_of_pipeline_mode()
    assert largeobjects.read(oid, 0, 3, DB) == b"xxx"
    largeobjects.unlink(oid, DB)


def test_read_pieces_of_a_missing_object_is_file_not_found() -> None:
    oid = largeobjects.create(DB)
    largeobjects.unlink(oid, DB)
    with pytest.raises(FileNotFoundError):
        list(largeobjects.read_pieces(oid, [(0, 10), (10, 10)], DB))
    _assert_out_of_pipeline_mode()
    assert not largeobjects.exists(oid, DB)  # and the connection answers queries


def test_writer_writes_every_piece() -> None:
    data = _pattern(500_000)
    oid = largeobjects.create(DB)
    writer = largeobjects.Writer(oid, DB)
    for offset in range(0, len(data), 64 * 1024):
        writer.write(offset, data[offset : offset + 64 * 1024])
    writer.close()
    writer.close()  # idempotent
    assert largeobjects.read(oid, 0, len(data) + 1, DB) == data
    largeobjects.unlink(oid, DB)


def test_writer_reports_a_missing_object_by_close_at_the_latest() -> None:
    oid = largeobjects.create(DB)
    largeobjects.unlink(oid, DB)
    writer = largeobjects.Writer(oid, DB)
    with pytest.raises(FileNotFoundError):
        try:
            writer.write(0, b"lost")
            writer.close()
        finally:
            writer.abort()  # what callers do on an error; a no-op after close()
    _assert_out_of_pipeline_mode()
    assert not largeobjects.exists(oid, DB)  # and the connection answers queries


def test_writer_abort_ignores_errors_and_frees_the_connection() -> None:
    oid = largeobjects.create(DB)
    largeobjects.unlink(oid, DB)
    writer = largeobjects.Writer(oid, DB)
    with contextlib.suppress(FileNotFoundError):
        writer.write(0, b"lost")  # psycopg2 fails here, psycopg 3 later
    writer.abort()
    _assert_out_of_pipeline_mode()
    assert not largeobjects.exists(oid, DB)


def test_writer_inside_a_transaction_rolls_back_with_it(lo_count: Callable[[], int]) -> None:
    before = lo_count()
    with pytest.raises(RuntimeError), transaction.atomic():
        oid = largeobjects.create(DB)
        writer = largeobjects.Writer(oid, DB)
        writer.write(0, b"abc")
        writer.close()
        assert largeobjects.read(oid, 0, 10, DB) == b"abc"
        raise RuntimeError("roll back")
    assert lo_count() == before


def _backend_state(pid: int) -> str:
    # From a second connection: the test's own one is the connection being watched.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = cursor.fetchone()
    finally:
        other.close()
    assert row is not None
    return str(row[0])


def test_reading_and_writing_piece_by_piece_holds_no_transaction_open() -> None:
    # Between pieces, a slow client must not keep a transaction (and its snapshot) open.
    oid = largeobjects.create(DB)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        writer = largeobjects.Writer(oid, DB)
        writer.write(0, b"a" * 1000)
        writer.write(1000, b"b" * 1000)
        # The writes finish; their results are not fetched yet, and no transaction waits.
        wait_until(lambda: _backend_state(pid) == "idle", 5, "the writer's backend not idle")
        writer.close()
        reads = largeobjects.read_pieces(oid, [(0, 10), (10, 10), (20, 10)], DB, ahead=1)
        assert next(reads) == b"a" * 10
        wait_until(lambda: _backend_state(pid) == "idle", 5, "the reader's backend not idle")
        assert list(reads) == [b"a" * 10, b"a" * 10]
    finally:
        largeobjects.unlink(oid, DB)
