"""Run management commands in a new process, as a user would, on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.db import connection

from tests.servers import database_url

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(database: str | None = None, **extra: str) -> dict[str, str]:
    """Return the environment for ``python -m django`` on the test settings and database
    (or another database of the same server)."""
    settings = dict(connection.settings_dict)
    if database:
        settings["NAME"] = database
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(settings),
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def run_django(*args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a management command in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=subprocess_env(database),
        capture_output=True,
        text=True,
        timeout=120,
    )
