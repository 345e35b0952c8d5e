"""files_app.pipeline: psycopg 3's private pipeline API behind one adapter, with a fallback;
and every query files_app makes goes through Django's cursor wrappers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from files_app import largeobjects, pipeline
from files_app.storage import LargeObjectStorage

pytestmark = pytest.mark.django_db(transaction=True)

DATA = bytes(range(256)) * 1200  # 300 KiB: several 64 KiB chunks


def test_psycopg_still_has_the_private_api_files_app_uses(driver: str) -> None:
    # If a psycopg upgrade removes Pipeline._enqueue_sync or _communicate_gen, this fails
    # (files_app would still work, one statement at a time, but slower).
    assert pipeline.supported() is (driver == "psycopg")


def test_without_the_private_api_reads_and_writes_still_work(
    monkeypatch: pytest.MonkeyPatch, lo_count: Callable[[], int]
) -> None:
    monkeypatch.setattr(pipeline, "supported", lambda: False)
    before = lo_count()
    storage = LargeObjectStorage()
    name = storage.save("f.bin", ContentFile(DATA))
    with storage.open(name) as opened:
        pieces = list(opened.raw.read_pieces([(0, 1000), (65536, 70000), (len(DATA) - 5, 5)]))
    assert pieces == [DATA[:1000], DATA[65536:135536], DATA[-5:]]
    storage.delete(name)
    assert lo_count() == before


def _everything(storage: LargeObjectStorage) -> None:
    name = storage.save("f.bin", ContentFile(DATA))
    with storage.open(name) as opened:
        assert opened.read() == DATA
        assert b"".join(opened.raw.read_pieces([(0, 70000), (70000, len(DATA))])) == DATA
        assert opened.raw.read_first(0, 10) == DATA[:10]
    assert storage.size(name) == len(DATA)
    assert storage.exists(name)
    storage.get_created_time(name)
    storage.delete(name)


def test_every_query_is_visible_to_execute_wrappers(driver: str) -> None:
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        _everything(LargeObjectStorage())
    text = "\n".join(seen)
    for function in ("lo_create", "lo_get", "lo_lseek64", "pg_largeobject_metadata", "lo_unlink"):
        assert function in text, function
    if driver == "psycopg":
        # Pipelined writes and binary reads too. (psycopg2 writes inside a transaction with
        # its client-side lo_write, which sends no SQL: the README says so.)
        assert text.count("lo_put") == -(-len(DATA) // 65536)
        assert text.count("lo_get") >= 3


def test_queries_are_logged_in_debug_mode() -> None:
    with CaptureQueriesContext(connection) as captured:
        _everything(LargeObjectStorage())
    logged = "\n".join(query["sql"] for query in captured.captured_queries)
    assert "lo_get" in logged and "lo_create" in logged


def test_lo_cursor_maps_a_missing_object_to_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        largeobjects.read(4_000_000_000, 0, 10, "default")
