"""Settings for the minicloud demo project.

The database is ``DATABASE_URL``. ``manage.py`` (and so ``./run``) sets it, when it is not
set, to an embedded PostgreSQL server whose data lives in ``.pgdata/``, started on first
use and stopped when the command that started it exits (minicloud/pgserver.py). Importing
these settings starts nothing.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _secret_key() -> str:
    # A stable key keeps sessions and share links valid across restarts and processes.
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    path = BASE_DIR / ".secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def _flag(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes")


SECRET_KEY = _secret_key()
# Off unless asked for: ./run (the development server) turns it on, a deployment does not.
DEBUG = _flag("MINICLOUD_DEBUG")
ALLOWED_HOSTS = os.environ.get("MINICLOUD_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

# Behind HTTPS (MINICLOUD_HTTPS=1): secure cookies, HSTS and a redirect from http://. Behind
# a TLS-terminating proxy, MINICLOUD_PROXY_SSL_HEADER=1 trusts its X-Forwarded-Proto.
if _flag("MINICLOUD_HTTPS"):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("MINICLOUD_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _flag("MINICLOUD_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = _flag("MINICLOUD_HSTS_PRELOAD")
if _flag("MINICLOUD_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if origins := os.environ.get("MINICLOUD_CSRF_TRUSTED_ORIGINS"):
    CSRF_TRUSTED_ORIGINS = origins.split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "files_app",
    "minicloud",
]

MIDDLEWARE = [
    # First: public files and share links are answered here, in one query, without the
    # rest (sessions, auth, CSRF, messages); under uvicorn, before Django's handler.
    "files_app.middleware.FileServingMiddleware",
    # A stopped database is a quick 503 with Retry-After, not a 500 or a debug page.
    "files_app.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "minicloud.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "minicloud.wsgi.application"
ASGI_APPLICATION = "minicloud.asgi.application"


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise ImproperlyConfigured(
            "DATABASE_URL is not set. Set it to a postgres:// URL, or run ./run or "
            "manage.py, which start the embedded PostgreSQL when it is not set."
        )
    if url.partition(":")[0].lower() not in ("postgres", "postgresql", "pgsql", "postgis"):
        raise ImproperlyConfigured(
            "DATABASE_URL must be a postgres:// URL: files_app keeps files in PostgreSQL "
            "large objects."
        )
    return url


DATABASES = {
    "default": dj_database_url.parse(
        _database_url(),
        conn_max_age=int(os.environ.get("MINICLOUD_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
# A server that does not answer fails a connection attempt in seconds, not minutes.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)


def _pool_available() -> bool:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return False
    return True


# A new PostgreSQL connection costs ~5 ms, more than serving a 64 KiB range. Reuse them:
# with psycopg 3, through Django's connection pool, which also works under ASGI (where
# CONN_MAX_AGE cannot help: every request runs in a new thread); with psycopg2, by keeping
# each thread's connection for MINICLOUD_CONN_MAX_AGE seconds. See bench/RESULTS.md.
if os.environ.get("MINICLOUD_DB_POOL", "1") != "0" and _pool_available():
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": int(os.environ.get("MINICLOUD_DB_POOL_SIZE", "16")),
        # How long a request waits for a connection before it is a 503: well under the
        # servers' timeouts. While PostgreSQL is down, the pool gives up reconnecting after
        # reconnect_timeout and the next request tries again at once, so service resumes
        # within seconds of its return (psycopg_pool's backoff would otherwise grow to
        # minutes).
        "timeout": float(os.environ.get("MINICLOUD_DB_POOL_TIMEOUT", "5")),
        "reconnect_timeout": 5.0,
    }

# Behind PgBouncer in transaction mode (MINICLOUD_PGBOUNCER=1), a session's state does not
# outlive its transaction: no server-side cursors (Django), no prepared statements
# (psycopg 3's automatic ones, and files_app's lean path: PgBouncer 1.22+ with libpq 17+
# could keep them). Everything else of files_app works unchanged (tests/reliability/
# test_pgbouncer.py); docs/deployment.md, "Scaling out".
if _flag("MINICLOUD_PGBOUNCER", default=False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    if importlib.util.find_spec("psycopg") is not None:  # Django's driver then
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
    FILES_APP_PREPARE = False

# Downloads from a hot standby (MINICLOUD_REPLICA_URL, a physical streaming replica of
# DATABASE_URL): files_app reads rows and large objects there and falls back to the primary
# for a file not replicated yet. Everything else (uploads, the admin, sessions) stays on the
# primary. docs/deployment.md, "Scaling out".
if replica_url := os.environ.get("MINICLOUD_REPLICA_URL", "").strip():
    DATABASES["replica"] = {
        **dj_database_url.parse(replica_url, conn_health_checks=True),
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        # A standby that does not answer: the primary serves instead, after 2 s at most.
        "OPTIONS": {**DATABASES["default"]["OPTIONS"], "connect_timeout": 2},
        "DISABLE_SERVER_SIDE_CURSORS": DATABASES["default"].get(
            "DISABLE_SERVER_SIDE_CURSORS", False
        ),
    }
    FILES_APP_DOWNLOAD_DATABASE = "replica"
    # How far behind the standby may be and still serve (seconds; "none": no bound), and
    # how long downloads keep away from it once it could not be reached.
    # docs/deployment.md, "Scaling out".
    if max_lag := os.environ.get("MINICLOUD_STANDBY_MAX_LAG", "").strip():
        FILES_APP_STANDBY_MAX_LAG = None if max_lag.lower() == "none" else float(max_lag)
    if retry := os.environ.get("MINICLOUD_STANDBY_RETRY", "").strip():
        FILES_APP_STANDBY_RETRY = float(retry)

STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "files_app.storage.LargeObjectStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Object storage that files_move can take files to ("manage.py files_move --to s3"):
# MINICLOUD_S3_BUCKET, and MINICLOUD_S3_ENDPOINT_URL for a service other than AWS. The
# credentials come from boto3's usual places (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
if bucket := os.environ.get("MINICLOUD_S3_BUCKET", "").strip():
    STORAGES["s3"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": os.environ.get("MINICLOUD_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("MINICLOUD_S3_REGION") or None,
            "location": os.environ.get("MINICLOUD_S3_PREFIX", ""),
        },
    }
    # MINICLOUD_S3_REDIRECT=<seconds>: downloads of files in the bucket are a redirect to
    # a presigned URL valid that long (the bucket serves the bytes); unset, Django proxies
    # them (a bucket private to the servers' network). docs/deployment.md, "Scaling out".
    if redirect := os.environ.get("MINICLOUD_S3_REDIRECT", "").strip():
        FILES_APP_REDIRECT_STORAGES = {"s3": int(redirect)}

# A file host keeps what its users delete and replace, for a while: minicloud turns on the
# trash and versions that files_app leaves off for projects that adopt it.
# MINICLOUD_TRASH_DAYS=<days>: deleted files wait that long in the admin's trash, restorable,
# before files_sweep deletes them (docs/using.md, "The trash"); unset: 30; 0: no trash.
FILES_APP_TRASH_DAYS = int(os.environ.get("MINICLOUD_TRASH_DAYS", "30") or 0)
# MINICLOUD_VERSIONS=<n>: replacing a file keeps its n latest earlier contents, listed on its
# admin page to download or restore (docs/using.md, "Versions"); unset: 5; 0: none kept.
FILES_APP_VERSIONS = int(os.environ.get("MINICLOUD_VERSIONS", "5") or 0)

# MINICLOUD_SIGNED_REDIRECT=1: a private file's URL answers its user with a redirect to a
# signed URL (served by the lean path, without the session); the address bar then shows a
# URL anyone holding it may use for an hour. docs/using.md, "Serving files".
FILES_APP_SIGNED_REDIRECT = _flag("MINICLOUD_SIGNED_REDIRECT")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads are streamed into large objects by files_app; keep Django's in-memory limit small.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# How long browsers and a caching proxy may keep a public file (seconds; files_app's default
# is 300): a file made private or deleted can be served from a cache that long.
if max_age := os.environ.get("MINICLOUD_PUBLIC_MAX_AGE"):
    FILES_APP_PUBLIC_MAX_AGE = int(max_age)
# The largest upload, in bytes (unset: no limit); match the proxy's client_max_body_size.
if limit := os.environ.get("MINICLOUD_MAX_UPLOAD_SIZE"):
    FILES_APP_MAX_UPLOAD_SIZE = int(limit)
# Quotas, in bytes (unset: none): MINICLOUD_USER_QUOTA, what each user may store (their
# files, versions and uploads in progress; the admin's "User quotas" sets one user's own),
# and MINICLOUD_TOTAL_QUOTA, what the database may hold (docs/using.md, "Quotas").
if quota := os.environ.get("MINICLOUD_USER_QUOTA"):
    FILES_APP_USER_QUOTA = int(quota)
if quota := os.environ.get("MINICLOUD_TOTAL_QUOTA"):
    FILES_APP_TOTAL_QUOTA = int(quota)
