"""files_verify: every stored file's large object is re-read and checked against its hash."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection

from files_app import largeobjects
from files_app.management import options
from files_app.models import PendingRemoval, StoredFile
from tests.commands import run_django

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def files() -> Iterator[list[StoredFile]]:
    stored = [
        StoredFile(file=ContentFile(data, name=name))
        for name, data in [("a.txt", b"a" * 1000), ("empty", b""), ("c.bin", os.urandom(300_000))]
    ]
    for s in stored:
        s.save()
    yield stored
    StoredFile.objects.all().delete()


def _verify(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("files_verify", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_intact_files_pass(files: list[StoredFile]) -> None:
    out, err = _verify()
    assert out == "Verified 3 stored file(s), 293.9 KiB: all intact.\n"
    assert err == ""


def test_verbose_lists_every_file(files: list[StoredFile]) -> None:
    out, _ = _verify("-v", "2")
    assert [line.split()[:2] for line in out.splitlines()[:3]] == [
        ["OK", str(s.uuid)] for s in files
    ]


def test_corrupted_and_missing_objects_are_each_reported(files: list[StoredFile]) -> None:
    a, empty, c = files
    assert c.file.oid is not None and empty.file.oid is not None
    largeobjects.write(c.file.oid, 1000, b"\0\1\2\3", "default")  # damage a few bytes in place
    largeobjects.unlink(empty.file.oid, "default")  # the row still points at it: no trigger fired
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("files_verify", stdout=io.StringIO(), stderr=err)

    assert str(excinfo.value) == (
        "2 stored file(s) failed verification: 1 with a missing large object, 1 whose content "
        "does not match; 1 intact."
    )
    lines = err.getvalue().splitlines()
    assert lines[0] == (f"{empty.uuid} 'empty': its large object {empty.file.oid} does not exist.")
    assert lines[1].startswith(f"{c.uuid} 'c.bin': its large object {c.file.oid} holds ")
    assert f"; 300000 bytes with SHA-256 {c.sha256} were stored." in lines[1]
    assert len(lines) == 2


def test_files_in_the_trash_are_verified_too(files: list[StoredFile], settings: Any) -> None:
    # They may be restored: their bytes must still be theirs.
    settings.FILES_APP_TRASH_DAYS = 30
    a, _, c = files
    c.delete()
    assert c.file.oid is not None
    largeobjects.write(c.file.oid, 10, b"\0\1", "default")
    with pytest.raises(CommandError, match="1 whose content does not match; 2 intact"):
        _verify()


def test_versions_are_verified_too(files: list[StoredFile], settings: Any) -> None:
    # They may be downloaded and restored: their bytes must still be theirs.
    settings.FILES_APP_VERSIONS = 5
    a, _, c = files
    for content in (b"second" * 100, b"third" * 100):
        a.file = ContentFile(content, name="a.txt")
        a.save()
    c.file = ContentFile(b"c, replaced", name="c.bin")
    c.save()
    out, _ = _verify()
    assert out == "Verified 3 stored file(s) and 3 version(s), 295.0 KiB: all intact.\n"
    first, second = a.versions.order_by("number")
    assert first.file.oid is not None and second.file.oid is not None
    largeobjects.write(first.file.oid, 10, b"\0\1", "default")
    largeobjects.unlink(second.file.oid, "default")
    err = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("files_verify", stdout=io.StringIO(), stderr=err)
    assert str(excinfo.value) == (
        "2 stored file(s) and version(s) failed verification: 1 with a missing large object, "
        "1 whose content does not match; 4 intact."
    )
    lines = err.getvalue().splitlines()
    assert lines[0].startswith(
        f"{a.uuid} 'a.txt' version 1: its large object {first.file.oid} holds 1000 bytes"
    )
    assert lines[1] == (
        f"{a.uuid} 'a.txt' version 2: its large object {second.file.oid} does not exist."
    )
    # --uuid: that file's versions only.
    out, _ = _verify("--uuid", str(c.uuid))
    assert out.startswith("Verified 1 stored file(s) and 1 version(s), ")


def test_a_shorter_object_is_a_mismatch(files: list[StoredFile]) -> None:
    a = files[0]
    with connection.cursor() as cursor:  # truncation, as a botched restore might leave it
        cursor.execute(
            "SELECT lo_truncate(lo_open(%s::oid, %s), 10)", [a.file.oid, 0x20000 | 0x40000]
        )
    with pytest.raises(CommandError, match="1 whose content does not match"):
        _verify()


def test_uuid_limits_the_check(files: list[StoredFile]) -> None:
    assert files[1].file.oid is not None
    largeobjects.unlink(files[1].file.oid, "default")
    out, _ = _verify("--uuid", str(files[0].uuid), "--uuid", str(files[2].uuid))
    assert out.startswith("Verified 2 stored file(s)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uuid", "3f1e7c54-0000-4000-8000-000000000000"], "No stored file has the UUID "),
        (["--uuid", "not-a-uuid"], "--uuid must be a UUID, not 'not-a-uuid'."),
        (["--database", "nope"], "Unknown database 'nope': it is not in DATABASES."),
    ],
)
def test_bad_options_are_command_errors(
    files: list[StoredFile], args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        _verify(*args)


@pytest.mark.processes
def test_a_real_process_exits_non_zero_without_a_traceback(files: list[StoredFile]) -> None:
    ok = run_django("files_verify")
    assert ok.returncode == 0, ok.stderr
    assert "Verified 3 stored file(s)" in ok.stdout

    assert files[2].file.oid is not None
    largeobjects.write(files[2].file.oid, 0, b"corrupt", "default")
    bad = run_django("files_verify")
    assert bad.returncode == 1
    assert f"{files[2].uuid} 'c.bin': its large object" in bad.stderr
    assert "CommandError: 1 stored file(s) failed verification" in bad.stderr
    assert "Traceback" not in bad.stderr

    unknown = run_django("files_verify", "--uuid", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "CommandError: --uuid must be a UUID, not 'nope'."


def test_many_files_are_read_page_by_page(
    files: list[StoredFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(options, "PAGE_SIZE", 2)
    for i in range(3):
        StoredFile(file=ContentFile(b"more", name=f"more{i}")).save()
    out, _ = _verify("-v", "2")
    assert len([line for line in out.splitlines() if line.startswith("OK ")]) == 6


def test_a_file_replaced_while_it_is_read_is_not_damage(
    files: list[StoredFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = files[2]
    real_read = largeobjects.read

    def read(oid: int, offset: int, length: int, using: str) -> bytes:
        if oid == c.file.oid and offset > 0:
            # Someone replaces the file: the trigger unlinks the object being read.
            c.file.save("new.bin", ContentFile(b"replacement"))
        return real_read(oid, offset, length, using)

    monkeypatch.setattr(largeobjects, "read", read)
    out, err = _verify()
    assert out.startswith("Verified 2 stored file(s), ")
    assert out.endswith(": all intact (1 changed while being read, not checked).\n")
    assert err == f"{c.uuid} 'c.bin' was replaced or deleted while it was read; not checked.\n"


@pytest.mark.parametrize(
    ("failure", "returncode", "message"),
    [
        (KeyboardInterrupt, 130, "Interrupted while verifying 'c.bin'; 2 file(s) were intact"),
        (
            DatabaseError("server closed the connection unexpectedly\nmore detail"),
            1,
            "A database error stopped the verification at 'c.bin': server closed the "
            "connection unexpectedly.",
        ),
    ],
)
def test_interruptions_and_database_errors_are_command_errors(
    files: list[StoredFile],
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException | type[BaseException],
    returncode: int,
    message: str,
) -> None:
    real_read = largeobjects.read

    def read(oid: int, offset: int, length: int, using: str) -> bytes:
        if oid == files[2].file.oid and offset > 0:
            raise failure
        return real_read(oid, offset, length, using)

    monkeypatch.setattr(largeobjects, "read", read)
    with pytest.raises(CommandError) as excinfo:
        _verify()
    assert excinfo.value.returncode == returncode
    assert str(excinfo.value).startswith(message)


def test_files_missing_from_their_storage_are_named_with_it(
    settings: Any, files: list[StoredFile], tmp_path: Path
) -> None:
    """Regression: a file lost from its storage was "a missing large object"."""
    settings.STORAGES = {
        **settings.STORAGES,
        "elsewhere": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    a, empty, c = files
    call_command("files_move", "--to", "elsewhere", stdout=io.StringIO(), stderr=io.StringIO())
    for stored in files:
        stored.refresh_from_db()
    (tmp_path / a.storage_name).unlink()
    with connection.cursor() as cursor:  # a storage the settings no longer have
        cursor.execute(
            "UPDATE files_app_storedfile SET storage = 'gone' WHERE id = %s", [empty.pk]
        )
    err = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("files_verify", stdout=io.StringIO(), stderr=err)
    assert str(excinfo.value) == (
        "2 stored file(s) failed verification: 0 with a missing large object, 1 missing from "
        "storage 'elsewhere', 1 in a storage that cannot be read, 0 whose content does not "
        "match; 1 intact."
    )
    assert err.getvalue().splitlines() == [
        f"{a.uuid} 'a.txt': missing from storage 'elsewhere' as {a.storage_name!r}.",
        f"{empty.uuid} 'empty': the storage 'gone' that holds it as {empty.storage_name!r} is "
        "not in STORAGES.",
    ]
    StoredFile.objects.filter(pk=empty.pk).delete()
    PendingRemoval.objects.filter(storage="gone").delete()  # nothing can remove it
