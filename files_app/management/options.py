"""What the files_* management commands share: the --database option."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from files_app.conf import app_settings

__all__ = ["add_database_argument", "database_alias"]


def add_database_argument(parser: CommandParser, action: str) -> None:
    """Add ``--database ALIAS``; ``action`` completes "The database alias to ..."."""
    parser.add_argument(
        "--database",
        default=None,
        metavar="ALIAS",
        help=f"The database alias to {action} (default: FILES_APP_DATABASE, or 'default').",
    )


def database_alias(option: str | None, consequence: str) -> str:
    """Return the alias to work on, or raise CommandError if it is unknown or not PostgreSQL."""
    using = option or app_settings.DATABASE or DEFAULT_DB_ALIAS
    if using not in connections.settings:
        raise CommandError(f"Unknown database {using!r}: it is not in DATABASES.")
    if connections[using].vendor != "postgresql":
        raise CommandError(f"The database {using!r} is not PostgreSQL: {consequence}.")
    return using
