"""System checks: misconfiguration is an error with an id and a hint."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import connection
from django.test import override_settings

from files_app.checks import check_database, check_settings


def test_default_settings_pass() -> None:
    assert check_settings() == []
    assert check_database(databases=["default"]) == []


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
        ("FILES_APP_PREPARE", "no", "files_app.E005"),
        ("FILES_APP_PREPARE", 0, "files_app.E005"),
        ("FILES_APP_PUBLIC_MAX_AGE", -1, "files_app.E006"),
        ("FILES_APP_PUBLIC_MAX_AGE", "5m", "files_app.E006"),
        ("FILES_APP_UPLOAD_EXPIRY", 0, "files_app.E007"),
        ("FILES_APP_UPLOAD_EXPIRY", True, "files_app.E007"),
        ("FILES_APP_DEDUPE", "yes", "files_app.E008"),
        ("FILES_APP_SIGNED_URL_EXPIRY", 0, "files_app.E011"),
        ("FILES_APP_SIGNED_URL_EXPIRY", "1h", "files_app.E011"),
        ("FILES_APP_REDIRECT_STORAGES", ["s3"], "files_app.E012"),
        ("FILES_APP_REDIRECT_STORAGES", {"nowhere": 60}, "files_app.E012"),
        ("FILES_APP_REDIRECT_STORAGES", {"default": 0}, "files_app.E012"),
        ("FILES_APP_REDIRECT_STORAGES", {"default": 8 * 86400}, "files_app.E012"),
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
        errors = check_database(databases=["default"])
    assert [e.id for e in errors] == ["files_app.E201"]
    assert "'nope'" in errors[0].msg


def test_unknown_download_database_alias() -> None:
    with override_settings(FILES_APP_DOWNLOAD_DATABASE="standby"):
        errors = check_database(databases=["default"])
    assert [e.id for e in errors] == ["files_app.E203"]
    assert "'standby'" in errors[0].msg
    with override_settings(FILES_APP_DOWNLOAD_DATABASE="default"):
        assert check_database(databases=["default"]) == []


def test_non_postgresql_database() -> None:
    with mock.patch.object(connection, "vendor", "mysql"):
        errors = check_database(databases=["default"])
    assert [e.id for e in errors] == ["files_app.E202"]
    assert "'mysql'" in errors[0].msg
    assert "postgresql" in (errors[0].hint or "")


def test_checks_are_registered_by_the_app_config_and_database_ones_tagged() -> None:
    from django.core.checks import registry

    registered = {
        getattr(check, "__name__", ""): check for check in registry.registry.registered_checks
    }
    assert "check_settings" in registered and "check_database" in registered
    assert set(registered["check_database"].tags) == {registry.Tags.database}
    assert not set(getattr(registered["check_settings"], "tags", ()))
    # Database checks run when a database is named, as in migrate or "check --database".
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with override_settings(FILES_APP_DATABASE="nope"):
        call_command("check")  # not asked for: not run
        with pytest.raises(SystemCheckError, match="files_app.E201"):
            call_command("check", databases=["default"])
