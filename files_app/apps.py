from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class FilesAppConfig(AppConfig):
    """Keep files in PostgreSQL large objects and serve them over HTTP."""

    name = "files_app"
    verbose_name = "Files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from files_app import receivers  # noqa: F401  (connects the post_migrate receiver)
        from files_app.checks import check_database, check_settings

        checks.register(check_settings)
        # Run by migrate and by "check --database", like Django's own database checks.
        checks.register(check_database, checks.Tags.database)
