"""files_import: files and directories from disk into stored files, nothing half-done."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection

from files_app import largeobjects, maintenance
from files_app.management.commands import files_import
from files_app.models import StoredFile
from tests.commands import ROOT, subprocess_env
from tests.processes import default_sigint

pytestmark = pytest.mark.django_db(transaction=True)


class TTY(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    StoredFile.objects.all().delete()  # the trigger unlinks their large objects


def _import(*args: str, stderr: io.StringIO | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), stderr or io.StringIO()
    call_command("files_import", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(200_000),
        "sub/deeper/empty": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_imports_files_and_directories_recursively(
    tmp_path: Path, lo_count: Callable[[], int]
) -> None:
    files = _tree(tmp_path / "tree")
    single = tmp_path / "single.txt"
    single.write_bytes(b"one file")
    before = lo_count()

    out, err = _import(str(tmp_path / "tree"), str(single))

    assert lo_count() == before + 4
    lines = out.splitlines()
    assert len(lines) == 4
    for (name, data), line in zip(sorted(files.items()), lines, strict=False):
        uuid, url, path = line.split("  ")
        stored = StoredFile.objects.get(uuid=uuid)
        assert path == str(tmp_path / "tree" / name)
        assert url == f"/files/{uuid}/{os.path.basename(name)}"
        assert stored.name == os.path.basename(name)
        assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert not stored.public and stored.owner is None
        with stored.file.open() as f:
            assert f.read() == data
    assert lines[-1].endswith(f"  {single}")
    assert "Imported 4 file(s)" in err
    assert "\r" not in err  # not a terminal: no progress bar


def test_public_owner_and_base_url(tmp_path: Path) -> None:
    User.objects.create_user("alice")
    (tmp_path / "a.txt").write_bytes(b"a")
    out, _ = _import(
        str(tmp_path / "a.txt"),
        "--public",
        "--owner",
        "alice",
        "--base-url",
        "https://files.example.com/",
    )
    stored = StoredFile.objects.get()
    assert stored.public and stored.owner is not None and stored.owner.username == "alice"
    assert out.split("  ")[1] == f"https://files.example.com/files/{stored.uuid}/a.txt"
    stored.delete()
    User.objects.all().delete()


def test_skip_existing_skips_content_already_stored(tmp_path: Path) -> None:
    kept = StoredFile(file=ContentFile(b"same bytes", name="other-name.txt"))
    kept.save()
    (tmp_path / "dup.txt").write_bytes(b"same bytes")
    (tmp_path / "new.txt").write_bytes(b"new bytes")

    out, err = _import(str(tmp_path), "--skip-existing")

    assert [line.split("  ")[2] for line in out.splitlines()] == [str(tmp_path / "new.txt")]
    assert f"Skipped {str(tmp_path / 'dup.txt')!r}: its content is already stored as " in err
    assert str(kept.uuid) in err
    assert StoredFile.objects.count() == 2


def test_without_skip_existing_the_same_content_is_stored_again(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"same")
    _import(str(tmp_path))
    _import(str(tmp_path))
    assert StoredFile.objects.filter(name="a.txt").count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nope"], "No file or directory at '{tmp}/nope'."),
        (["{tmp}/ok.txt", "--owner", "nobody"], "Unknown user 'nobody': no user has that name."),
        (["{tmp}/ok.txt", "--base-url", "files.example.com"], "not 'files.example.com'"),
        (["{tmp}/ok.txt", "--base-url", "ftp://x"], "not 'ftp://x'"),
    ],
)
def test_bad_input_is_a_command_error_before_anything_is_stored(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "ok.txt").write_bytes(b"ok")
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(CommandError, match=message.format(tmp=tmp_path).replace("(", r"\(")):
        _import(str(tmp_path / "ok.txt"), *args)
    assert not StoredFile.objects.exists()


def test_unreadable_files_are_reported_and_the_rest_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lo_count: Callable[[], int]
) -> None:
    (tmp_path / "good.txt").write_bytes(b"good")
    locked = tmp_path / "locked.txt"
    locked.write_bytes(b"secret")
    locked.chmod(0)  # not enough as root: open() is refused below as well
    (tmp_path / "broken-link").symlink_to(tmp_path / "gone")
    os.mkfifo(tmp_path / "fifo")
    real_open = builtins.open

    def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(files_import, "open", refusing_open, raising=False)
    before = lo_count()
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        _import(str(tmp_path), stderr=err)

    assert str(excinfo.value) == (
        f"Could not import 3 file(s): {str(tmp_path / 'broken-link')!r}, "
        f"{str(tmp_path / 'fifo')!r}, {str(locked)!r}; 1 file(s) were imported."
    )
    assert excinfo.value.returncode == 1
    messages = err.getvalue()
    assert f"Could not import {str(locked)!r}: Permission denied." in messages
    assert f"Could not import {str(tmp_path / 'broken-link')!r}: No such file" in messages
    assert f"Could not import {str(tmp_path / 'fifo')!r}: it is not a regular file." in messages
    assert list(StoredFile.objects.values_list("name", flat=True)) == ["good.txt"]
    assert lo_count() == before + 1


class _InterruptedRead(io.BytesIO):
    """A file that is Ctrl-C'd after a few reads; records the objects seen at that moment."""

    objects_when_interrupted: int | None = None

    def __init__(self, data: bytes, reads: int) -> None:
        super().__init__(data)
        self.name = "big.bin"
        self.reads_left = reads

    def read(self, size: int | None = -1) -> bytes:
        if self.reads_left == 0:
            # Inside StoredFile.save()'s transaction: the new object is visible here.
            type(self).objects_when_interrupted = maintenance.count("default")
            raise KeyboardInterrupt
        self.reads_left -= 1
        return super().read(size)


