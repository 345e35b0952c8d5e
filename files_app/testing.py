"""Helpers for the tests of a project that keeps files with files_app.

Django's ``TransactionTestCase`` (pytest-django's ``transactional_db``) empties the tables
with ``TRUNCATE`` after each test, which fires no row trigger: the large objects of the rows
it empties stay behind, and with ``--reuse-db`` they add up from run to run. files_app's
pytest plugin (:mod:`files_app.pytest_plugin`, loaded by pytest when files_app is installed)
frees them after each flush with :func:`free_unreferenced_large_objects`, and its
``no_large_object_leaks`` fixture fails a test that leaves an object no row references.
Without pytest, call :func:`free_unreferenced_large_objects` in ``tearDown()``.
"""

from __future__ import annotations

from files_app import largeobjects, maintenance
from files_app.conf import app_settings

__all__ = ["free_unreferenced_large_objects", "unreferenced_large_objects"]


def unreferenced_large_objects(using: str | None = None) -> list[int]:
    """Return the OIDs of files_app's large objects in ``using`` (``FILES_APP_DATABASE``
    by default) that no row references, however new: in a test database, the leftovers."""
    found: list[int] = []
    for window in maintenance.unreferenced(using or app_settings.DATABASE, grace=0):
        found += window
    return found


def free_unreferenced_large_objects(using: str | None = None) -> int:
    """Unlink files_app's large objects in ``using`` that no row references; return how many.

    For test databases only: in a real one, an upload being saved right now is such an
    object for a moment (``files_sweep`` waits ``FILES_APP_SWEEP_GRACE`` for that reason).
    """
    using = using or app_settings.DATABASE
    oids = unreferenced_large_objects(using)
    return largeobjects.unlink_many(oids, using)[0] if oids else 0
