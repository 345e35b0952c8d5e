"""Fixtures for the reliability suite: minicloud as the README deploys it, on real servers.

The suite's server tests run minicloud's own settings under gunicorn (with the project's
gunicorn.conf.py) and uvicorn, as a user deploys it, against either the test session's
database or a PostgreSQL server of their own that they stop and restart. They run in the
psycopg 3 pass of ./test only: minicloud's servers choose their driver themselves, so the
psycopg2 pass would run the same thing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minicloud.pgserver import PostgresServer
from tests.servers import MINICLOUD_ENV, ROOT, Server, running_server

MiB = 2**20


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FILES_APP_DRIVER") != "psycopg2":
        return
    once = pytest.mark.skip(reason="runs once, in the psycopg 3 pass: minicloud picks its driver")
    for item in items:
        if item.get_closest_marker("minicloud_server"):
            item.add_marker(once)


def zeros_sha256(size: int) -> str:
    """Return the SHA-256 of ``size`` zero bytes, hashed in pieces."""
    digest, block = hashlib.sha256(), bytes(8 * MiB)
    for _ in range(size // len(block)):
        digest.update(block)
    digest.update(bytes(size % len(block)))
    return digest.hexdigest()


@dataclass
class OwnDatabase:
    """A PostgreSQL server of a test module's own, with minicloud's tables in it."""

    server: PostgresServer
    url: str

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        """Start it again on the same port, so that the app's settings still point at it."""
        self.server.start(port=self.server.port)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def store(
        self,
        name: str,
        data: bytes,
        *,
        public: bool = True,
        owner: str | None = None,
        content_type: str = "application/octet-stream",
        zeros: int = 0,
    ) -> str:
        """Store a file the way StoredFile.save() would, and return its UUID. ``zeros``
        instead of ``data``: a file of that many zero bytes, in a sparse large object (one
        byte written at its end; PostgreSQL reads the hole as zeros), which costs nothing
        to make however large."""
        import psycopg

        file_uuid = str(uuid.uuid4())
        with psycopg.connect(self.url) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT lo_create(0)")
            row = cursor.fetchone()
            assert row is not None
            oid = row[0]
            if zeros:
                cursor.execute("SELECT lo_put(%s, %s, %b)", (oid, zeros - 1, b"\0"))
            for offset in range(0, len(data), 8 * MiB):
                cursor.execute(
                    "SELECT lo_put(%s, %s, %b)", (oid, offset, data[offset : offset + 8 * MiB])
                )
            cursor.execute(f"COMMENT ON LARGE OBJECT {int(oid)} IS 'files_app created=0'")
            cursor.execute(
                "INSERT INTO files_app_storedfile (uuid, file, name, content_type, size, sha256, "
                "created, updated, public, owner_id) VALUES (%s, %s, %s, %s, %s, %s, now(), "
                "now(), %s, (SELECT id FROM auth_user WHERE username = %s))",
                (
                    file_uuid,
                    oid,
                    name,
                    content_type,
                    zeros or len(data),
                    zeros_sha256(zeros) if zeros else hashlib.sha256(data).hexdigest(),
                    public,
                    owner,
                ),
            )
        return file_uuid

    def sessions(self, users: dict[str, str]) -> dict[str, str]:
        """Create users (username: "user", "staff" or "superuser") and return a logged-in
        session key for each."""
        script = (
            "import json, sys\n"
            "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, "
            "SESSION_KEY, get_user_model\n"
            "from django.contrib.sessions.backends.db import SessionStore\n"
            "User = get_user_model(); keys = {}\n"
            f"for name, role in {users!r}.items():\n"
            "    user = User.objects.filter(username=name).first() or User.objects.create_user("
            "name, password='pw', is_staff=role != 'user', is_superuser=role == 'superuser')\n"
            "    s = SessionStore(); s[SESSION_KEY] = str(user.pk)\n"
            "    s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
            "    s[HASH_SESSION_KEY] = user.get_session_auth_hash(); s.create()\n"
            "    keys[name] = s.session_key\n"
            "print(json.dumps(keys))\n"
        )
        result = manage(self.url, "shell", "-c", script)
        assert result.returncode == 0, result.stderr
        keys: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
        return keys

    def backends(self) -> list[tuple[str, str]]:
        """Return (state, query) of the app's connections to the database."""
        return [
            (str(state), str(query))
            for state, query in self.execute(
                "SELECT state, query FROM pg_stat_activity WHERE datname = 'minicloud' "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        ]


def manage(
    url: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a minicloud management command against ``url`` (with more ``env`` if given)."""
    environment = {**os.environ, **MINICLOUD_ENV, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def share_link(url: str, file_uuid: str, name: str, *, env: dict[str, str] | None = None) -> str:
    """Return a five-minute share link for a stored file, made by minicloud (its key)."""
    result = manage(
        url,
        "shell",
        "-c",
        "from datetime import timedelta; from files_app.sharing import make_share_url; "
        f"print(make_share_url('{file_uuid}', '{name}', timedelta(minutes=5)))",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@contextmanager
def minicloud_on(
    kind: str, database: OwnDatabase, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run minicloud (with more ``env``) under ``kind`` against ``database``; afterwards,
    check that it is alive and wrote no traceback."""
    with running_server(kind, database.url, project="minicloud", env=env) as running:
        yield running
        running.check_alive()
        assert "Traceback" not in running.output(), running.output()


@pytest.fixture(scope="module")
def own_database() -> Iterator[OwnDatabase]:
    """Start a PostgreSQL server for this module alone and migrate minicloud into it."""
    if os.environ.get("FILES_APP_DRIVER") == "psycopg2":
        pytest.skip("runs once, in the psycopg 3 pass: minicloud picks its driver")
    with tempfile.TemporaryDirectory(prefix="files-app-faults-") as tmp:
        os.chmod(tmp, 0o755)  # as root without user namespaces, "nobody" runs the server
        server = PostgresServer(Path(tmp) / "data", ephemeral=True)
        server.start()
        try:
            server.ensure_database("minicloud")
            database = OwnDatabase(server, server.url("minicloud"))
            result = manage(database.url, "migrate", "--no-input")
            assert result.returncode == 0, result.stdout + result.stderr
            yield database
        finally:
            server.stop()
