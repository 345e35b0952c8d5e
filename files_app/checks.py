"""System checks of files_app: settings (E0xx) and databases (E2xx, tagged "database");
fields check themselves (E1xx). FilesAppConfig.ready() registers them.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core import checks
from django.db import connections

from files_app.conf import app_settings


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """Check the FILES_APP_* settings."""
    errors: list[checks.CheckMessage] = []
    for name, lowest, unit, default, check_id in (
        ("PUBLIC_MAX_AGE", 0, "seconds", "300", "files_app.E006"),
        ("UPLOAD_EXPIRY", 1, "seconds", "one day", "files_app.E007"),
        ("SIGNED_URL_EXPIRY", 1, "seconds", "one hour", "files_app.E011"),
        ("TRASH_DAYS", 0, "days", "0, no trash", "files_app.E014"),
        ("VERSIONS", 0, "versions", "0, no versions", "files_app.E015"),
        ("LINK_RESUME", 0, "seconds", "one hour", "files_app.E016"),
    ):
        value = getattr(app_settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            errors.append(
                checks.Error(
                    f"FILES_APP_{name} must be a number of {unit} >= {lowest}, not {value!r}.",
                    hint=f"Remove FILES_APP_{name} to use the default ({default}).",
                    id=check_id,
                )
            )
    for name, upper in (("CHUNK_SIZE", 2**31 - 1), ("MAX_RANGES", 10_000)):
        value = getattr(app_settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= upper:
            errors.append(
                checks.Error(
                    f"FILES_APP_{name} must be an integer from 1 to {upper}, not {value!r}.",
                    hint=f"Remove FILES_APP_{name} to use the default.",
                    id="files_app.E001" if name == "CHUNK_SIZE" else "files_app.E002",
                )
            )
    for name, lowest, check_id in (
        ("MAX_UPLOAD_SIZE", 1, "files_app.E004"),
        ("USER_QUOTA", 0, "files_app.E017"),
        ("TOTAL_QUOTA", 0, "files_app.E018"),
    ):
        limit = getattr(app_settings, name)
        number = isinstance(limit, int) and not isinstance(limit, bool)
        if limit is None or (number and limit >= lowest):
            continue
        errors.append(
            checks.Error(
                f"FILES_APP_{name} must be a size in bytes or None, not {limit!r}.",
                hint="Use None for no limit, or for example 2 * 1024**3 for 2 GiB.",
                id=check_id,
            )
        )
    grace = app_settings.SWEEP_GRACE
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
        errors.append(
            checks.Error(
                f"FILES_APP_SWEEP_GRACE must be a number of seconds >= 0, not {grace!r}.",
                hint="Remove FILES_APP_SWEEP_GRACE to use the default (one day).",
                id="files_app.E003",
            )
        )
    for name, nullable, default, check_id in (
        ("STANDBY_MAX_LAG", True, "5", "E009"),
        ("STANDBY_RETRY", False, "10", "E010"),
    ):
        value = getattr(app_settings, name)
        if value is None and nullable:
            continue
        # Not NaN, not infinite: a bound that no reading can pass, or every reading passes.
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1e9:
            errors.append(
                checks.Error(
                    f"FILES_APP_{name} must be a number of seconds > 0"
                    f"{' or None' if nullable else ''}, not {value!r}.",
                    hint=f"Remove FILES_APP_{name} to use the default ({default}).",
                    id=f"files_app.{check_id}",
                )
            )
    errors += _check_redirect_storages()
    for name, hint, check_id in (
        ("PREPARE", "False behind PgBouncer < 1.22 in transaction mode; else remove it.", "E005"),
        ("DEDUPE", "Remove FILES_APP_DEDUPE to use the default (True).", "E008"),
        ("SIGNED_REDIRECT", "Remove FILES_APP_SIGNED_REDIRECT to use the default.", "E013"),
    ):
        value = getattr(app_settings, name)
        if not isinstance(value, bool):
            errors.append(
                checks.Error(
                    f"FILES_APP_{name} must be True or False, not {value!r}.",
                    hint=hint,
                    id=f"files_app.{check_id}",
                )
            )
    return errors


def _check_redirect_storages() -> list[checks.CheckMessage]:
    from django.conf import settings

    value = app_settings.REDIRECT_STORAGES
    valid = isinstance(value, dict) and all(
        isinstance(alias, str)
        and isinstance(seconds, int)
        and not isinstance(seconds, bool)
        and 0 < seconds <= 7 * 86400  # S3's longest presigned URL
        and alias in settings.STORAGES
        for alias, seconds in value.items()
    )
    if valid:
        return []
    return [
        checks.Error(
            "FILES_APP_REDIRECT_STORAGES must map STORAGES aliases to the seconds a presigned "
            f"URL stays valid (1 to 604800), not {value!r}.",
            hint='For example {"archive": 300}; remove it to serve every file through Django.',
            id="files_app.E012",
        )
    ]


def check_database(
    databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Check that the database holding large objects is PostgreSQL."""
    if databases is None:
        return []  # as Django's own database checks: only when databases are named
    alias = app_settings.DATABASE
    if alias not in connections.settings:
        return [
            checks.Error(
                f"FILES_APP_DATABASE is {alias!r}, which is not in DATABASES.",
                hint="Set FILES_APP_DATABASE to an alias from DATABASES.",
                id="files_app.E201",
            )
        ]
    replica = app_settings.DOWNLOAD_DATABASE
    if replica is not None and replica not in connections.settings:
        return [
            checks.Error(
                f"FILES_APP_DOWNLOAD_DATABASE is {replica!r}, which is not in DATABASES.",
                hint="Set it to the alias of a hot standby in DATABASES, or remove it.",
                id="files_app.E203",
            )
        ]
    for name in filter(None, (alias, replica)):
        vendor = connections[name].vendor
        if vendor != "postgresql":
            return [
                checks.Error(
                    f"files_app stores files in PostgreSQL large objects, but the database "
                    f"{name!r} is {vendor!r}.",
                    hint="Use django.db.backends.postgresql for this database.",
                    id="files_app.E202",
                )
            ]
    return []
