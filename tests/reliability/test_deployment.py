"""Issue 11, points 6 and 7: the README's deployment serves multi-gigabyte files to slow
clients (no worker timeout cuts a long download), with DEBUG off, and `check --deploy`
clean but for what the README explains.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.reliability.clients import download
from tests.reliability.conftest import MiB, OwnDatabase, manage
from tests.servers import MINICLOUD_ENV, ROOT, SERVER_KINDS, Server, running_server

pytestmark = [pytest.mark.minicloud_server, pytest.mark.slow]

DATA = random.Random(6).randbytes(24 * MiB)
RATE = 4 * MiB  # a slow client: 6 s for the file, twice the timeout below
TIMEOUT = "3"  # gunicorn's worker timeout for these tests (30 s by default)


@pytest.fixture(scope="module")
def path(own_database: OwnDatabase) -> str:
    return f"/files/{own_database.store('slow.bin', DATA)}/slow.bin"


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_slow_download_outlasts_the_worker_timeout(
    kind: str, own_database: OwnDatabase, path: str
) -> None:
    env = {"GUNICORN_CMD_ARGS": f"--timeout={TIMEOUT}"}
    with running_server(kind, own_database.url, project="minicloud", env=env) as server:
        slow = download(server, path, rate=RATE)
        assert slow.seconds > 2 * int(TIMEOUT)
        assert slow.complete, slow.error
        assert hashlib.sha256(slow.body).digest() == hashlib.sha256(DATA).digest()
        server.check_alive()


def test_gunicorns_default_sync_worker_would_cut_it(own_database: OwnDatabase, path: str) -> None:
    # The control: what `gunicorn minicloud.wsgi` did before gunicorn.conf.py chose threads.
    env = {"GUNICORN_CMD_ARGS": f"--timeout={TIMEOUT} --worker-class=sync --threads=1"}
    with running_server("gunicorn", own_database.url, project="minicloud", env=env) as server:
        # Half the rate: the socket buffers hold several MiB, so at RATE the worker wrote
        # its last byte only just after the timeout, and a busy machine sometimes let it.
        slow = download(server, path, rate=RATE // 2)
        assert not slow.complete
        assert len(slow.body) < len(DATA)


@pytest.fixture(scope="module")
def server(own_database: OwnDatabase) -> Iterator[Server]:
    with running_server("gunicorn", own_database.url, project="minicloud") as running:
        yield running


def test_debug_is_off_unless_asked_for(own_database: OwnDatabase) -> None:
    show = "from django.conf import settings; print(settings.DEBUG)"
    env = {key: value for key, value in os.environ.items() if key != "MINICLOUD_DEBUG"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(MINICLOUD_ENV, DATABASE_URL=own_database.url, PYTHONPATH=str(ROOT))
    for extra, expected in (({}, "False"), ({"MINICLOUD_DEBUG": "1"}, "True")):
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", show],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.split()[-1] == expected, result.stderr


def test_errors_show_no_debug_page(server: Server) -> None:
    for path in ("/no/such/page", "/files/00000000-0000-4000-8000-000000000000/x"):
        reply = download(server, path)
        assert reply.status == 404
        assert b"Traceback" not in reply.body and b"DEBUG = True" not in reply.body
        assert b"SECRET_KEY" not in reply.body and b"urlpatterns" not in reply.body


def test_check_deploy_is_clean_with_the_documented_environment(
    own_database: OwnDatabase,
) -> None:
    env = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "MINICLOUD_ALLOWED_HOSTS": "files.example.org",
        "MINICLOUD_HTTPS": "1",
        "MINICLOUD_PROXY_SSL_HEADER": "1",
    }
    result = _check_deploy(own_database.url, env)
    # The one warning left is explained in the README: HSTS preload is a commitment the
    # site's owner makes (MINICLOUD_HSTS_PRELOAD=1), not a default.
    assert "security.W021" in result.stdout + result.stderr
    assert "1 issue" in result.stdout + result.stderr
    result = _check_deploy(own_database.url, {**env, "MINICLOUD_HSTS_PRELOAD": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _check_deploy(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **MINICLOUD_ENV, **env, "DATABASE_URL": url}
    # Not the test run's own switches (the browser tests allow async-unsafe calls).
    environment.pop("MINICLOUD_DEBUG", None)
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_runs_against_the_deployment(own_database: OwnDatabase) -> None:
    assert manage(own_database.url, "files_stats").returncode == 0
