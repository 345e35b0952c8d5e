"""files_app's pytest plugin, for projects tested with pytest-django.

Registered as a ``pytest11`` entry point, so pytest loads it when files_app is installed
(in files_app's own repository, ``tests/conftest.py`` loads it). It does two things:

- After every flush of a test database (the end of each ``transactional_db`` or
  ``TransactionTestCase`` test, and ``migrate`` when pytest-django creates or reuses the
  database), it frees the large objects that no row references any more: ``TRUNCATE``
  fires no row trigger, so the objects of the emptied rows would stay behind and, with
  ``--reuse-db``, add up. Turn it off with ``files_app_free_after_flush = false`` in the
  pytest configuration.
- The ``no_large_object_leaks`` fixture fails a test that leaves behind a large object no
  row references (a file stored with ``Storage.save()`` and never deleted, say), and frees
  it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

FREE_AFTER_FLUSH = "files_app_free_after_flush"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        FREE_AFTER_FLUSH,
        "files_app: free the large objects a flush of a test database orphans.",
        type="bool",  # type: ignore[maybe-unrecognized-str-typeform]
        default=True,
    )


def _free_after_flush(*, using: str, **kwargs: Any) -> None:
    from files_app.testing import free_unreferenced_large_objects

    if _is_postgresql(using):
        free_unreferenced_large_objects(using)


def _is_postgresql(using: str) -> bool:
    from django.db import connections

    return bool(connections[using].vendor == "postgresql")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not session.config.getini(FREE_AFTER_FLUSH):
        return
    try:
        from django.apps import apps
        from django.db.models.signals import post_migrate

        files_app = apps.get_app_config("files_app")
    except Exception:  # noqa: BLE001 (no Django set up, or files_app not installed: nothing to do)
        return
    # Sent once per app after migrate and after flush: files_app's own is enough.
    post_migrate.connect(
        _free_after_flush, sender=files_app, dispatch_uid="files_app.free_after_flush"
    )


@pytest.fixture
def no_large_object_leaks(db: None, django_db_blocker: Any) -> Iterator[None]:
    """Fail the test if it leaves a large object that no row references (and free it).

    It uses the database (``db``, or ``transactional_db`` when the test asks for it), which
    is set up before it and torn down after it: the test's rows are still there when it
    looks.
    """
    from files_app.testing import unreferenced_large_objects

    with django_db_blocker.unblock():
        before = set(unreferenced_large_objects())
    yield
    from files_app import largeobjects
    from files_app.conf import app_settings

    with django_db_blocker.unblock():
        leaked = [oid for oid in unreferenced_large_objects() if oid not in before]
        if leaked:
            largeobjects.unlink_many(leaked, app_settings.DATABASE)
    if leaked:
        pytest.fail(
            f"{len(leaked)} large object(s) left behind that no row references "
            f"(OIDs {leaked[:10]}): delete what the test stores."
        )
