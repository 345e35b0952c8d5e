#!/usr/bin/env python
"""Django's command-line utility for the minicloud project."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minicloud.settings")
    from django.core.management import execute_from_command_line

    from minicloud.pgserver import PostgresServerError, database_url

    try:
        # Without DATABASE_URL, the embedded PostgreSQL in .pgdata/ (MINICLOUD_PGDATA),
        # started here if it is not running, and stopped when this command exits.
        datadir = Path(os.environ.get("MINICLOUD_PGDATA", Path(__file__).parent / ".pgdata"))
        os.environ["DATABASE_URL"] = database_url(datadir=datadir, database="minicloud")
        execute_from_command_line(sys.argv)
    except PostgresServerError as exc:
        # A database that cannot be reached or set up is a message, not a traceback.
        sys.exit(f"minicloud: {exc}")


if __name__ == "__main__":
    main()
