from __future__ import annotations

from django.apps import AppConfig


class FilesAppConfig(AppConfig):
    """Keep files in PostgreSQL large objects and serve them over HTTP."""

    name = "files_app"
    verbose_name = "Files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from files_app import checks, receivers  # noqa: F401  (registers checks and receivers)
