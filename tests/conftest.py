"""Shared fixtures: the database is a real PostgreSQL (see tests/settings.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import dj_database_url
import pytest
from django.conf import settings
from django.db import connection

from files_app import largeobjects, maintenance

if TYPE_CHECKING:
    from files_app.models import StoredFile


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Start a throwaway PostgreSQL for the session unless DATABASE_URL names a server."""
    if os.environ.get("DATABASE_URL"):
        return
    from minicloud.pgserver import temporary_server

    _server, url = temporary_server("files_app")
    parsed = dj_database_url.parse(url)
    # In place: Django's connection for "default" holds this very dictionary.
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        settings.DATABASES["default"][key] = parsed[key]


@pytest.fixture(params=["views", "lean path"])
def door(request: pytest.FixtureRequest, settings: Any) -> str:
    """Run a test through the views and through the lean path (FileServingMiddleware
    first): both must give the same answers."""
    from tests.lean import LEAN

    if request.param == "lean path":
        settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE]
    return str(request.param)


@pytest.fixture
def lean(settings: Any) -> None:
    """Turn the lean path on: FileServingMiddleware first."""
    from tests.lean import LEAN

    settings.MIDDLEWARE = [LEAN, *settings.MIDDLEWARE]


@pytest.fixture
def lean_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the targets of the answers the lean path planned (tests.lean)."""
    from tests.lean import spy_lean_answers

    return spy_lean_answers(monkeypatch)


@pytest.fixture
def lo_count() -> Callable[[], int]:
    """Return a function counting the large objects in the test database."""

    def count() -> int:
        return maintenance.count("default")

    return count


@pytest.fixture
def store() -> Iterator[Callable[..., StoredFile]]:
    """Return a factory saving a (public) StoredFile from bytes; delete the rows afterwards."""
    from django.core.files.base import ContentFile

    from files_app.models import StoredFile

    created: list[int] = []

    def make(data: bytes = b"hello world\n", name: str = "hello.txt", **kwargs: Any) -> StoredFile:
        kwargs.setdefault("public", True)
        stored = StoredFile(file=ContentFile(data, name="upload"), name=name, **kwargs)
        stored.save()
        created.append(stored.pk)
        return stored

    yield make
    StoredFile.objects.filter(pk__in=created).delete()


@pytest.fixture
def driver() -> str:
    """Return the name of the database driver in use."""
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    return "psycopg" if is_psycopg3 else "psycopg2"


@pytest.fixture(autouse=True, scope="session")
def _report_driver(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> None:
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        connection.ensure_connection()


def _unreferenced() -> list[int]:
    return [oid for found in maintenance.unreferenced("default", grace=-60) for oid in found]


@pytest.fixture(autouse=True)
def _no_orphaned_large_objects(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a transactional test that leaves unreferenced large objects behind.

    Between tests, pytest-django empties the tables with TRUNCATE, which bypasses the unlink
    trigger (as it would in production: that is what files_sweep is for); the objects that
    leaves are swept before the next test starts.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    django_db_blocker = request.getfixturevalue("django_db_blocker")
    request.getfixturevalue("transactional_db")
    with django_db_blocker.unblock():
        for oid in _unreferenced():
            largeobjects.unlink(oid, "default")
    yield
    with django_db_blocker.unblock():
        leftover = _unreferenced()
    assert not leftover, f"large objects left unreferenced by this test: {leftover}"