def test_interrupted_import_keeps_earlier_files_and_leaves_nothing_half_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lo_count: Callable[[], int]
) -> None:
    (tmp_path / "a-first.txt").write_bytes(b"first")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1_000_000)
    real_open = builtins.open

    def interrupting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(big):
            return _InterruptedRead(b"x" * 1_000_000, reads=5)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(files_import, "open", interrupting_open, raising=False)
    before = lo_count()

    with pytest.raises(CommandError) as excinfo:
        _import(str(tmp_path))

    assert excinfo.value.returncode == 130
    assert str(excinfo.value) == (
        f"Interrupted while importing {str(big)!r}: that file was not stored; the 1 file(s) "
        "imported before it are kept."
    )
    # The big file's object existed, with chunks written, when the interrupt came...
    assert _InterruptedRead.objects_when_interrupted == before + 2
    # ...and went with the rolled-back transaction.
    assert lo_count() == before + 1
    assert list(StoredFile.objects.values_list("name", flat=True)) == ["a-first.txt"]


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    _tree(tmp_path)
    out, err = _import(str(tmp_path), stderr=TTY())
    assert "\r\x1b[K[" in err and "100%" in err
    assert "\r" not in out and len(out.splitlines()) == 3
    assert "Imported 3 file(s)" in err


def _backend_writing(application_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND backend_xid IS NOT NULL",
            [application_name],
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.slow
@pytest.mark.processes
def test_ctrl_c_in_a_real_process_exits_130_without_traceback_or_orphan(
    tmp_path: Path, lo_count: Callable[[], int]
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(96):
            f.write(os.urandom(1024 * 1024))
    before = lo_count()
    app = f"files-import-test-{os.getpid()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "files_import", str(big)],
        preexec_fn=default_sigint,
        cwd=ROOT,
        env=subprocess_env(PGAPPNAME=app),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until its transaction has written something: the object is being filled.
        while not _backend_writing(app):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "files_import never started writing"
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert f"CommandError: Interrupted while importing {str(big)!r}" in err
    assert "Traceback" not in err
    assert out == ""
    assert not StoredFile.objects.exists()
    deadline = time.monotonic() + 10
    while _backend_writing(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lo_count() == before


def test_unreadable_directories_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "x.txt").write_bytes(b"x")
    (tmp_path / "ok.txt").write_bytes(b"ok")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if str(path) == str(tmp_path / "private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as root, chmod cannot lock us out
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"Could not import 1 file\(s\)"):
        _import(str(tmp_path), stderr=err)
    assert f"Could not import {str(tmp_path / 'private')!r}: Permission denied." in err.getvalue()
    assert list(StoredFile.objects.values_list("name", flat=True)) == ["ok.txt"]


urlpatterns: list[Any] = []  # a URLconf without files_app's download view


def test_without_download_urls_the_url_column_is_a_dash(tmp_path: Path, settings: Any) -> None:
    settings.ROOT_URLCONF = __name__
    (tmp_path / "a.txt").write_bytes(b"a")
    out, err = _import(str(tmp_path), "-v", "0")
    stored = StoredFile.objects.get()
    assert out == f"{stored.uuid}  -  {tmp_path / 'a.txt'}\n"
    assert err == ""  # -v 0: no summary


def test_database_errors_stop_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lo_count: Callable[[], int]
) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "b.txt").write_bytes(b"b")
    real_write = largeobjects.Writer.write

    def write(writer: largeobjects.Writer, offset: int, data: Any) -> None:
        if bytes(data) == b"b":
            raise DatabaseError("could not extend file: No space left on device\nHINT: ...")
        real_write(writer, offset, data)

    monkeypatch.setattr(largeobjects.Writer, "write", write)
    before = lo_count()
    with pytest.raises(CommandError) as excinfo:
        _import(str(tmp_path))
    assert str(excinfo.value) == (
        f"A database error stopped the import at {str(tmp_path / 'b.txt')!r}: could not "
        "extend file: No space left on device; the 1 file(s) imported before it are kept."
    )
    assert lo_count() == before + 1
