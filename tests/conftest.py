"""Shared fixtures: the database is a real PostgreSQL (see tests/settings.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

from files_app import lo


@pytest.fixture
def lo_count() -> Callable[[], int]:
    """Return a function counting the large objects in the test database."""

    def count() -> int:
        return lo.count("default")

    return count


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
