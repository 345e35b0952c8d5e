"""Settings of the benchmark servers: the test settings plus the knobs the benchmark turns.

``BENCH_CHUNK_SIZE`` sets ``FILES_APP_CHUNK_SIZE`` (the tests use 64 KiB; the default here is
files_app's own 1 MiB), ``BENCH_CONN_MAX_AGE`` Django's ``CONN_MAX_AGE``, ``BENCH_POOL=1``
Django's psycopg 3 connection pool instead, ``BENCH_DISK_DIR`` the directory that
``/disk/<name>`` serves with Django's ``FileResponse`` and ``BENCH_UPLOAD_TEMP_DIR`` Django's
``FILE_UPLOAD_TEMP_DIR`` (watched for temporary files), ``BENCH_LEAN=1`` puts files_app's
``FileServingMiddleware`` first (the lean path, as minicloud does). ``DATABASE_URL`` must be
set: the benchmark starts its own PostgreSQL.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, MIDDLEWARE

ROOT_URLCONF = "bench.urls"
FILES_APP_CHUNK_SIZE = int(os.environ.get("BENCH_CHUNK_SIZE", str(1024 * 1024)))
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
if os.environ.get("BENCH_POOL") == "1":  # Django's psycopg 3 pool, as minicloud uses
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 16}
BENCH_DISK_DIR = os.environ.get("BENCH_DISK_DIR", "")
FILE_UPLOAD_TEMP_DIR = os.environ.get("BENCH_UPLOAD_TEMP_DIR") or None
if os.environ.get("BENCH_LEAN") == "1":
    MIDDLEWARE = ["files_app.middleware.FileServingMiddleware", *MIDDLEWARE]
