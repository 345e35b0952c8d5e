"""files_export: stored files to a directory, checked by SHA-256, never a partial file."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from files_app import largeobjects
from files_app.management import options
from files_app.management.commands.files_export import safe_name
from files_app.models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)


def _store(name: str, data: bytes, created: str | None = None) -> StoredFile:
    stored = StoredFile(file=ContentFile(data, name="x"))
    stored.save()
    if name != stored.name or created:
        moment = datetime.fromisoformat(created).replace(tzinfo=UTC) if created else None
        StoredFile.objects.filter(pk=stored.pk).update(
            name=name, **({"created": moment} if moment else {})
        )
        stored.refresh_from_db()
    return stored


@pytest.fixture(autouse=True)
def _clean_up() -> Iterator[None]:
    yield
    StoredFile.objects.all().delete()


def _export(*args: str, stderr: io.StringIO | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), stderr or io.StringIO()
    call_command("files_export", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_exports_every_file_with_safe_unique_names(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    files = [
        _store("a.txt", b"first a"),
        _store("a.txt", b"second a"),
        _store("empty", b""),
        _store("../../etc/passwd", b"not really"),
        _store("..", b"dots"),
        _store("big.bin", big),
    ]
    target = tmp_path / "out" / "new"  # created, parents too

    out, err = _export(str(target))

    assert _listing(target) == {
        "a.txt": b"first a",
        "a (2).txt": b"second a",
        "empty": b"",
        ".._.._etc_passwd": b"not really",
        str(files[4].uuid): b"dots",
        "big.bin": big,
    }
    assert [line.split("  ")[0] for line in out.splitlines()] == [str(s.uuid) for s in files]
    assert out.splitlines()[1] == f"{files[1].uuid}  {target / 'a (2).txt'}"
    assert f"Exported 6 file(s), 293.0 KiB, to {str(target)!r}." in err
    mode = os.stat(target / "a.txt").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not the 0600 of the temporary file


def test_exporting_again_never_overwrites_in_the_flat_layout(tmp_path: Path) -> None:
    _store("a.txt", b"a")
    _export(str(tmp_path))
    _export(str(tmp_path))
    assert _listing(tmp_path) == {"a.txt": b"a", "a (2).txt": b"a"}


def test_uuid_layout_replaces_an_earlier_export(tmp_path: Path) -> None:
    a, b = _store("same.txt", b"one"), _store("same.txt", b"two")
    _export(str(tmp_path), "--layout", "uuid")
    out, _ = _export(str(tmp_path), "--layout", "uuid")
    assert _listing(tmp_path) == {f"{a.uuid}/same.txt": b"one", f"{b.uuid}/same.txt": b"two"}
    assert out.splitlines()[0] == f"{a.uuid}  {tmp_path / str(a.uuid) / 'same.txt'}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--uuid", "{b}"], {"b.pdf"}),
        (["--uuid", "{a}", "--uuid", "{c}"], {"a.txt", "c.txt"}),
        (["--name", "*.txt"], {"a.txt", "c.txt"}),
        (["--name", "*.TXT"], set()),
        (["--since", "2026-02-01"], {"b.pdf", "c.txt"}),
        (["--until", "2026-02-01"], {"a.txt", "b.pdf"}),
        (["--until", "2026-02-01T11:00:00"], {"a.txt"}),
        (["--since", "2026-02-01T12:00:00+00:00", "--name", "c*"], {"c.txt"}),
    ],
)
def test_selection(tmp_path: Path, args: list[str], expected: set[str]) -> None:
    stored = {
        "a": _store("a.txt", b"a", "2026-01-15T00:00:00"),
        "b": _store("b.pdf", b"b", "2026-02-01T12:00:00"),
        "c": _store("c.txt", b"c", "2026-03-01T00:00:00"),
    }
    args = [a.format(**{k: v.uuid for k, v in stored.items()}) for a in args]
    _export(str(tmp_path), *args)
    assert set(_listing(tmp_path)) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uuid", "3f1e7c54-0000-4000-8000-000000000000"], "No stored file has the UUID "),
        (["--uuid", "zzz"], "--uuid must be a UUID, not 'zzz'."),
        (["--since", "yesterday"], r"--since must be a date \(YYYY-MM-DD\) or an ISO 8601"),
        (["--until", "2026-02-30"], "--until must be a date .* not '2026-02-30'."),
        (["--database", "nope"], "Unknown database 'nope': it is not in DATABASES."),
    ],
)
def test_bad_options_are_command_errors(tmp_path: Path, args: list[str], message: str) -> None:
    _store("a.txt", b"a")
    with pytest.raises(CommandError, match=message):
        _export(str(tmp_path / "out"), *args)
    assert not (tmp_path / "out").exists()


def test_target_that_is_a_file_is_a_command_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    target = str(tmp_path / "file" / "sub")
    with pytest.raises(CommandError, match=f"^Cannot create the directory {target!r}: Not a"):
        _export(target)
    with pytest.raises(CommandError, match="'/.*/file' exists and is not a directory."):
        _export(str(tmp_path / "file"))


def test_damaged_and_missing_objects_are_reported_and_leave_no_file(tmp_path: Path) -> None:
    good = _store("good.txt", b"good")
    damaged = _store("damaged.bin", b"x" * 100_000)
    missing = _store("missing.txt", b"gone")
    assert damaged.file.oid is not None and missing.file.oid is not None
    largeobjects.write(damaged.file.oid, 50_000, b"!!", "default")
    largeobjects.unlink(missing.file.oid, "default")
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        _export(str(tmp_path), stderr=err)

    assert str(excinfo.value) == (
        f"Could not export 2 of 3 file(s): '{damaged.uuid}', '{missing.uuid}'."
    )
    assert _listing(tmp_path) == {"good.txt": b"good"}  # no partial or temporary file
    bad_hash = hashlib.sha256(b"x" * 50_000 + b"!!" + b"x" * 49_998).hexdigest()
    assert err.getvalue().splitlines() == [
        f"Could not export 'damaged.bin' ({damaged.uuid}): its content does not match what "
        f"was stored: 100000 bytes with SHA-256 {bad_hash}, expected 100000 bytes with "
        f"SHA-256 {damaged.sha256}.",
        f"Could not export 'missing.txt' ({missing.uuid}): its large object "
        f"{missing.file.oid} does not exist.",
    ]
    assert good.uuid


def test_interrupted_export_removes_the_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store("first.txt", b"first")
    _store("big.bin", b"y" * 1_000_000)
    real_read = largeobjects.read
    calls = {"big": 0}

    def read(oid: int, offset: int, length: int, using: str) -> Any:
        if offset > 0:  # only the big file needs more than one read
            calls["big"] += 1
            if calls["big"] == 3:
                raise KeyboardInterrupt
        return real_read(oid, offset, length, using)

    monkeypatch.setattr(largeobjects, "read", read)

    with pytest.raises(CommandError) as excinfo:
        _export(str(tmp_path))

    assert excinfo.value.returncode == 130
    assert str(excinfo.value) == (
        "Interrupted while exporting 'big.bin': its partial copy was removed; the 1 file(s) "
        "exported before it are complete."
    )
    assert os.listdir(tmp_path) == ["first.txt"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("a/b\\c", "a_b_c"),
        ("..", "fallback"),
        (".", "fallback"),
        ("  ", "fallback"),
        ("line\nbreak\x00", "line_break_"),
        (".hidden", ".hidden"),
        ("é" * 200 + ".txt", "é" * 117 + ".txt"),
        ("x" * 300, "x" * 239),
        ("x" * 250 + "." + "y" * 40, "x" * 239),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name, "fallback") == expected


def test_many_files_are_read_page_by_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options, "PAGE_SIZE", 2)
    for i in range(5):
        _store(f"{i}.txt", b"%d" % i)
    out, _ = _export(str(tmp_path), "--name", "[0-3].txt")
    assert len(out.splitlines()) == 4
    assert _listing(tmp_path) == {f"{i}.txt": b"%d" % i for i in range(4)}


def test_write_errors_are_reported_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked, full = _store("blocked.txt", b"b"), _store("full.txt", b"f")
    (tmp_path / str(blocked.uuid)).write_bytes(b"")  # where --layout uuid needs a folder
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if dst.endswith("full.txt"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    err = io.StringIO()
    with pytest.raises(CommandError, match="Could not export 2 of 2 file"):
        _export(str(tmp_path), "--layout", "uuid", stderr=err)
    target = tmp_path / str(full.uuid) / "full.txt"
    assert err.getvalue().splitlines() == [
        f"Could not export 'blocked.txt' ({blocked.uuid}): cannot write into "
        f"{str(tmp_path)!r}: File exists.",
        f"Could not export 'full.txt' ({full.uuid}): cannot write {str(target)!r}: "
        "No space left on device.",
    ]
    assert os.listdir(tmp_path / str(full.uuid)) == []  # no temporary file left


def test_database_errors_stop_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store("a.txt", b"a")

    def read(oid: int, offset: int, length: int, using: str) -> bytes:
        raise DatabaseError("terminating connection due to administrator command")

    monkeypatch.setattr(largeobjects, "read", read)
    with pytest.raises(CommandError) as excinfo:
        _export(str(tmp_path))
    assert str(excinfo.value) == (
        "A database error stopped the export at 'a.txt': terminating connection due to "
        "administrator command."
    )
    assert os.listdir(tmp_path) == []
