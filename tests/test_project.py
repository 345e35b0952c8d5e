"""The minicloud project end to end: `manage.py serve` as the README's ./run runs it.

These run the project in subprocesses (the suite itself never imports minicloud).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import default_sigint, pid_alive, postmaster_pid

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(DJANGO_SECRET_KEY="test-project-key", PYTHONUNBUFFERED="1", **extra)
    return env


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, ""


class Serve:
    """`manage.py serve` in a subprocess, with its output collected."""

    def __init__(self, pgdata: Path) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", f"127.0.0.1:{self.port}"],
            preexec_fn=default_sigint,
            cwd=ROOT,
            env=_env(MINICLOUD_PGDATA=str(pgdata)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                status, _ = _get(f"http://127.0.0.1:{self.port}/admin/login/")
            except OSError:
                time.sleep(0.2)
                continue
            if status == 200:
                return
        self.stop(signal.SIGKILL)
        pytest.fail(f"manage.py serve did not come up:\n{self.output}")

    def stop(self, signum: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            out, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output += out
        return self.process.returncode


@pytest.fixture
def pgdata(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pgdata"
    yield path
    pid_file = path / "postmaster.pid"
    if pid_file.exists():  # never leave a server behind, even when a test failed
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pid_alive(pid)


CREATE_FILES = """
from django.core.files.base import ContentFile
from files_app.models import StoredFile

for name, public in (("a&b <i>.txt", True), ("hidden.txt", False)):
    StoredFile(file=ContentFile(b"bytes of " + name.encode(), name=name), public=public).save()
"""


def _check_public_files(port: int, pgdata: Path) -> None:
    # A second command on the same .pgdata reuses the running server.
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_FILES],
        cwd=ROOT,
        env=_env(MINICLOUD_PGDATA=str(pgdata)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    status, page = _get(f"http://127.0.0.1:{port}/public/")
    assert status == 200
    assert "a&amp;b &lt;i&gt;.txt" in page and "hidden.txt" not in page
    (link,) = re.findall(r'<a href="(/files/[^"]+)"', page)
    status, body = _get(f"http://127.0.0.1:{port}{link}")
    assert (status, body) == (200, "bytes of a&b <i>.txt")


@pytest.mark.slow
def test_serve_sets_up_serves_and_stops_its_database(pgdata: Path) -> None:
    first = Serve(pgdata)
    try:
        first.wait_until_serving()
        status, body = _get(f"http://127.0.0.1:{first.port}/")
        assert status == 200 and "minicloud" in body and "/admin/" in body
        _check_public_files(first.port, pgdata)
    except BaseException:
        first.stop(signal.SIGKILL)
        raise
    postmaster = postmaster_pid(pgdata)
    returncode = first.stop(signal.SIGTERM)
    assert _wait_gone(postmaster), (
        f"SIGTERM left PostgreSQL running ({returncode}):\n{first.output}"
    )
    match = re.search(r"username 'admin', password '([^']+)'", first.output)
    assert match, first.output
    assert len(match.group(1)) >= 12

    # Again, stopped with Ctrl-C this time: same data directory, same admin, no new password.
    second = Serve(pgdata)
    second.wait_until_serving()
    postmaster = postmaster_pid(pgdata)
    returncode = second.stop(signal.SIGINT)
    assert _wait_gone(postmaster), (
        f"Ctrl-C left PostgreSQL running ({returncode}):\n{second.output}"
    )
    assert "Admin account: 'admin'" in second.output
    assert "password" not in second.output.split("Admin account:")[0].lower()


def test_database_url_starts_no_embedded_server(tmp_path: Path) -> None:
    settings = connection.settings_dict
    url = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/postgres"
    result = subprocess.run(
        [sys.executable, "manage.py", "showmigrations", "files_app"],
        cwd=ROOT,
        env=_env(DATABASE_URL=url, MINICLOUD_PGDATA=str(tmp_path / "pg")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "files_app" in result.stdout
    assert not (tmp_path / "pg").exists()


def test_non_postgresql_database_url_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_env(DATABASE_URL="sqlite:///db.sqlite3", MINICLOUD_PGDATA=str(tmp_path / "pg")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "needs PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def _database_settings(**env: str) -> dict[str, object]:
    code = (
        "import json; from minicloud import settings; "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({'age': db['CONN_MAX_AGE'], 'pool': db.get('OPTIONS', {}).get('pool')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": "postgres://u@127.0.0.1:1/db", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(result.stdout))


def _minicloud_setting(name: str, **env: str) -> str:
    code = f"from minicloud import settings; print(getattr(settings, {name!r}, None))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": "postgres://u@127.0.0.1:1/db", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_minicloud_takes_its_upload_limit_from_the_environment() -> None:
    assert _minicloud_setting("FILES_APP_MAX_UPLOAD_SIZE") == "None"
    limit = _minicloud_setting("FILES_APP_MAX_UPLOAD_SIZE", MINICLOUD_MAX_UPLOAD_SIZE="1048576")
    assert limit == "1048576"


@pytest.mark.parametrize(
    ("setting", "variable", "default"),
    [
        ("FILES_APP_TRASH_DAYS", "MINICLOUD_TRASH_DAYS", "30"),
        ("FILES_APP_VERSIONS", "MINICLOUD_VERSIONS", "5"),
    ],
)
def test_minicloud_keeps_deleted_and_replaced_files_unless_told_not_to(
    setting: str, variable: str, default: str
) -> None:
    # A file host's users expect a trash and versions; files_app's own default is off.
    from files_app.conf import app_settings

    assert _minicloud_setting(setting) == default
    assert _minicloud_setting(setting, **{variable: "0"}) == "0"
    assert _minicloud_setting(setting, **{variable: ""}) == "0"
    assert _minicloud_setting(setting, **{variable: "7"}) == "7"
    assert getattr(app_settings, setting.removeprefix("FILES_APP_")) == 0


def test_minicloud_reuses_database_connections() -> None:
    # psycopg 3 + psycopg_pool (requirements.txt): Django's pool, which works under ASGI too.
    pooled = _database_settings()
    assert pooled["age"] == 0
    assert isinstance(pooled["pool"], dict) and pooled["pool"]["max_size"] == 16
    # Without the pool: persistent connections per thread.
    assert _database_settings(MINICLOUD_DB_POOL="0") == {"age": 60, "pool": None}
    assert _database_settings(MINICLOUD_DB_POOL="0", MINICLOUD_CONN_MAX_AGE="0")["age"] == 0
