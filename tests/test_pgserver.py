"""The embedded PostgreSQL: start, reuse, stop; DATABASE_URL handling."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from minicloud import pgserver
from minicloud.pgserver import PostgresServer, PostgresServerError
from tests.processes import pid_alive, postmaster_pid

pytestmark = pytest.mark.processes


def test_start_reuse_and_stop(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    server = PostgresServer(datadir, ephemeral=True)
    server.start()
    try:
        assert server.owner and server.port
        pid = postmaster_pid(datadir)
        assert "PostgreSQL 18" in server.psql("-Atc", "SELECT version()")
        # A second process pointed at the same directory finds and reuses the server.
        other = PostgresServer(datadir)
        assert other.running_port() == server.port
        assert pgserver.project_server(datadir, "reused") == server.url("reused")
        assert server.psql("-Atc", "SELECT 1", database="reused").strip() == "1"
    finally:
        server.stop()
    assert not pid_alive(pid)
    assert PostgresServer(datadir).running_port() is None
    server.stop()  # stopping twice is harmless


def test_data_survives_a_restart(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "data", ephemeral=True)
    server.start()
    server.ensure_database("keep")
    server.psql("-c", "CREATE TABLE t AS SELECT 42 AS answer", database="keep")
    server.stop()
    again = PostgresServer(tmp_path / "data", ephemeral=True)
    again.start()
    try:
        assert again.psql("-Atc", "SELECT answer FROM t", database="keep").strip() == "42"
    finally:
        again.stop()


def test_database_url_wins_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example:5432/app")
    url = pgserver.database_url(datadir=tmp_path / "pg", database="x")
    assert url == "postgres://u@db.example:5432/app"
    assert not (tmp_path / "pg").exists()


@pytest.mark.parametrize("url", ["sqlite:///db.sqlite3", "mysql://u@h/db"])
def test_non_postgresql_database_url_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(PostgresServerError, match="needs PostgreSQL"):
        pgserver.database_url(datadir=None, database="x")


def test_pg_bindir_without_binaries_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresServerError, match="No 'postgres' executable"):
        pgserver.find_bindir()


def test_pg_bindir_selects_other_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = pgserver.find_bindir()
    monkeypatch.setenv("PG_BINDIR", str(bindir))
    assert pgserver.find_bindir() == bindir


def test_invalid_database_name_is_refused(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "data", ephemeral=True)
    with pytest.raises(PostgresServerError, match="Invalid database name"):
        server.ensure_database("x'; DROP DATABASE postgres; --")


@pytest.mark.skipif(os.geteuid() != 0, reason="the nobody fallback is for root only")
def test_as_root_without_user_namespaces_the_server_runs_as_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Simulate a machine that forbids user namespaces: the probe fails, nobody is used.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    bindir = pgserver.find_bindir()
    monkeypatch.setattr(pgserver, "_demotion_cache", {})
    monkeypatch.setattr(pgserver, "_enter_user_namespace", refuse)
    real_run = subprocess.run

    def run(args: list[str], **kwargs: object) -> object:
        if kwargs.get("preexec_fn") is refuse:
            raise subprocess.SubprocessError("Exception occurred in preexec_fn.")
        return real_run(args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", run)
    assert pgserver._demotion(bindir) is pgserver._become_nobody
    server, _url = pgserver.temporary_server("nobody_db")
    try:
        assert server.datadir.stat().st_uid == 65534
        owner = server.psql("-Atc", "SELECT pg_postmaster_start_time() IS NOT NULL")
        assert owner.strip() == "t"
        pid = postmaster_pid(server.datadir)
        assert os.stat(f"/proc/{pid}").st_uid == 65534
    finally:
        server.stop()
