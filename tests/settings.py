"""Settings for the test suite: files_app plus a third-party-style test app.

The database is ``DATABASE_URL`` if set, or else a throwaway PostgreSQL server that a
session fixture (tests/conftest.py) starts for the test session; importing these settings
starts nothing. ``FILES_APP_DRIVER=psycopg2`` hides psycopg 3 so that Django falls back to
psycopg2.
"""

from __future__ import annotations

import os
import sys

import dj_database_url

if os.environ.get("FILES_APP_DRIVER") == "psycopg2":
    sys.modules["psycopg"] = None  # type: ignore[assignment]

SECRET_KEY = "files-app-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "files_app",
    "tests.testapp",
]

MIDDLEWARE = [
    # On in the tests: file responses must come through it uncompressed (range case H07).
    "django.middleware.gzip.GZipMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

# The real-server tests also run the range cases with files_app's lean path in front.
if os.environ.get("FILES_APP_TEST_LEAN") == "1":
    MIDDLEWARE.insert(0, "files_app.middleware.FileServingMiddleware")

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# Without DATABASE_URL, tests/conftest.py fills in the throwaway server's address.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/files_app"
    )
}

STORAGES = {
    "default": {"BACKEND": "files_app.storage.LargeObjectStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
FILES_APP_CHUNK_SIZE = 64 * 1024
