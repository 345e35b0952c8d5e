#!/usr/bin/env python
"""Django's command-line utility for the minicloud project."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minicloud.settings")
    from django.core.management import execute_from_command_line

    from files_app.pgserver import PostgresServerError

    try:
        execute_from_command_line(sys.argv)
    except PostgresServerError as exc:
        # A database that cannot be reached or set up is a message, not a traceback.
        sys.exit(f"minicloud: {exc}")


if __name__ == "__main__":
    main()
