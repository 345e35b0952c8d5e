"""System checks: misconfiguration is an error with an id and a hint."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import connection
from django.test import override_settings

from files_app.checks import check_database, check_settings


def test_default_settings_pass() -> None:
    assert check_settings() == []
    assert check_database() == []


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("FILES_APP_CHUNK_SIZE", 0, "files_app.E001"),
        ("FILES_APP_CHUNK_SIZE", "1MB", "files_app.E001"),
        ("FILES_APP_CHUNK_SIZE", 2**31, "files_app.E001"),
        ("FILES_APP_CHUNK_SIZE", True, "files_app.E001"),
        ("FILES_APP_MAX_RANGES", 0, "files_app.E002"),
        ("FILES_APP_MAX_RANGES", None, "files_app.E002"),
        ("FILES_APP_SWEEP_GRACE", -1, "files_app.E003"),
        ("FILES_APP_SWEEP_GRACE", "1 day", "files_app.E003"),
    ],
)
def test_bad_settings(setting: str, value: object, check_id: str) -> None:
    with override_settings(**{setting: value}):
        errors = check_settings()
    assert [e.id for e in errors] == [check_id]
    assert repr(value) in errors[0].msg
    assert errors[0].hint


def test_unknown_database_alias() -> None:
    with override_settings(FILES_APP_DATABASE="nope"):
        errors = check_database()
    assert [e.id for e in errors] == ["files_app.E201"]
    assert "'nope'" in errors[0].msg


def test_non_postgresql_database() -> None:
    with mock.patch.object(connection, "vendor", "mysql"):
        errors = check_database()
    assert [e.id for e in errors] == ["files_app.E202"]
    assert "'mysql'" in errors[0].msg
    assert "postgresql" in (errors[0].hint or "")
