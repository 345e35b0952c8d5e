"""Backups: a full pg_dump restores every file intact; table or schema dumps lose them.

(A data-only restore of the table is refused by its trigger; with --disable-triggers it
brings back rows without files, which files_verify reports.)

docs/deployment.md ("Deployment") promises both; this proves them with the PostgreSQL client
programs that ship with the server (pg_dump, pg_restore, psql), run as subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from files_app.models import StoredFile
from minicloud.pgserver import find_bindir
from tests.commands import run_django

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MiB = 1024 * 1024


def _client(program: str, *args: str) -> str:
    settings = connection.settings_dict
    env = dict(os.environ)
    if settings["PASSWORD"]:
        env["PGPASSWORD"] = settings["PASSWORD"]
    result = subprocess.run(
        [str(find_bindir() / program), "-h", settings["HOST"], "-p", str(settings["PORT"])]
        + ["-U", settings["USER"], *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{program} {args!r} failed:\n{result.stderr}"
    return result.stdout


def _psql(database: str, sql: str) -> list[list[str]]:
    out = _client(
        "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", " ", "-d", database, "-c", sql
    )
    return [line.split(" ") for line in out.splitlines()]


@pytest.fixture
def databases() -> Iterator[list[str]]:
    """Names for scratch databases on the test server; dropped afterwards."""
    base = connection.settings_dict["NAME"]
    names = [f"{base}_restored", f"{base}_table_only"]
    yield names
    for name in names:
        _psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def stored() -> Iterator[dict[str, str]]:
    """Store an empty, a small and a several-MiB file; return their SHA-256 by UUID."""
    contents = {"empty": b"", "notes.txt": b"some notes\n" * 100, "video.bin": os.urandom(6 * MiB)}
    hashes = {}
    for name, data in contents.items():
        stored = StoredFile(file=ContentFile(data, name=name))
        stored.save()
        hashes[str(stored.uuid)] = hashlib.sha256(data).hexdigest()
    yield hashes
    StoredFile.objects.all().delete()


def test_full_dump_restores_every_file(
    tmp_path: Path, databases: list[str], stored: dict[str, str]
) -> None:
    source, restored = connection.settings_dict["NAME"], databases[0]
    dump = tmp_path / "full.dump"
    _client("pg_dump", "-Fc", "-f", str(dump), source)
    assert "BLOBS" in _client("pg_restore", "-l", str(dump))
    _psql("postgres", f'CREATE DATABASE "{restored}"')
    _client("pg_restore", "--exit-on-error", "-d", restored, str(dump))

    # Hashed by PostgreSQL itself, from the restored large objects...
    rows = _psql(
        restored, "SELECT uuid, encode(sha256(lo_get(file)), 'hex') FROM files_app_storedfile"
    )
    assert dict(rows) == stored
    # ...and by files_verify, run as a user would against the restored database.
    result = run_django("files_verify", database=restored)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Verified 3 stored file(s), 6.0 MiB: all intact.")


def test_table_and_schema_dumps_restore_rows_without_their_files(
    tmp_path: Path, databases: list[str], stored: dict[str, str]
) -> None:
    source, restored = connection.settings_dict["NAME"], databases[1]
    schema, table = tmp_path / "schema.dump", tmp_path / "table.dump"
    _client("pg_dump", "-Fc", "--schema-only", "-f", str(schema), source)
    _client(
        "pg_dump", "-Fc", "--data-only", "-t", "files_app_storedfile", "-f", str(table), source
    )
    for dump in (schema, table):
        assert "BLOB" not in _client("pg_restore", "-l", str(dump))  # silently left out
    _psql("postgres", f'CREATE DATABASE "{restored}"')
    _client("pg_restore", "--exit-on-error", "-d", restored, str(schema))
    # The table's trigger refuses rows whose large object is missing: the restore fails
    # loudly instead of bringing back rows without files...
    with pytest.raises(AssertionError, match="large object [0-9]+ of a stored file does not"):
        _client("pg_restore", "--exit-on-error", "-d", restored, str(table))
    # ...unless told to skip the triggers, which then restores exactly that.
    _client("pg_restore", "--exit-on-error", "--disable-triggers", "-d", restored, str(table))

    assert _psql(restored, "SELECT count(*) FROM files_app_storedfile") == [["3"]]
    assert _psql(restored, "SELECT count(*) FROM pg_largeobject_metadata") == [["0"]]
    result = run_django("files_verify", database=restored)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for uuid in stored:
        assert f"{uuid} " in result.stderr
    assert result.stderr.count("does not exist.") == 3
    assert (
        "CommandError: 3 stored file(s) failed verification: 3 with a missing large object, "
        "0 whose content does not match; 0 intact." in result.stderr
    )
