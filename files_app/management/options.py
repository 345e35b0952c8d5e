"""What the files_* management commands share: --database, paging, the Ctrl-C status."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import TypeVar

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet

from files_app.conf import app_settings

__all__ = [
    "INTERRUPTED",
    "add_database_argument",
    "database_alias",
    "listed",
    "pages",
    "with_uuids",
]

# Exit status after Ctrl-C, as shells report a process killed by SIGINT.
INTERRUPTED = 130
PAGE_SIZE = 500
M = TypeVar("M", bound=Model)


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


def pages(queryset: QuerySet[M]) -> Iterator[M]:
    """Yield the rows of ``queryset`` by keyset pages of primary keys.

    Constant memory, and no server-side cursor (which pgbouncer in transaction mode breaks).
    """
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        rows = list(page[:PAGE_SIZE])
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        last = rows[-1].pk


def with_uuids(queryset: QuerySet[M], values: Sequence[str]) -> QuerySet[M]:
    """Return the rows of ``queryset`` with these ``--uuid`` values (all rows for none);
    raise CommandError for a value that is not a UUID or that no row has."""
    if not values:
        return queryset
    wanted = set()
    for value in values:
        try:
            wanted.add(uuid.UUID(value))
        except ValueError:
            raise CommandError(f"--uuid must be a UUID, not {value!r}.") from None
    queryset = queryset.filter(uuid__in=wanted)
    missing = sorted(str(u) for u in wanted - set(queryset.values_list("uuid", flat=True)))
    if missing:
        raise CommandError(f"No stored file has the UUID {', '.join(repr(u) for u in missing)}.")
    return queryset


def listed(items: Sequence[str]) -> str:
    """Return the first three of ``items``, quoted, and how many more there are."""
    shown = ", ".join(repr(item) for item in items[:3])
    return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")
