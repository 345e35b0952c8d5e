"""A bare WSGI application (no Django) answering 64 KiB range requests from large objects.

Not a peer anyone would deploy: it is the ceiling of a Python WSGI server on this machine for
the concurrent-range test. Per request it does what files_app's view does at the least (find
the public file's row by UUID, one ``lo_get`` with binary results on a per-thread psycopg 3
connection) with none of Django's request/response cycle, and it only understands
``Range: bytes=a-b``. ``bench/run.py`` serves it under the same gunicorn settings as files_app.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

_local = threading.local()
_RANGE = re.compile(r"bytes=(\d+)-(\d+)$")


def _connection() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return conn


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    parts = environ.get("PATH_INFO", "").split("/")
    match = _RANGE.match(environ.get("HTTP_RANGE", ""))
    if len(parts) < 3 or match is None:
        start_response("400 Bad Request", [("Content-Length", "0")])
        return []
    with _connection().cursor(binary=True) as cursor:
        row = cursor.execute(
            "SELECT file, size FROM files_app_storedfile WHERE uuid = %s AND public",
            (parts[2],),
        ).fetchone()
        if row is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return []
        oid, size = int(row[0]), int(row[1])
        start, end = int(match[1]), min(int(match[2]), size - 1)
        result = cursor.execute(
            "SELECT lo_get(%s::oid, %s::int8, %s::int4)", (oid, start, end - start + 1)
        ).fetchone()
        assert result is not None
        data = result[0]
    start_response(
        "206 Partial Content",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data))),
            ("Content-Range", f"bytes {start}-{end}/{size}"),
        ],
    )
    return [bytes(data)]
